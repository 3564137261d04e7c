package proxy

import (
	"fmt"
	"slices"
	"sort"
	"strings"
)

// buildTable makes the routing table of owners, or says which two owners claim the same
// host and path.
func buildTable(owners map[string]owned) (*table, error) {
	t := &table{exact: map[string]*hostRoutes{}, wild: map[string]*hostRoutes{}, owners: owners}
	names := make([]string, 0, len(owners))
	for name := range owners {
		names = append(names, name)
	}
	sort.Strings(names) // a conflict names the same pair whatever the map order
	for _, name := range names {
		o := owners[name]
		hosts, paths, err := normalBinding(o.b)
		if err != nil {
			return nil, err
		}
		for _, host := range hosts {
			hr := t.routesFor(host)
			for _, path := range paths {
				if i := slices.IndexFunc(hr.paths, func(p pathRoute) bool { return p.prefix == path }); i >= 0 {
					return nil, fmt.Errorf("route %s: host %s path %s: %w by %s", o.b.Owner, hostName(host), path, ErrConflict, hr.paths[i].owner)
				}
				hr.paths = append(hr.paths, pathRoute{prefix: path, owner: o.b.Owner, tls: o.b.TLS, httpsPort: o.b.HTTPSPort, h: o.h})
			}
		}
	}
	for _, hr := range t.all() {
		slices.SortFunc(hr.paths, func(a, b pathRoute) int { return len(b.prefix) - len(a.prefix) })
	}
	return t, nil
}

// routesFor returns the bindings of a normalized host pattern ("" for any host).
func (t *table) routesFor(host string) *hostRoutes {
	var m map[string]*hostRoutes
	key := host
	switch {
	case host == "":
		if t.any == nil {
			t.any = &hostRoutes{}
		}
		return t.any
	case strings.HasPrefix(host, "*."):
		m, key = t.wild, host[2:]
	default:
		m = t.exact
	}
	hr := m[key]
	if hr == nil {
		hr = &hostRoutes{}
		m[key] = hr
	}
	return hr
}

func (t *table) all() []*hostRoutes {
	out := make([]*hostRoutes, 0, len(t.exact)+len(t.wild)+1)
	for _, hr := range t.exact {
		out = append(out, hr)
	}
	for _, hr := range t.wild {
		out = append(out, hr)
	}
	if t.any != nil {
		out = append(out, t.any)
	}
	return out
}

func hostName(host string) string {
	if host == "" {
		return "(any)"
	}
	return host
}

// normalBinding checks b and returns its hosts (lower case; "" for any host) and path
// prefixes (without a trailing slash but for "/").
func normalBinding(b Binding) (hosts, paths []string, err error) {
	if b.Owner == "" {
		return nil, nil, fmt.Errorf("route binding without an owner")
	}
	for _, h := range b.Hosts {
		n, err := NormalizeHost(h)
		if err != nil {
			return nil, nil, fmt.Errorf("route %s: %w", b.Owner, err)
		}
		if !slices.Contains(hosts, n) {
			hosts = append(hosts, n)
		}
	}
	if len(hosts) == 0 {
		hosts = []string{""}
	}
	for _, p := range b.Paths {
		n, err := NormalizePath(p)
		if err != nil {
			return nil, nil, fmt.Errorf("route %s: %w", b.Owner, err)
		}
		if !slices.Contains(paths, n) {
			paths = append(paths, n)
		}
	}
	if len(paths) == 0 {
		paths = []string{"/"}
	}
	return hosts, paths, nil
}

// NormalizeHost checks a host pattern of a Binding (a name, or "*." and a name) and
// returns it in lower case without a trailing dot.
func NormalizeHost(h string) (string, error) {
	n := strings.TrimSuffix(strings.ToLower(strings.TrimSpace(h)), ".")
	name := strings.TrimPrefix(n, "*.")
	if name == "" || len(n) > 253 {
		return "", fmt.Errorf("host %q is not a host name", h)
	}
	for _, label := range strings.Split(name, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return "", fmt.Errorf("host %q is not a host name (write e.g. example.com or *.example.com)", h)
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return "", fmt.Errorf("host %q is not a host name (write e.g. example.com or *.example.com, without a port or scheme)", h)
			}
		}
	}
	return n, nil
}

// NormalizePath checks a path prefix of a Binding and returns it without a trailing slash
// (but for "/").
func NormalizePath(p string) (string, error) {
	if !strings.HasPrefix(p, "/") || strings.ContainsAny(p, "?#* \t\r\n") {
		return "", fmt.Errorf("path %q is not a path prefix (write e.g. / or /api)", p)
	}
	for _, seg := range strings.Split(p, "/") {
		if seg == "." || seg == ".." {
			return "", fmt.Errorf("path %q has a %q segment", p, seg)
		}
	}
	if n := strings.TrimRight(p, "/"); n != "" {
		return n, nil
	}
	return "/", nil
}

// requestHost returns a request's Host without its port and trailing dot, in lower case,
// allocating only when it has to.
func requestHost(h string) string {
	h, _ = splitPort(h)
	h = strings.TrimSuffix(h, ".")
	for i := 0; i < len(h); i++ {
		if c := h[i]; c >= 'A' && c <= 'Z' {
			return strings.ToLower(h)
		}
	}
	return h
}

// normalHost is requestHost for a name handed to TLSHost: false when it is empty.
func normalHost(h string) (string, bool) {
	h = requestHost(h)
	return h, h != ""
}

// splitPort cuts a ":port" off a Host header ("[::1]:80" gives "[::1]").
func splitPort(h string) (string, string) {
	i := strings.LastIndexByte(h, ':')
	if i < 0 || strings.IndexByte(h[i:], ']') >= 0 {
		return h, ""
	}
	if strings.Count(h, ":") > 1 && !strings.HasPrefix(h, "[") {
		return h, "" // a bare IPv6 address
	}
	return h[:i], h[i+1:]
}
