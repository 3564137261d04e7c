package compose

import (
	"fmt"
	"strings"
)

// Default listen addresses of a route with host (":80") and with tls (":80", ":443").
const (
	DefaultListen    = ":80"
	DefaultListenTLS = ":443"
)

// parseRoutes parses x-ship.routes, a list of route mappings.
func parseRoutes(v any) ([]Route, []string) {
	list, ok := v.([]any)
	if !ok || len(list) == 0 {
		return nil, []string{fmt.Sprintf("routes must be a list of mappings of %s, e.g. routes: [{port: 9090, host: admin.example.com}]", strings.Join(routeKeys, ", "))}
	}
	var routes []Route
	var problems []string
	for i, item := range list {
		where := fmt.Sprintf("routes[%d].", i)
		m, ok := item.(map[string]any)
		if !ok {
			problems = append(problems, fmt.Sprintf("%s must be a mapping of %s, not %T", strings.TrimSuffix(where, "."), strings.Join(routeKeys, ", "), item))
			continue
		}
		r, errs := parseRoute(m, where)
		routes = append(routes, r)
		problems = append(problems, errs...)
	}
	return routes, problems
}

// parseRoute parses the route keys of m (the top level of x-ship, or an entry of routes,
// named by where in problems).
func parseRoute(m map[string]any, where string) (Route, []string) {
	var r Route
	var problems []string
	bad := func(format string, a ...any) { problems = append(problems, where+fmt.Sprintf(format, a...)) }
	var listen any
	for _, k := range sortedKeys(m) {
		v := m[k]
		switch k {
		case "port":
			n, err := toInt(v)
			if err != nil || n < 1 || n > 65535 {
				bad("port %v is not a port number; write the container port, e.g. port: 8080", v)
				continue
			}
			r.Port = n
		case "listen":
			listen = v
		case "host":
			hosts, err := stringList(v, "host", checkHost)
			if err != "" {
				bad("%s", err)
			}
			r.Host = hosts
		case "path":
			paths, err := stringList(v, "path", checkPath)
			if err != "" {
				bad("%s", err)
			}
			r.Path = paths
		case "tls":
			t, err := parseTLS(v)
			if err != "" {
				bad("%s", err)
			}
			r.TLS = t
		default:
			bad("unknown key %q; the keys of a route are %s", k, strings.Join(routeKeys, ", "))
		}
	}
	listenErr := r.setListen(listen)
	if listenErr != "" {
		bad("%s", listenErr)
	}
	switch {
	case r.Port == 0 && where == "" && listen != nil:
		bad("port and listen go together: port is the container's port, listen the address shipd serves")
	case r.Port == 0:
		bad("port is missing: write the container port shipd routes to, e.g. port: 8080")
	case r.Listen == "" && r.ListenTLS == "" && listenErr == "":
		bad("port and listen go together: port is the container's port, listen the address shipd serves (or give host, and listen defaults to %q)", DefaultListen)
	}
	return r, problems
}

// setListen fills in the route's addresses from listen (nil when absent): one address,
// or with tls the HTTPS address alone or [plain, HTTPS]; by default with host or tls,
// DefaultListen and DefaultListenTLS.
func (r *Route) setListen(listen any) string {
	var addrs []string
	switch v := listen.(type) {
	case nil:
		if len(r.Host) > 0 || r.TLS.On() {
			r.Listen = DefaultListen
		}
		if r.TLS.On() {
			r.ListenTLS = DefaultListenTLS
		}
		return ""
	case string:
		addrs = []string{v}
	case []any:
		for _, a := range v {
			str, _ := a.(string)
			addrs = append(addrs, str)
		}
	default:
		addrs = []string{fmt.Sprint(v)}
	}
	for _, a := range addrs {
		if _, err := listenPort(a); err != nil {
			return fmt.Sprintf("listen %q: %v; write an address like \":80\" or \"127.0.0.1:8080\"", a, err)
		}
	}
	switch {
	case len(addrs) == 1 && r.TLS.On():
		r.ListenTLS = addrs[0] // HTTPS only: no redirect, no HTTP-01
	case len(addrs) == 1:
		r.Listen = addrs[0]
	case len(addrs) == 2 && r.TLS.On():
		r.Listen, r.ListenTLS = addrs[0], addrs[1]
	default:
		return fmt.Sprintf("listen %v: write one address, or with tls two: [plain HTTP, HTTPS], e.g. [\":80\", \":443\"]", listen)
	}
	return ""
}

// stringList reads a string or a list of strings, each checked by check.
func stringList(v any, key string, check func(string) string) ([]string, string) {
	var items []any
	switch v := v.(type) {
	case string:
		items = []any{v}
	case []any:
		items = v
	}
	if len(items) == 0 {
		return nil, fmt.Sprintf("%s must be a string or a list of strings", key)
	}
	var out []string
	for _, it := range items {
		str, ok := it.(string)
		if !ok {
			return nil, fmt.Sprintf("%s %v is not a string", key, it)
		}
		if err := check(str); err != "" {
			return nil, fmt.Sprintf("%s %q %s", key, str, err)
		}
		out = append(out, str)
	}
	return out, ""
}

// checkHost accepts a host name or a one-label wildcard ("*.example.com"), without a port.
func checkHost(h string) string {
	name := strings.TrimSuffix(strings.TrimPrefix(strings.ToLower(h), "*."), ".")
	if name == "" || len(name) > 253 || strings.Contains(name, "*") {
		return "is not a host name; write e.g. example.com or *.example.com"
	}
	for _, label := range strings.Split(name, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return "is not a host name; write e.g. example.com or *.example.com"
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return "is not a host name; write e.g. example.com or *.example.com, without a scheme or port"
			}
		}
	}
	return ""
}

// checkPath accepts a path prefix: "/", "/api", "/api/".
func checkPath(p string) string {
	if !strings.HasPrefix(p, "/") || strings.ContainsAny(p, "?#* \t\r\n") {
		return "is not a path prefix; write e.g. / or /api"
	}
	for _, seg := range strings.Split(p, "/") {
		if seg == "." || seg == ".." {
			return "has a . or .. segment"
		}
	}
	return ""
}

// parseTLS reads tls: true (ACME) or tls: {cert: FILE, key: FILE}.
func parseTLS(v any) (TLS, string) {
	switch v := v.(type) {
	case bool:
		return TLS{Auto: v}, ""
	case map[string]any:
		var t TLS
		for _, k := range sortedKeys(v) {
			str, _ := v[k].(string)
			switch {
			case k == "cert" && str != "":
				t.Cert = str
			case k == "key" && str != "":
				t.Key = str
			default:
				return TLS{}, fmt.Sprintf("tls.%s: the keys of tls are cert and key, each a file name", k)
			}
		}
		if t.Cert == "" || t.Key == "" {
			return TLS{}, "tls needs both cert and key (files), or write tls: true for certificates from ACME"
		}
		return t, ""
	}
	return TLS{}, fmt.Sprintf("tls %v: write tls: true, or tls: {cert: FILE, key: FILE}", v)
}

// checkShip finds problems between routes: two of them claiming one host and path on a
// port, or one port served both over plain HTTP and over HTTPS.
func checkShip(p *Project) []shipConflict {
	var problems []shipConflict
	type claim struct{ service, listen string }
	claims := map[string]claim{}
	mode := map[int]claim{} // port -> the first route serving it, and how
	https := map[int]bool{}
	for _, name := range p.ServicesInOrder() {
	routes:
		for _, r := range p.Ship[name].Routes {
			for _, a := range [][2]string{{r.Listen, "http"}, {r.ListenTLS, "https"}} {
				if a[0] == "" {
					continue
				}
				port, _ := listenPort(a[0])
				if first, ok := mode[port]; ok && https[port] != (a[1] == "https") {
					problems = append(problems, shipConflict{name, fmt.Sprintf("service %q: %s.listen %q: port %d is served over %s for service %q", name, ShipKey, a[0], port, scheme(https[port]), first.service)})
					continue routes
				}
				mode[port], https[port] = claim{name, a[0]}, a[1] == "https"
				for _, key := range routeClaims(port, r) {
					if other, ok := claims[key]; ok {
						problems = append(problems, shipConflict{name, conflict(name, a[0], port, key, other.service)})
						continue routes
					}
					claims[key] = claim{name, a[0]}
				}
			}
		}
	}
	return problems
}

// shipConflict is a problem of checkShip, by the service it is reported at.
type shipConflict struct{ service, msg string }

func scheme(https bool) string {
	if https {
		return "HTTPS"
	}
	return "plain HTTP"
}

// routeClaims returns the "port host path" keys a route serves on port.
func routeClaims(port int, r Route) []string {
	hosts, paths := r.Host, r.Path
	if len(hosts) == 0 {
		hosts = []string{""}
	}
	if len(paths) == 0 {
		paths = []string{"/"}
	}
	var keys []string
	for _, h := range hosts {
		h = strings.TrimSuffix(strings.ToLower(h), ".")
		for _, p := range paths {
			if p = strings.TrimRight(p, "/"); p == "" {
				p = "/"
			}
			keys = append(keys, fmt.Sprintf("%d %s %s", port, h, p))
		}
	}
	return keys
}

func conflict(service, listen string, port int, key, other string) string {
	f := strings.SplitN(key, " ", 3)
	if f[1] == "" && f[2] == "/" {
		return fmt.Sprintf("service %q: %s.listen %q: port %d is already served for service %q", service, ShipKey, listen, port, other)
	}
	host := f[1]
	if host == "" {
		host = "(any host)"
	}
	return fmt.Sprintf("service %q: %s: host %s path %s on port %d is already routed for service %q", service, ShipKey, host, f[2], port, other)
}
