package agent

import (
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/shipdeploy/ship/pkg/event"
)

// The state file is checked on reading as strictly as an API request: shipd acts on
// what it says (binds its listen addresses, writes under its paths, removes containers
// by their IDs), and a file edited by hand, damaged, or written by another program must
// not make it crash or write elsewhere. A file that is not JSON, or not of this format
// version, is unreadable: it is moved aside and shipd starts without it. Inside a
// readable file, an app whose entry has any invalid value is dropped whole (its reasons
// logged, the file as found kept aside): the rest of the state stands, and the dropped
// app's routes are rebuilt from the host like those of an unreadable file (see
// rebuild.go).

var (
	// serviceName is a compose service name; networkName an engine network's.
	serviceName = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`)
	networkName = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`)
	// containerID is the engine's full container ID; containerName a container's name.
	containerID   = regexp.MustCompile(`^[0-9a-f]{64}$`)
	containerName = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`)
)

// dropped is an app entry of the state file left out, and why.
type dropped struct {
	app    string
	reason string
}

// decodeState reads a state file's content: an error when it is unreadable, else the
// state of its valid apps and the apps dropped.
func decodeState(data []byte) (*State, []dropped, error) {
	var s State
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, nil, err
	}
	if s.Version != stateVersion {
		return nil, nil, fmt.Errorf("format version %d, want %d", s.Version, stateVersion)
	}
	var out []dropped
	apps := map[string]*AppState{}
	for key, app := range s.Apps {
		if problems := checkApp(key, app); len(problems) > 0 {
			out = append(out, dropped{app: key, reason: strings.Join(problems, "; ")})
			continue
		}
		if app.Routes == nil {
			app.Routes = map[string]*RouteState{}
		}
		apps[key] = app
	}
	sort.Slice(out, func(i, j int) bool { return out[i].app < out[j].app })
	s.Apps = apps
	return &s, out, nil
}

// checkApp lists what is wrong with an app's entry, filed under key.
func checkApp(key string, a *AppState) []string {
	if a == nil {
		return []string{"no entry (null)"}
	}
	var problems []string
	add := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	if a.App != key {
		add("app %q is filed under %q", a.App, key)
	}
	if err := checkRequest(key, a.Path, "", false); err != nil {
		problems = append(problems, err.Error())
	}
	for what, name := range map[string]string{"release": a.Release, "previous": a.Previous} {
		if name != "" && !shaName.MatchString(name) {
			add("%s %q is not a release name", what, name)
		}
	}
	switch a.LastResult {
	case "", event.ResultDeployed, event.ResultFailed, event.ResultRestoreFailed:
	default:
		add("last result %q is not a deploy's result", a.LastResult)
	}
	if d := a.Deploying; d != nil {
		problems = append(problems, checkDeploying(d)...)
	}
	for service, r := range a.Routes {
		for _, p := range checkRoute(service, r) {
			add("route %q: %s", service, p)
		}
		if r == nil {
			continue
		}
		for i, m := range r.More {
			for _, p := range checkRoute(service, m) {
				add("route %q (more[%d]): %s", service, i, p)
			}
			if m != nil && len(m.More) > 0 {
				add("route %q (more[%d]): more inside more", service, i)
			}
		}
	}
	sort.Strings(problems)
	return problems
}

// checkDeploying lists what is wrong with the mark of a deploy under way.
func checkDeploying(d *Deploying) []string {
	var problems []string
	add := func(format string, args ...any) {
		problems = append(problems, "deploying: "+fmt.Sprintf(format, args...))
	}
	switch d.Kind {
	case kindDeploy, kindRollback, kindRestore:
	default:
		add("kind %q is not deploy, rollback or restore", d.Kind)
	}
	if !shaName.MatchString(d.Release) {
		add("release %q is not a release name", d.Release)
	}
	if d.From != "" && !shaName.MatchString(d.From) {
		add("from %q is not a release name", d.From)
	}
	if d.Service != "" && !serviceName.MatchString(d.Service) {
		add("service %q is not a service name", d.Service)
	}
	for _, id := range d.Created {
		if !containerID.MatchString(id) {
			add("created %q is not a container ID", id)
		}
	}
	return problems
}

// checkRoute lists what is wrong with a route's entry, filed under service.
func checkRoute(service string, r *RouteState) []string {
	if r == nil {
		return []string{"no entry (null)"}
	}
	var problems []string
	add := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	if !serviceName.MatchString(service) {
		add("%q is not a service name", service)
	}
	if r.Service != service {
		add("service %q is filed under %q", r.Service, service)
	}
	if r.Listen != "" || r.ListenTLS == "" {
		if err := checkListen(r.Listen); err != nil {
			add("listen %q: %v", r.Listen, err)
		}
	}
	problems = append(problems, checkFront(r)...)
	if r.Port < 1 || r.Port > 65535 {
		add("port %d is not a number from 1 to 65535", r.Port)
	}
	if !networkName.MatchString(r.Network) {
		add("network %q is not a network name", r.Network)
	}
	if r.Health != "" && (!strings.HasPrefix(r.Health, "/") || strings.ContainsFunc(r.Health, func(c rune) bool { return c <= ' ' || c == 0x7f })) {
		add("health %q is not an HTTP path", r.Health)
	}
	if r.Drain < 0 {
		add("drain %s is negative", r.Drain.Std())
	}
	if r.Container != "" && !containerID.MatchString(r.Container) {
		add("container %q is not a container ID", r.Container)
	}
	if r.Name != "" && !containerName.MatchString(r.Name) {
		add("name %q is not a container name", r.Name)
	}
	if r.Target != "" {
		if ap, err := netip.ParseAddrPort(r.Target); err != nil || ap.Port() == 0 || ap.Addr().Zone() != "" {
			add("target %q is not an IP address and port", r.Target)
		}
	}
	if r.Release != "" && !shaName.MatchString(r.Release) {
		add("release %q is not a release name", r.Release)
	}
	return problems
}

// checkListen refuses an address shipd cannot serve a route on: host (empty, an IP
// address or a host name) and a port from 1 to 65535, as x-ship.listen.
func checkListen(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("not a host and port: %w", err)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 || strconv.Itoa(n) != port {
		return fmt.Errorf("port %q is not a number from 1 to 65535", port)
	}
	if host == "" {
		return nil
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		if ip.Zone() != "" {
			return fmt.Errorf("host %q has a zone", host)
		}
		return nil
	}
	if !hostName.MatchString(host) {
		return fmt.Errorf("host %q is not an IP address or a host name", host)
	}
	return nil
}

var hostName = regexp.MustCompile(`^[a-zA-Z0-9]([a-zA-Z0-9-]{0,62})(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,62}))*$`)

// isCleanPath reports whether path is absolute and clean (as checkRequest wants it).
func isCleanPath(path string) bool {
	return filepath.IsAbs(path) && filepath.Clean(path) == path && path != "/"
}
