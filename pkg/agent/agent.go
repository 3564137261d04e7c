// Package agent is shipd, ship's agent on a server: an API on a unix socket through
// which shipctl deploys apps blue-green, a reverse proxy per routed service (pkg/proxy),
// and a state file that lets a restarted shipd put every route back.
//
// # Lifecycle
//
// Run reads the state file, binds the routes' listeners (passed back by systemd's file
// descriptor store or socket activation, or by the shipd it replaces, else new: from
// then on connections wait in the backlog, none is refused), reconciles the state with
// the containers it finds by their compose labels (see reconcile.go), starts serving the
// routes and the API, and tells systemd READY=1. Every route's listening socket is
// handed to systemd's store (FDSTORE=1), so that a restart, even after a crash, gets it
// back. It pets the watchdog at half of WATCHDOG_USEC. When its context ends (SIGTERM)
// it tells systemd STOPPING=1, stops accepting API calls (a deploy running then is cut
// short and puts the previous release back), shuts the routes down gracefully
// (in-flight requests finish) and returns; the app containers keep running. On a
// handover request (SIGHUP) it starts its successor with the listening sockets and
// returns once that one serves (see handover.go).
//
// # Deploys
//
// A deploy makes a release that shipctl uploaded current: see deploy.go.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/moby/moby/client"
	"golang.org/x/sync/errgroup"

	"github.com/shipdeploy/ship/pkg/agentapi"
	"github.com/shipdeploy/ship/pkg/engine"
	"github.com/shipdeploy/ship/pkg/proxy"
	"github.com/shipdeploy/ship/pkg/version"
)

// Options are what Run needs beyond the configuration.
type Options struct {
	// Log receives shipd's logs (JSON on stdout in production).
	Log *slog.Logger
	// Handover, when it delivers, asks shipd to hand its sockets to a successor (the
	// same executable) and exit once that one serves (SIGHUP).
	Handover <-chan struct{}
	// Args are the command line the successor is started with (os.Args[1:]).
	Args []string
}

// agent is one running shipd.
type agent struct {
	cfg     Config
	log     *slog.Logger
	docker  client.APIClient
	store   *store
	server  *proxy.Server
	inh     *proxy.Inherited
	notify  *notifier
	started time.Time

	// deployCtx is cancelled when shipd stops: a running deploy is cut short and
	// puts the previous release back.
	deployCtx    context.Context
	cancelDeploy context.CancelFunc

	mu      sync.Mutex
	busy    map[string]string // app -> what runs on it ("deploy of <sha>")
	closing bool              // shutting down or handing over: no new deploys
	routes  map[string]*liveRoute
	// listeners bound before the routes exist (at start), by listen address.
	early map[string]net.Listener
}

// liveRoute is a service's route, by "app/service".
type liveRoute struct {
	app, service, listen string
	route                *proxy.Route
	served               bool // added to the Server (guarded by agent.mu)
}

func routeKey(app, service string) string { return app + "/" + service }

// Run is `shipd run`: it serves until ctx ends (or a handover completes) and returns
// nil after a graceful stop.
func Run(ctx context.Context, cfg Config, o Options) error {
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	n := newNotifier()
	// The names of the sockets systemd's file descriptor store passes back: those no
	// route takes are removed from the store once the routes are open.
	var stored []string
	if names := os.Getenv("LISTEN_FDNAMES"); names != "" && os.Getenv("LISTEN_FDS") != "" {
		stored = strings.Split(names, ":")
	}
	inh, err := proxy.Inherit()
	if err != nil {
		return err
	}
	defer inh.Close()
	if k := inh.Len(); k > 0 {
		log.Info("inherited listening sockets", "count", k)
	}
	st, warning, err := openStore(cfg.State)
	if err != nil {
		return err
	}
	if warning != nil {
		log.Error("state", "err", warning)
	}
	docker, err := client.New(client.WithHost("unix://" + cfg.Docker))
	if err != nil {
		return fmt.Errorf("docker client: %w", err)
	}
	defer docker.Close()

	a := &agent{
		cfg: cfg, log: log, docker: docker, store: st, inh: inh, notify: n, started: time.Now(),
		server: proxy.NewServer(log),
		busy:   map[string]string{}, routes: map[string]*liveRoute{}, early: map[string]net.Listener{},
	}
	a.deployCtx, a.cancelDeploy = context.WithCancel(context.WithoutCancel(ctx))
	defer a.cancelDeploy()

	api, err := listenAPI(cfg.Socket, cfg.SocketGroup)
	if err != nil {
		return err
	}
	log.Info("shipd starting", "version", version.Version, "pid", os.Getpid(), "socket", cfg.Socket, "state", cfg.State, "docker", cfg.Docker)

	// Listeners first: from here on a client's connection waits in the backlog
	// instead of being refused, while reconcile looks at the containers.
	a.bindListeners()
	cleanup := a.reconcile(ctx)
	a.openRoutes(ctx)
	if err := inh.Close(); err != nil {
		log.Warn("close unused inherited sockets", "err", err)
	}
	a.forgetStored(stored)

	srv := &http.Server{
		Handler:           a.handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	runCtx, stopRun := context.WithCancel(context.WithoutCancel(ctx))
	defer stopRun()
	g, gctx := errgroup.WithContext(runCtx)
	g.Go(func() error {
		if err := srv.Serve(api.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("api: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		n.runWatchdog(gctx, a.alive, func(msg string, err error) { log.Warn(msg, "err", err) })
		return nil
	})

	if cleanup != nil {
		// Strays go once the routes serve: stopping a container takes a while.
		g.Go(func() error {
			cleanup(a.deployCtx)
			return nil
		})
	}
	if err := a.ready(); err != nil {
		log.Warn("tell readiness", "err", err)
	}
	routes := a.server.Status()
	log.Info("shipd ready", "routes", len(routes), "apps", len(a.store.snapshot().Apps), "startup", time.Since(a.started).Round(time.Millisecond).String())

	handedOver := false
wait:
	for {
		select {
		case <-ctx.Done():
			log.Info("stopping", "reason", context.Cause(ctx).Error())
			break wait
		case <-gctx.Done():
			log.Error("stopping: a server failed", "err", context.Cause(gctx))
			break wait
		case <-o.Handover:
			if err := a.handover(ctx, o.Args); err != nil {
				log.Error("handover failed: this shipd keeps serving", "err", err)
				continue
			}
			handedOver = true
			break wait
		}
	}

	// Graceful stop: no new API calls and deploys; a running deploy is cut short and
	// restores; the routes finish their requests. The app containers keep running.
	_ = n.notify("STOPPING=1")
	a.mu.Lock()
	a.closing = true
	a.mu.Unlock()
	a.cancelDeploy()
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	var errs []error
	if err := srv.Shutdown(sctx); err != nil {
		errs = append(errs, fmt.Errorf("api shutdown: %w", err))
	}
	if !handedOver {
		api.remove()
	}
	if err := a.server.Shutdown(sctx); err != nil {
		errs = append(errs, fmt.Errorf("routes shutdown: %w", err))
	}
	stopRun()
	if err := g.Wait(); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		log.Error("stopped with errors", "err", err)
		return err
	}
	log.Info("stopped; the app containers keep running", "handed_over", handedOver)
	return nil
}

// ready tells whoever started shipd that it serves: the shipd handing over to it, if
// one did (proxy.Ready), and systemd (READY=1). A successor's READY=1 may come before
// its predecessor has made it the main process; systemd then ignores it, and takes
// the predecessor's MAINPID= and READY=1 instead.
func (a *agent) ready() error {
	return errors.Join(proxy.Ready(), a.notify.notify("READY=1", fmt.Sprintf("STATUS=serving %d route(s)", len(a.server.Status()))))
}

// alive checks, for the watchdog, that the API answers.
func (a *agent) alive() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c := agentapi.NewClient(agentapi.UnixDialer(a.cfg.Socket))
	defer c.Close()
	_, err := c.Status(ctx)
	return err
}

// engine returns an engine for one deploy, pulling with the given credentials.
func (a *agent) engine(auth map[string]string) *engine.Engine {
	e := engine.New(a.docker)
	if len(auth) > 0 {
		e.RegistryAuth = func(image string) (string, error) { return lookupAuth(auth, image), nil }
	}
	return e
}

// lookupAuth finds the credentials for image: by the reference as written, then
// without its tag or digest, then by its registry host.
func lookupAuth(auth map[string]string, image string) string {
	if v, ok := auth[image]; ok {
		return v
	}
	repo := image
	if i := strings.LastIndex(repo, "@"); i >= 0 {
		repo = repo[:i]
	}
	if i := strings.LastIndex(repo, ":"); i > strings.LastIndex(repo, "/") {
		repo = repo[:i]
	}
	if v, ok := auth[repo]; ok {
		return v
	}
	host, _, found := strings.Cut(repo, "/")
	if found && strings.ContainsAny(host, ".:") || host == "localhost" {
		if v, ok := auth[host]; ok {
			return v
		}
	}
	return ""
}

// bindListeners opens, before anything else, the listener of every route in the state.
func (a *agent) bindListeners() {
	snap := a.store.snapshot()
	for _, app := range snap.Apps {
		for _, rs := range app.Routes {
			if _, ok := a.early[rs.Listen]; ok {
				continue
			}
			ln, inherited, err := a.inh.Listen(rs.Listen)
			if err != nil {
				a.log.Error("listen", "app", app.App, "service", rs.Service, "listen", rs.Listen, "err", err)
				continue
			}
			a.log.Info("listening", "app", app.App, "service", rs.Service, "listen", rs.Listen, "inherited", inherited)
			a.early[rs.Listen] = ln
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
	snap := a.store.snapshot()
	var wg sync.WaitGroup
	for _, app := range snap.Apps {
		for _, rs := range app.Routes {
			lr, err := a.newRoute(app.App, rs.Service, rs.Listen)
			if err != nil {
				a.log.Error("route", "app", app.App, "service", rs.Service, "err", err)
				continue
			}
			a.setRoute(lr)
			wg.Go(func() {
				// The target first, then serving: the connections waiting in the
				// backlog never see a route without one.
				if rs.Target == "" {
					a.log.Error("route has no container to serve: it answers 503 until the next deploy", "app", app.App, "service", rs.Service, "listen", rs.Listen)
				} else {
					// Reconcile has just checked the target: one attempt is enough.
					hc := proxy.HealthCheck{Path: rs.Health, Interval: 100 * time.Millisecond, Timeout: 2 * time.Second, Deadline: 2 * time.Second}
					if err := lr.route.Deploy(ctx, rs.Target, hc, time.Second); err != nil {
						a.log.Error("route: the container does not answer: 503 until the next deploy", "app", app.App, "service", rs.Service, "target", rs.Target, "err", err)
					}
				}
				if err := a.serveRoute(lr); err != nil {
					a.log.Error("route", "app", app.App, "service", rs.Service, "err", err)
				}
			})
		}
	}
	wg.Wait()
	a.mu.Lock()
	for addr, ln := range a.early {
		a.log.Warn("closing a listener no route uses", "listen", addr)
		ln.Close()
		delete(a.early, addr)
	}
	a.mu.Unlock()
}

// newRoute makes a route of a service on listen. Its listener is bound (connections
// wait in the backlog) but nothing is accepted until serveRoute, and it is not the
// service's route until setRoute.
func (a *agent) newRoute(app, service, listen string) (*liveRoute, error) {
	key := routeKey(app, service)
	ln, err := a.listen(listen)
	if err != nil {
		return nil, fmt.Errorf("listen on %s for %s: %w", listen, key, err)
	}
	if err := a.notify.storeListener(ln); err != nil {
		a.log.Warn("keep the listening socket in systemd's store (a restart may refuse connections)", "listen", listen, "err", err)
	}
	r := proxy.NewRoute(key+"@"+listen, ln, proxy.RouteOptions{Logger: a.log.With("app", app, "service", service), TrustForwarded: a.cfg.TrustForwarded})
	return &liveRoute{app: app, service: service, listen: listen, route: r}, nil
}

// forgetStored removes from systemd's store the sockets, by name, that no route uses.
func (a *agent) forgetStored(names []string) {
	if len(names) == 0 {
		return
	}
	used := map[string]bool{}
	a.mu.Lock()
	for _, lr := range a.routes {
		used[fdName(lr.route.Listener())] = true
	}
	a.mu.Unlock()
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
	key := routeKey(lr.app, lr.service)
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
	key := routeKey(lr.app, lr.service)
	if a.routes[key] == lr {
		delete(a.routes, key)
	}
	served := lr.served
	lr.served = true // never served after this
	a.mu.Unlock()
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

// appRoutes returns the app's routes, by service.
func (a *agent) appRoutes(app string) map[string]*liveRoute {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := map[string]*liveRoute{}
	for _, lr := range a.routes {
		if lr.app == app {
			out[lr.service] = lr
		}
	}
	return out
}

// route returns the live route of a service.
func (a *agent) route(app, service string) *liveRoute {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.routes[routeKey(app, service)]
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
		if lr.app == app {
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

// acquire marks the app busy with what; it fails when another deploy runs on it or
// shipd is stopping.
func (a *agent) acquire(app, what string) (func(), error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closing {
		return nil, &agentapi.Error{Code: agentapi.CodeShutdown, Msg: "shipd is stopping or handing over; try again in a moment", Status: http.StatusServiceUnavailable}
	}
	if cur, ok := a.busy[app]; ok {
		return nil, &agentapi.Error{Code: agentapi.CodeLocked, Msg: fmt.Sprintf("app %s is locked: shipd is running its %s; wait for it to finish", app, cur), Status: http.StatusConflict}
	}
	a.busy[app] = what
	return func() {
		a.mu.Lock()
		delete(a.busy, app)
		a.mu.Unlock()
	}, nil
}

// status builds the API's Status.
func (a *agent) status() agentapi.Status {
	snap := a.store.snapshot()
	s := agentapi.Status{
		Version: version.String("shipd"), PID: os.Getpid(), Started: a.started,
		Uptime: agentapi.Duration(time.Since(a.started).Round(time.Second)),
		Routes: []agentapi.Route{}, Apps: []agentapi.App{},
	}
	a.mu.Lock()
	live := make([]*liveRoute, 0, len(a.routes))
	for _, lr := range a.routes {
		live = append(live, lr)
	}
	busy := map[string]string{}
	for k, v := range a.busy {
		busy[k] = v
	}
	a.mu.Unlock()
	for _, lr := range live {
		ps := lr.route.Status()
		r := agentapi.Route{
			App: lr.app, Service: lr.service, Listen: ps.Listen, Target: ps.Target, Since: ps.Since,
			Requests: ps.Requests, InFlight: ps.InFlight, Error: ps.Error,
		}
		if app := snap.Apps[lr.app]; app != nil {
			if rs := app.Routes[lr.service]; rs != nil && rs.Target == ps.Target {
				r.Container, r.Release = rs.Name, rs.Release
			}
		}
		s.Routes = append(s.Routes, r)
	}
	sort.Slice(s.Routes, func(i, j int) bool {
		if s.Routes[i].App != s.Routes[j].App {
			return s.Routes[i].App < s.Routes[j].App
		}
		return s.Routes[i].Service < s.Routes[j].Service
	})
	for _, app := range snap.Apps {
		as := agentapi.App{
			App: app.App, Path: app.Path, Release: app.Release, Previous: app.Previous, Since: app.Since,
			LastResult: app.LastResult, LastError: app.LastError, LastTime: app.LastTime,
		}
		if d := app.Deploying; d != nil {
			as.Deploying = d.Release
		}
		s.Apps = append(s.Apps, as)
	}
	sort.Slice(s.Apps, func(i, j int) bool { return s.Apps[i].App < s.Apps[j].App })
	return s
}

// saveState changes the state and saves it; a failed save is logged (what shipd
// serves does not depend on its disk).
func (a *agent) saveState(fn func(s *State)) {
	if err := a.store.update(fn); err != nil {
		a.log.Error("save state", "err", err)
	}
}
