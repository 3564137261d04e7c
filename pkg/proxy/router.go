package proxy

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// ErrConflict is returned (wrapped) by Router.Set and Router.Check when another owner
// already routes one of the host and path pairs.
var ErrConflict = errors.New("already routed")

// ChallengePrefix is the path of ACME HTTP-01 challenges, which plain HTTP serves even for
// a host whose other requests redirect to HTTPS.
const ChallengePrefix = "/.well-known/acme-challenge/"

// Binding says which requests a Router sends to one handler (a Route).
type Binding struct {
	// Owner names what the binding belongs to ("app/service"); a conflict names it.
	Owner string
	// Hosts are the names served: exact ("example.com") or one-label wildcards
	// ("*.example.com" serves a.example.com, not example.com nor a.b.example.com).
	// Matching is case-insensitive and ignores the port. None: every host that no
	// other binding serves (a default route).
	Hosts []string
	// Paths are prefixes, matched by whole segments ("/api" serves /api and /api/x,
	// not /apix); none means "/". The longest match wins.
	Paths []string
	// TLS marks the hosts as served over HTTPS: a plain HTTP request for them is
	// redirected there, except ACME's challenge path.
	TLS bool
	// HTTPSPort is the port the redirect names; 0: RouterOptions.HTTPSPort.
	HTTPSPort int
}

// RouterOptions tune a Router; the zero value is usable.
type RouterOptions struct {
	// Challenge answers ACME HTTP-01 challenges (ChallengePrefix) on plain HTTP for the
	// hosts of TLS bindings (certs.Manager.HTTPHandler). Nil: they redirect as the rest.
	Challenge http.Handler
	// HTTPSPort is the port redirects to HTTPS name; 0 or 443 leaves it out of the URL.
	HTTPSPort int
	// NotFound answers requests that no binding serves; nil: a plain 404.
	NotFound http.Handler
	// Logger receives routing changes; nil discards them.
	Logger *slog.Logger
}

// Router sends each request to the handler of the binding that serves its Host and path:
// an exact host first, then a wildcard, then a binding without hosts; among the bindings
// of a host, the longest matching path prefix. The lookup is two map reads and a scan of
// one host's few prefixes, whatever the number of hosts. The table is copy-on-write:
// Set and Remove build a new one and swap it in one step, so a request sees either the
// old table or the new one, and adding or removing a route never holds up the others.
type Router struct {
	opts RouterOptions
	log  *slog.Logger

	mu    sync.Mutex // serializes writers
	table atomic.Pointer[table]
}

// NewRouter returns a Router that serves nothing yet.
func NewRouter(o RouterOptions) *Router {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	rt := &Router{opts: o, log: o.Logger}
	rt.table.Store(&table{owners: map[string]owned{}})
	return rt
}

type owned struct {
	b Binding
	h http.Handler
}

// table is one immutable routing table.
type table struct {
	exact  map[string]*hostRoutes // by lower-case name
	wild   map[string]*hostRoutes // "*.example.com" by "example.com"
	any    *hostRoutes            // bindings without hosts
	owners map[string]owned       // what the table was built from
}

// hostRoutes are the bindings of one host pattern, longest prefix first.
type hostRoutes struct{ paths []pathRoute }

type pathRoute struct {
	prefix    string
	owner     string
	tls       bool
	httpsPort int
	h         http.Handler
}

// Set makes h serve b, in place of whatever b.Owner was bound to before, in one atomic
// step. It fails, changing nothing, if b is malformed or another owner serves one of its
// host and path pairs (ErrConflict, naming the owner).
func (rt *Router) Set(b Binding, h http.Handler) error {
	if h == nil {
		return fmt.Errorf("route %s: no handler", b.Owner)
	}
	rt.mu.Lock()
	defer rt.mu.Unlock()
	old := rt.table.Load()
	owners := make(map[string]owned, len(old.owners)+1)
	for k, v := range old.owners {
		owners[k] = v
	}
	owners[b.Owner] = owned{b: b, h: h}
	t, err := buildTable(owners)
	if err != nil {
		return err
	}
	rt.table.Store(t)
	rt.log.Info("route set", "owner", b.Owner, "hosts", b.Hosts, "paths", b.Paths, "tls", b.TLS)
	return nil
}

// Check reports whether Set(b, ...) would succeed, changing nothing: shipd refuses a
// conflicting deploy before anything is uploaded or started.
func (rt *Router) Check(b Binding) error {
	old := rt.table.Load()
	owners := make(map[string]owned, len(old.owners)+1)
	for k, v := range old.owners {
		owners[k] = v
	}
	owners[b.Owner] = owned{b: b, h: http.NotFoundHandler()}
	_, err := buildTable(owners)
	return err
}

// Remove stops routing to owner's handler (requests already in it run on) and reports
// whether it was bound.
func (rt *Router) Remove(owner string) bool {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	old := rt.table.Load()
	if _, ok := old.owners[owner]; !ok {
		return false
	}
	owners := make(map[string]owned, len(old.owners))
	for k, v := range old.owners {
		if k != owner {
			owners[k] = v
		}
	}
	t, err := buildTable(owners)
	if err != nil {
		// A subset of a valid table cannot conflict.
		panic(fmt.Sprintf("proxy: router table without %s: %v", owner, err))
	}
	rt.table.Store(t)
	rt.log.Info("route removed", "owner", owner)
	return true
}

// Bindings returns what the router serves, sorted by owner.
func (rt *Router) Bindings() []Binding {
	t := rt.table.Load()
	out := make([]Binding, 0, len(t.owners))
	for _, o := range t.owners {
		out = append(out, o.b)
	}
	slices.SortFunc(out, func(a, b Binding) int { return strings.Compare(a.Owner, b.Owner) })
	return out
}

// TLSHost reports whether host is served by a TLS binding of an exact name or a wildcard
// (a default binding does not count): the hosts a certificate may be issued for.
func (rt *Router) TLSHost(host string) bool {
	host, ok := normalHost(host)
	if !ok {
		return false
	}
	t := rt.table.Load()
	for _, hr := range []*hostRoutes{t.exact[host], t.wildFor(host)} {
		if hr != nil && slices.ContainsFunc(hr.paths, func(p pathRoute) bool { return p.tls }) {
			return true
		}
	}
	return false
}

// ServeHTTP routes req (see Router).
func (rt *Router) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	t := rt.table.Load()
	p := t.lookup(requestHost(req.Host), req.URL.Path)
	if p == nil {
		if rt.opts.NotFound != nil {
			rt.opts.NotFound.ServeHTTP(w, req)
			return
		}
		writeError(w, http.StatusNotFound, "404 not found: nothing is served at this host name and path\n")
		return
	}
	if p.tls && req.TLS == nil {
		if rt.opts.Challenge != nil && strings.HasPrefix(req.URL.Path, ChallengePrefix) {
			rt.opts.Challenge.ServeHTTP(w, req)
			return
		}
		rt.redirect(w, req, p.httpsPort)
		return
	}
	p.h.ServeHTTP(w, req)
}

// redirect sends a plain HTTP request to the same URL over HTTPS: 301 for GET and HEAD,
// 308 (which keeps the method and body) for the others.
func (rt *Router) redirect(w http.ResponseWriter, req *http.Request, port int) {
	host, _ := splitPort(req.Host)
	if port == 0 {
		port = rt.opts.HTTPSPort
	}
	if port != 0 && port != 443 {
		host = net.JoinHostPort(strings.Trim(host, "[]"), strconv.Itoa(port))
	}
	code := http.StatusPermanentRedirect
	if req.Method == http.MethodGet || req.Method == http.MethodHead {
		code = http.StatusMovedPermanently
	}
	w.Header().Set("Location", "https://"+host+req.URL.RequestURI())
	w.WriteHeader(code)
}

func (t *table) wildFor(host string) *hostRoutes {
	if i := strings.IndexByte(host, '.'); i > 0 {
		return t.wild[host[i+1:]]
	}
	return nil
}

// lookup finds the binding of host (normalized) and path, or nil.
func (t *table) lookup(host, path string) *pathRoute {
	if hr := t.exact[host]; hr != nil {
		if p := hr.match(path); p != nil {
			return p
		}
	}
	if hr := t.wildFor(host); hr != nil {
		if p := hr.match(path); p != nil {
			return p
		}
	}
	if t.any != nil {
		return t.any.match(path)
	}
	return nil
}

func (hr *hostRoutes) match(path string) *pathRoute {
	for i := range hr.paths {
		p := &hr.paths[i]
		if p.prefix == "/" || path == p.prefix ||
			len(path) > len(p.prefix) && path[len(p.prefix)] == '/' && strings.HasPrefix(path, p.prefix) {
			return p
		}
	}
	return nil
}
