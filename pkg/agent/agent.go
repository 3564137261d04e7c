// Package agent is shipd, ship's agent on a server: an API on a unix socket through
// which shipctl deploys apps blue-green, a reverse proxy per routed service (pkg/proxy),
// and a state file that lets a restarted shipd put every route back.
//
// # Lifecycle
//
// Run reads the state file, binds the routes' listeners (passed back by systemd's file
// descriptor store or socket activation, or by the shipd it replaces, else new: from
// then on connections wait in the backlog, none is refused), adds the apps the state
// lacks from the host (see rebuild.go), reconciles the state with the containers it
// finds by their compose labels (see reconcile.go), starts serving the routes and the
// API, and tells systemd READY=1. Every route's listening socket is handed to systemd's
// store (FDSTORE=1), so that a restart, even after a crash, gets it back. It pets the watchdog at half of WATCHDOG_USEC. When its context ends (SIGTERM)
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
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/moby/moby/client"
	"golang.org/x/sync/errgroup"

	"github.com/shipdeploy/ship/pkg/agentapi"
	"github.com/shipdeploy/ship/pkg/engine"
	"github.com/shipdeploy/ship/pkg/proxy"
	"github.com/shipdeploy/ship/pkg/proxy/certs"
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
	cfg    Config
	log    *slog.Logger
	docker client.APIClient
	// containers is what reconcile needs of the engine (see enginePort).
	containers enginePort
	store      *store
	server     *proxy.Server
	inh        *proxy.Inherited
	notify     *notifier
	started    time.Time
	// stateID names this shipd on the containers it starts (AgentLabel).
	stateID string

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
	// retiring holds, by app, the drains and removals of replaced containers that a
	// run left going in the background (*sync.WaitGroup; see swap.retire).
	retiring sync.Map

	// certs serves the HTTPS doors' certificates; custom notes the owners
	// ("app/service") whose own certificate it holds.
	certs    *certs.Manager
	customMu sync.Mutex
	custom   map[string]bool
	// doors are the front door's shared listeners, by address (see front.go).
	doorMu    sync.Mutex
	doors     map[string]*door
	holdDoors bool // at start: doors opened wait until every route is bound
}

// Run is `shipd run`: it serves until ctx ends (or a handover completes) and returns
// nil after a graceful stop.
func Run(ctx context.Context, cfg Config, o Options) error {
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	n := newNotifier()
	stored := storedNames()
	inh, err := proxy.Inherit()
	if err != nil {
		return err
	}
	defer inh.Close()
	if k := inh.Len(); k > 0 {
		log.Info("inherited listening sockets", "count", k)
	}
	a, closeAgent, err := newAgent(ctx, cfg, log, inh, n)
	if err != nil {
		return err
	}
	defer closeAgent()

	api, err := listenAPI(cfg.Socket, cfg.SocketGroup)
	if err != nil {
		return err
	}
	log.Info("shipd starting", "version", version.Version, "pid", os.Getpid(), "socket", cfg.Socket, "state", cfg.State, "docker", cfg.Docker)
	cleanup := a.startRoutes(ctx, stored)

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
		a.notify.runWatchdog(gctx, a.alive, func(msg string, err error) { log.Warn(msg, "err", err) })
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
	log.Info("shipd ready", "routes", a.routeCount(), "apps", len(a.store.snapshot().Apps), "startup", time.Since(a.started).Round(time.Millisecond).String())

	handedOver := a.serveUntilStop(ctx, gctx, o)
	return a.stop(srv, api, handedOver, func() error {
		stopRun()
		return g.Wait()
	})
}

// storedNames are the names of the sockets systemd's file descriptor store passes
// back: those no route takes are removed from the store once the routes are open.
func storedNames() []string {
	if names := os.Getenv("LISTEN_FDNAMES"); names != "" && os.Getenv("LISTEN_FDS") != "" {
		return strings.Split(names, ":")
	}
	return nil
}

// newAgent reads the state and connects to the Docker engine; closeAgent cuts a
// running deploy short and closes the connection.
func newAgent(ctx context.Context, cfg Config, log *slog.Logger, inh *proxy.Inherited, n *notifier) (a *agent, closeAgent func(), err error) {
	st, warning, err := openStore(cfg.State)
	if err != nil {
		return nil, nil, err
	}
	if warning != nil {
		log.Error("state", "err", warning)
	}
	for _, d := range st.dropped {
		log.Error("state: entry dropped", "app", d.app, "reason", d.reason)
	}
	docker, err := client.New(client.WithHost("unix://" + cfg.Docker))
	if err != nil {
		return nil, nil, fmt.Errorf("docker client: %w", err)
	}
	a = &agent{
		cfg: cfg, log: log, docker: docker, containers: engine.New(docker), store: st, stateID: agentID(cfg.State), inh: inh,
		notify: n, started: time.Now(), server: proxy.NewServer(log),
		busy: map[string]string{}, routes: map[string]*liveRoute{}, early: map[string]net.Listener{},
	}
	if err := a.initFront(); err != nil {
		docker.Close()
		return nil, nil, err
	}
	a.deployCtx, a.cancelDeploy = context.WithCancel(context.WithoutCancel(ctx))
	return a, func() {
		a.cancelDeploy()
		docker.Close()
	}, nil
}

// startRoutes binds the routes' listeners, reconciles the state with the containers and
// serves the routes; it returns reconcile's clean-up, to run once they serve.
func (a *agent) startRoutes(ctx context.Context, stored []string) func(context.Context) {
	// Listeners first: from here on a client's connection waits in the backlog
	// instead of being refused, while reconcile looks at the containers.
	a.bindListeners()
	if a.docker != nil && a.rebuild(ctx, a.docker) {
		a.bindListeners()
	}
	// After the rebuild, so that an app the state had lost is started too.
	a.startStopped(ctx)
	cleanup := a.reconcile(ctx)
	a.openRoutes(ctx)
	if err := a.inh.Close(); err != nil {
		a.log.Warn("close unused inherited sockets", "err", err)
	}
	a.forgetStored(stored)
	return cleanup
}

// serveUntilStop waits until ctx ends, a server fails (gctx ends) or a handover
// completes; it reports whether shipd handed over.
func (a *agent) serveUntilStop(ctx, gctx context.Context, o Options) bool {
	for {
		select {
		case <-ctx.Done():
			a.log.Info("stopping", "reason", context.Cause(ctx).Error())
			return false
		case <-gctx.Done():
			a.log.Error("stopping: a server failed", "err", context.Cause(gctx))
			return false
		case <-o.Handover:
			if err := a.handover(ctx, o.Args); err != nil {
				a.log.Error("handover failed: this shipd keeps serving", "err", err)
				continue
			}
			return true
		}
	}
}

// stop is the graceful stop: no new API calls and deploys; a running deploy is cut
// short and restores; the routes finish their requests. The app containers keep
// running. wait stops and waits for the servers' goroutines.
func (a *agent) stop(srv *http.Server, api *apiSocket, handedOver bool, wait func() error) error {
	if !handedOver {
		// Not after a handover: the service goes on in the successor, and systemd
		// (NotifyAccess=all) would take STOPPING=1 as the service's.
		_ = a.notify.notify("STOPPING=1")
	}
	a.mu.Lock()
	a.closing = true
	a.mu.Unlock()
	a.cancelDeploy()
	sctx, cancel := context.WithTimeout(context.Background(), a.cfg.ShutdownTimeout)
	defer cancel()
	var errs []error
	if err := srv.Shutdown(sctx); err != nil {
		errs = append(errs, fmt.Errorf("api shutdown: %w", err))
	}
	a.waitAllRetired()
	if !handedOver {
		api.remove()
	}
	if err := a.server.Shutdown(sctx); err != nil {
		errs = append(errs, fmt.Errorf("routes shutdown: %w", err))
	}
	if err := a.shutdownFront(sctx); err != nil {
		errs = append(errs, err)
	}
	if err := wait(); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		a.log.Error("stopped with errors", "err", err)
		return err
	}
	a.log.Info("stopped; the app containers keep running", "handed_over", handedOver)
	return nil
}

// ready tells systemd that shipd serves and is its main process (MAINPID=, READY=1;
// NotifyAccess=all lets a successor say so), waits until systemd has taken that in (a
// barrier), and only then tells the shipd handing over to it, if one did
// (proxy.Ready), which then exits: systemd sees its exit as that of a process other
// than the main one, and stops or restarts the successor gracefully from then on.
func (a *agent) ready() error {
	err := a.notify.notify("MAINPID="+strconv.Itoa(os.Getpid()), "READY=1", a.statusLine())
	if err == nil {
		err = a.notify.barrier(barrierTimeout)
	}
	return errors.Join(err, proxy.Ready())
}

// barrierTimeout bounds the wait for systemd to take in notifications, as
// sd_notify_barrier's callers commonly do.
const barrierTimeout = 5 * time.Second

// statusLine is the STATUS= that `systemctl status shipd` shows.
func (a *agent) statusLine() string {
	return fmt.Sprintf("STATUS=serving %d route(s)", a.routeCount())
}

// tellStatus keeps STATUS= current once a deploy has changed the routes.
func (a *agent) tellStatus() {
	if err := a.notify.notify(a.statusLine()); err != nil {
		a.log.Warn("tell systemd the status", "err", err)
	}
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
	// A service's routes in their order (x-ship's, then x-ship.routes).
	sort.Slice(live, func(i, j int) bool { return live[i].idx < live[j].idx })
	for _, lr := range live {
		ps := lr.route.Status()
		r := agentapi.Route{
			App: lr.app, Service: lr.service, Listen: ps.Listen, Target: ps.Target, Since: ps.Since,
			Requests: ps.Requests, InFlight: ps.InFlight, Error: ps.Error,
		}
		if lr.spec.front() {
			r.Listen, r.ListenTLS, r.Hosts, r.Paths, r.TLS = lr.spec.Listen, lr.spec.ListenTLS, lr.spec.Hosts, lr.spec.Paths, lr.spec.TLS
		}
		if app := snap.Apps[lr.app]; app != nil {
			if rs := app.Routes[lr.service]; rs != nil && lr.idx < len(rs.all()) {
				if at := rs.all()[lr.idx]; at.Target == ps.Target {
					r.Container, r.Release = rs.Name, rs.Release
				}
			}
		}
		s.Routes = append(s.Routes, r)
	}
	sort.SliceStable(s.Routes, func(i, j int) bool {
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
	s.Certs = a.certStatus()
	return s
}

// saveState changes the state and saves it; a failed save is logged (what shipd
// serves does not depend on its disk).
func (a *agent) saveState(fn func(s *State)) {
	if err := a.store.update(fn); err != nil {
		a.log.Error("save state", "err", err)
	}
}
