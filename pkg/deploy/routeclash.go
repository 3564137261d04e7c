package deploy

import (
	"fmt"
	"strings"

	"github.com/shipdeploy/ship/pkg/agentapi"
	"github.com/shipdeploy/ship/pkg/compose"
)

// routeClash refuses, before anything is uploaded, a host and path that another app
// serves on the same port through the host's shipd, naming that app; every route of a
// service is checked (shipd checks again when it deploys).
func routeClash(st *agentapi.Status, app string, p *compose.Project) error {
	if st == nil || p == nil {
		return nil
	}
	claims := map[string]string{} // "port host path" -> app/service
	for _, r := range st.Routes {
		if r.App == app || len(r.Hosts) == 0 {
			continue
		}
		for _, key := range routeKeys([]string{r.Listen, r.ListenTLS}, r.Hosts, r.Paths) {
			claims[key] = r.App + "/" + r.Service
		}
	}
	var problems []string
	for _, name := range p.ServicesInOrder() {
		ship := p.Ship[name]
		if !ship.Routed() || ship.Job != "" || len(ship.Routes) == 0 {
			continue
		}
		for _, r := range ship.Routes {
			for _, key := range routeKeys([]string{r.Listen, r.ListenTLS}, r.Host, r.Path) {
				if other, ok := claims[key]; ok {
					f := strings.SplitN(key, " ", 3)
					problems = append(problems, fmt.Sprintf("service %q: host %s path %s on port %s is already routed by %s on this host's shipd: pick another host name or path, or remove that app", name, f[1], f[2], f[0], other))
					break
				}
			}
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("shipd cannot serve these routes:\n  %s", strings.Join(problems, "\n  "))
	}
	return nil
}

// routeKeys are the "port host path" pairs a route serves on its addresses.
func routeKeys(addrs, hosts, paths []string) []string {
	if len(paths) == 0 {
		paths = []string{"/"}
	}
	var out []string
	for _, a := range addrs {
		i := strings.LastIndexByte(a, ':')
		if a == "" || i < 0 {
			continue
		}
		for _, h := range hosts {
			h = strings.TrimSuffix(strings.ToLower(h), ".")
			for _, p := range paths {
				if p = strings.TrimRight(p, "/"); p == "" {
					p = "/"
				}
				out = append(out, a[i+1:]+" "+h+" "+p)
			}
		}
	}
	return out
}
