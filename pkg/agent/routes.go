package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/shipdeploy/ship/pkg/compose"
	"github.com/shipdeploy/ship/pkg/proxy"
)

// Routes: each routed service of each app has one, a proxy.Route on its listen address
// that sends every request to the service's live container. The listeners are bound
// first (at start, from the state) so that connections wait in the backlog; a route
// serves once it has its target.

// liveRoute is one route of a service, by key: "app/service" for its first route,
// "app/service#2" for the second (x-ship.routes), and so on.
type liveRoute struct {
	app, service string
	idx          int // the route's place among the service's routes, from 0
	// listen names the addresses served, for messages; spec is the route.
	listen string
	spec   routeSpec
	route  *proxy.Route
	served bool // added to the Server or bound on the front door (guarded by agent.mu)
}

func routeKey(app, service string) string { return app + "/" + service }

// routeKeyAt is the key of the service's route at idx.
func routeKeyAt(app, service string, idx int) string {
	if idx == 0 {
		return routeKey(app, service)
	}
	return fmt.Sprintf("%s#%d", routeKey(app, service), idx+1)
}

func (lr *liveRoute) key() string { return routeKeyAt(lr.app, lr.service, lr.idx) }

// bindListeners opens, before anything else, the listener of every route in the state.
func (a *agent) bindListeners() {
	snap := a.store.snapshot()
	for _, app := range snap.Apps {
		for _, rs := range allRoutes(app) {
			for _, addr := range []string{rs.Listen, rs.ListenTLS} {
				if _, ok := a.early[addr]; ok || addr == "" {
					continue
				}
				ln, inherited, err := a.inh.Listen(addr)
				if err != nil {
					a.log.Error("listen", "app", app.App, "service", rs.Service, "listen", addr, "err", err)
					continue
				}
				a.log.Info("listening", "app", app.App, "service", rs.Service, "listen", addr, "inherited", inherited)
				a.early[addr] = ln
			}
		}
	}
}

// listen returns the listener for addr: one bound at start, an inherited one, or new.
func (a *agent) listen(addr string) (net.Listener, error) {
	a.mu.Lock()
	ln, ok := a.early[addr]
	delete(a.early, addr)
	a.mu.Unlock()
	if ok {
		return ln, nil
	}
	ln, _, err := a.inh.Listen(addr)
	return ln, err
}

// openRoutes serves the route of every routed service in the state, with the target
// reconcile chose.
func (a *agent) openRoutes(ctx context.Context) {
	a.holdFront()
	defer a.releaseFront()
	snap := a.store.snapshot()
	var wg sync.WaitGroup
	for _, app := range snap.Apps {
		for _, sr := range app.Routes {
			for idx, rs := range sr.all() {
				a.openRoute(ctx, &wg, app.App, idx, rs)
			}
		}
	}
	wg.Wait()
	for _, app := range snap.Apps {
		// Stored certificates are served as they are; a missing one is ordered.
		go a.syncCerts(a.deployCtx, app.App, nil)
	}
	a.mu.Lock()
	for addr, ln := range a.early {
		a.log.Warn("closing a listener no route uses", "listen", addr)
		ln.Close()
		delete(a.early, addr)
	}
	a.mu.Unlock()
}

// openRoute serves one route of the state, at idx among its service's routes.
func (a *agent) openRoute(ctx context.Context, wg *sync.WaitGroup, app string, idx int, rs *RouteState) {
	lr, err := a.newRoute(app, rs.Service, idx, stateSpec(rs))
	if err != nil {
		a.log.Error("route", "app", app, "service", rs.Service, "err", err)
		return
	}
	a.setRoute(lr)
	wg.Go(func() {
		// The target first, then serving: the connections waiting in the backlog
		// never see a route without one.
		if rs.Target == "" {
			a.log.Error("route has no container to serve: it answers 503 until the next deploy", "app", app, "service", rs.Service, "listen", rs.Listen)
		} else {
			// Reconcile has just checked the target: one attempt is enough.
			hc := proxy.HealthCheck{Path: rs.Health, Interval: 100 * time.Millisecond, Timeout: 2 * time.Second, Deadline: 2 * time.Second}
			if err := lr.route.Deploy(ctx, rs.Target, hc, time.Second); err != nil {
				a.log.Error("route: the container does not answer: 503 until the next deploy", "app", app, "service", rs.Service, "target", rs.Target, "err", err)
			}
		}
		if err := a.serveRoute(lr); err != nil {
			a.log.Error("route", "app", app, "service", rs.Service, "err", err)
		}
	})
}

// newRoute makes a route of a service. A route of its own has its listener bound
// (connections wait in the backlog) but accepts nothing until serveRoute; a route on
// the front door is bound there by serveRoute. It is not the service's route until
// setRoute.
func (a *agent) newRoute(app, service string, idx int, spec routeSpec) (*liveRoute, error) {
	key := routeKeyAt(app, service, idx)
	opts := proxy.RouteOptions{Logger: a.log.With("app", app, "service", service), TrustForwarded: a.cfg.TrustForwarded}
	if spec.front() {
		// The doors now, so that an address that cannot be served fails the deploy
		// before anything changes; the route is bound on them at its switch.
		for _, d := range spec.doors() {
			if _, err := a.openDoor(d); err != nil {
				a.closeIdleDoors(context.Background(), spec)
				return nil, fmt.Errorf("route %s: %w", key, err)
			}
		}
		r := proxy.NewRoute(key+"@front", nil, opts)
		return &liveRoute{app: app, service: service, idx: idx, listen: spec.String(), spec: spec, route: r}, nil
	}
	listen := spec.Listen
	ln, err := a.listen(listen)
	if err != nil {
		return nil, fmt.Errorf("listen on %s for %s: %w", listen, key, err)
	}
	if err := a.notify.storeListener(ln); err != nil {
		a.log.Warn("keep the listening socket in systemd's store (a restart may refuse connections)", "listen", listen, "err", err)
	}
	r := proxy.NewRoute(key+"@"+listen, ln, opts)
	return &liveRoute{app: app, service: service, idx: idx, listen: listen, spec: spec, route: r}, nil
}

// forgetStored removes from systemd's store the sockets, by name, that no route uses.
func (a *agent) forgetStored(names []string) {
	if len(names) == 0 {
		return
	}
	used := map[string]bool{}
	a.mu.Lock()
	for _, lr := range a.routes {
		if ln := lr.route.Listener(); ln != nil {
			used[fdName(ln)] = true
		}
	}
	a.mu.Unlock()
	for _, ln := range a.doorSockets() {
		used[fdName(ln)] = true
	}
	for _, name := range names {
		if name == "" || used[name] || !strings.HasPrefix(name, "listen-") {
			continue
		}
		a.log.Info("closing a stored listening socket no route uses", "name", name)
		if err := a.notify.forgetListener(name); err != nil {
			a.log.Warn("remove a socket from systemd's store", "name", name, "err", err)
		}
	}
}

// serveRoute starts accepting connections on the route (a no-op once it does).
func (a *agent) serveRoute(lr *liveRoute) error {
	if lr.spec.front() {
		a.mu.Lock()
		served := lr.served
		a.mu.Unlock()
		if served {
			return nil
		}
		// Not under a.mu: a door being opened takes its listener.
		if err := a.bindFront(lr); err != nil {
			return err
		}
		a.mu.Lock()
		lr.served = true
		a.mu.Unlock()
		return nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if lr.served {
		return nil
	}
	if err := a.server.Add(lr.route); err != nil {
		return err
	}
	lr.served = true
	return nil
}

// setRoute makes lr its service's route and returns the one it replaces, if any.
func (a *agent) setRoute(lr *liveRoute) *liveRoute {
	a.mu.Lock()
	defer a.mu.Unlock()
	key := lr.key()
	old := a.routes[key]
	a.routes[key] = lr
	if old == lr {
		return nil
	}
	return old
}

// dropRoute shuts lr down once its in-flight requests have finished, and forgets it if
// it is its service's route.
func (a *agent) dropRoute(ctx context.Context, lr *liveRoute) {
	if lr == nil {
		return
	}
	a.mu.Lock()
	key := lr.key()
	if a.routes[key] == lr {
		delete(a.routes, key)
	}
	served := lr.served
	lr.served = true // never served after this
	cur := a.routes[key]
	a.mu.Unlock()
	if lr.spec.front() {
		if served {
			a.log.Info("removing route", "app", lr.app, "service", lr.service, "listen", lr.listen)
			a.unbindFront(ctx, lr, cur)
		} else {
			a.closeIdleDoors(ctx, lr.spec)
		}
		return
	}
	if err := a.notify.forgetListener(fdName(lr.route.Listener())); err != nil {
		a.log.Warn("remove a socket from systemd's store", "listen", lr.listen, "err", err)
	}
	if !served {
		lr.route.Listener().Close()
		return
	}
	a.log.Info("removing route", "app", lr.app, "service", lr.service, "listen", lr.listen)
	if err := a.server.Remove(ctx, lr.route.Name()); err != nil && !errors.Is(err, proxy.ErrNoRoute) {
		a.log.Warn("remove route", "app", lr.app, "service", lr.service, "err", err)
	}
}

// appRoutes returns the app's routes.
func (a *agent) appRoutes(app string) []*liveRoute {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []*liveRoute
	for _, lr := range a.routes {
		if lr.app == app {
			out = append(out, lr)
		}
	}
	return out
}

// route returns the live route of a service at idx among its routes.
func (a *agent) route(app, service string, idx int) *liveRoute {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.routes[routeKeyAt(app, service, idx)]
}

// allRoutes lists every route of an app's state: each service's, in turn.
func allRoutes(app *AppState) []*RouteState {
	var out []*RouteState
	for _, rs := range app.Routes {
		if rs != nil {
			out = append(out, rs.all()...)
		}
	}
	return out
}

// listenConflict names the route of another app or service that serves addr's port on
// an overlapping address, "" when there is none.
func (a *agent) listenConflict(app, service, addr string) string {
	want, err := net.ResolveTCPAddr("tcp", addr)
	if err != nil {
		return ""
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for key, lr := range a.routes {
		if lr.app == app || lr.spec.front() {
			continue
		}
		got, err := net.ResolveTCPAddr("tcp", lr.listen)
		if err != nil || got.Port != want.Port {
			continue
		}
		if len(want.IP) == 0 || want.IP.IsUnspecified() || len(got.IP) == 0 || got.IP.IsUnspecified() || want.IP.Equal(got.IP) {
			return key + " (" + lr.listen + ")"
		}
	}
	return ""
}

// routeCount is the number of routes served: on listeners of their own and on the
// front door.
func (a *agent) routeCount() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := 0
	for _, lr := range a.routes {
		if lr.served {
			n++
		}
	}
	return n
}

// shipRoutes are the routes of a service: x-ship's top-level one first, then the
// entries of x-ship.routes.
func shipRoutes(ship compose.Ship) []compose.Route {
	if len(ship.Routes) > 0 {
		return ship.Routes
	}
	return []compose.Route{{Port: ship.Port, Listen: ship.Listen, Host: ship.Host, Path: ship.Path, TLS: ship.TLS}}
}

// shipSpecs are the routes of a service of a release whose folder is dir, in the order
// of shipRoutes.
func shipSpecs(ship compose.Ship, dir string) []routeSpec {
	var out []routeSpec
	for _, r := range shipRoutes(ship) {
		out = append(out, routeSpecOf(r, dir))
	}
	return out
}

// routeSpecOf is one route of a release whose folder is dir.
func routeSpecOf(r compose.Route, dir string) routeSpec {
	s := routeSpec{Listen: r.Listen, ListenTLS: r.ListenTLS, Hosts: r.Host, Paths: r.Path, TLS: r.TLS.On()}
	if r.TLS.Cert != "" {
		s.Cert, s.Key = inDir(dir, r.TLS.Cert), inDir(dir, r.TLS.Key)
	}
	return s
}

func inDir(dir, file string) string {
	if filepath.IsAbs(file) {
		return filepath.Clean(file)
	}
	return filepath.Join(dir, file)
}
