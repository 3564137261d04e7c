package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"

	"github.com/shipdeploy/ship/pkg/agentapi"
	"github.com/shipdeploy/ship/pkg/engine"
	"github.com/shipdeploy/ship/pkg/proxy"
	"github.com/shipdeploy/ship/pkg/release"
)

// logBuffer collects shipd's log for a failing test's output.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// newTestAgent is a shipd as Run makes it, without systemd, inherited sockets or the
// API socket, reaching the engine through eng, with apps in its state.
func newTestAgent(t *testing.T, eng enginePort, apps ...*AppState) *agent {
	t.Helper()
	st, _, err := openStore(filepath.Join(t.TempDir(), "state.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := st.update(func(s *State) {
		for _, app := range apps {
			s.Apps[app.App] = app
		}
	}); err != nil {
		t.Fatal(err)
	}
	logs := &logBuffer{}
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg := DefaultConfig()
	cfg.State = st.path
	a := &agent{
		cfg: cfg, log: log, containers: eng, store: st, inh: &proxy.Inherited{}, notify: &notifier{},
		started: time.Now(), server: proxy.NewServer(log),
		busy: map[string]string{}, routes: map[string]*liveRoute{}, early: map[string]net.Listener{},
	}
	if err := a.initFront(); err != nil {
		t.Fatal(err)
	}
	a.deployCtx, a.cancelDeploy = context.WithCancel(context.Background())
	t.Cleanup(func() {
		a.cancelDeploy()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := a.server.Shutdown(ctx); err != nil {
			t.Errorf("shut the routes down: %v", err)
		}
		if t.Failed() {
			t.Logf("shipd's log:\n%s", logs)
		}
	})
	return a
}

// fakeEngine is the engine port over containers of the test's own (see box).
type fakeEngine struct {
	down error // what Ping returns: the engine does not answer

	mu      sync.Mutex
	reps    []engine.Replica
	listed  int      // calls of Replicas and InspectReplica
	removed []string // names, in the order removed
}

const projectLabel = "com.docker.compose.project"

func (f *fakeEngine) Ping(context.Context) error { return f.down }

func (f *fakeEngine) Replicas(_ context.Context, project, service string) ([]engine.Replica, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.listed++
	var out []engine.Replica
	for _, r := range f.reps {
		if r.Labels[projectLabel] == project && r.Service == service {
			out = append(out, r)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Number < out[j].Number })
	return out, nil
}

func (f *fakeEngine) InspectReplica(_ context.Context, id string) (engine.Replica, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.listed++
	for _, r := range f.reps {
		if r.ID == id {
			return r, nil
		}
	}
	return engine.Replica{}, fmt.Errorf("no such container: %s: %w", id, cerrdefs.ErrNotFound)
}

func (f *fakeEngine) RemoveReplica(_ context.Context, r engine.Replica, _ func(engine.Event)) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reps = slices.DeleteFunc(f.reps, func(x engine.Replica) bool { return x.ID == r.ID })
	f.removed = append(f.removed, r.Name)
	return nil
}

func (f *fakeEngine) removedNames() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.removed)
}

// box is a container of the test: a service's container, with the engine's view of it
// (state, health) and, when it runs, an HTTP server of its own on its address that
// answers / with the container's name and the health path with 200, or 503 when sick.
type box struct {
	name, service, release string
	state, health          string // the engine's view; state "" is running
	sick                   bool
}

const testNetwork = "shop_default"

// boxes starts the servers of the running boxes of app, each on a loopback address of
// its own (127.0.0.2, .3, ...) and all on one port, as a service's containers listen on
// one port at their own addresses. It returns the boxes as the engine shows them, and
// the port.
func boxes(t *testing.T, app string, bs []box) ([]engine.Replica, int) {
	t.Helper()
	port, lns := sharedPort(t, len(bs))
	var reps []engine.Replica
	numbers := map[string]int{}
	for i, b := range bs {
		service, state := b.service, b.state
		if service == "" {
			service = "web"
		}
		if state == "" {
			state = "running"
		}
		numbers[service]++
		ip, _, _ := net.SplitHostPort(lns[i].Addr().String())
		reps = append(reps, engine.Replica{
			Container: engine.Container{ID: "id-" + b.name, Name: b.name, Service: service, Number: numbers[service], State: state, Health: b.health},
			Labels:    map[string]string{projectLabel: app, ReleaseLabel: b.release},
			IPs:       map[string]string{testNetwork: ip},
		})
		if state != "running" {
			lns[i].Close() // a stopped container does not answer
			continue
		}
		srv := &http.Server{Handler: boxHandler(b)}
		go srv.Serve(lns[i])
		t.Cleanup(func() { srv.Close() })
	}
	return reps, port
}

func boxHandler(b box) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/up", func(w http.ResponseWriter, _ *http.Request) {
		if b.sick {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, b.name) })
	return mux
}

// sharedPort binds n listeners on 127.0.0.2, 127.0.0.3, ... with one port.
func sharedPort(t *testing.T, n int) (int, []net.Listener) {
	t.Helper()
	var lastErr error
	for range 20 {
		first, err := net.Listen("tcp", "127.0.0.2:0")
		if err != nil {
			t.Fatal(err)
		}
		port := first.Addr().(*net.TCPAddr).Port
		lns := []net.Listener{first}
		for i := 1; i < n && err == nil; i++ {
			var ln net.Listener
			if ln, err = net.Listen("tcp", fmt.Sprintf("127.0.0.%d:%d", i+2, port)); err == nil {
				lns = append(lns, ln)
			}
		}
		if err == nil {
			return port, lns
		}
		lastErr = err
		for _, ln := range lns {
			ln.Close()
		}
	}
	t.Fatalf("no port free on %d loopback addresses: %v", n, lastErr)
	return 0, nil
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// get asks the route on listen, as a user would, and returns the status and body.
func get(t *testing.T, listen string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: 30 * time.Second}
	resp, err := c.Get("http://" + listen + "/")
	if err != nil {
		t.Fatalf("GET through the route: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// reconcileCase is a state found at start, the containers found, and what a user then
// sees: which container the route serves, and which containers are removed.
type reconcileCase struct {
	name  string
	boxes []box
	// live is the container the state names as the route's; current the release
	// current in the state, cut the deploy the restart cut off.
	live    string
	current string
	cut     *Deploying
	down    bool // the engine does not answer

	serves  string // the container the route serves; "" answers 503
	removed []string
}

func TestReconcile(t *testing.T) {
	cases := []reconcileCase{
		{
			name:  "the state's live container, though another is newer",
			boxes: []box{{name: "web-1", release: "v1"}, {name: "web-2", release: "v1"}},
			live:  "web-1", current: "v1",
			serves: "web-1", removed: []string{"web-2"},
		},
		{
			name:  "the newest other when the state's is gone",
			boxes: []box{{name: "web-2", release: "v1"}, {name: "web-3", release: "v1"}},
			live:  "web-1", current: "v1",
			serves: "web-3", removed: []string{"web-2"},
		},
		{
			name: "the newest other when the state's is stopped or unhealthy",
			boxes: []box{
				{name: "web-1", release: "v1", state: "exited"}, {name: "web-2", release: "v1"},
				{name: "web-3", release: "v1", health: "unhealthy"},
			},
			live: "web-1", current: "v1",
			serves: "web-2", removed: []string{"web-1", "web-3"},
		},
		{
			name:  "the next when the state's fails its health check",
			boxes: []box{{name: "web-1", release: "v1"}, {name: "web-2", release: "v1", sick: true}},
			live:  "web-2", current: "v1",
			serves: "web-1", removed: []string{"web-2"},
		},
		{
			name:  "nothing removed when no container passes",
			boxes: []box{{name: "web-1", release: "v1", sick: true}, {name: "web-2", release: "v1", state: "exited"}},
			live:  "web-1", current: "v1",
			serves: "", removed: nil,
		},
		{
			name:  "engine down: the state's container, if it answers",
			boxes: []box{{name: "web-1", release: "v1"}, {name: "web-2", release: "v1"}},
			live:  "web-1", current: "v1", down: true,
			serves: "web-1", removed: nil,
		},
		{
			name:  "engine down: 503 when the state's container does not answer",
			boxes: []box{{name: "web-1", release: "v1", state: "exited"}, {name: "web-2", release: "v1"}},
			live:  "web-1", current: "v1", down: true,
			serves: "", removed: nil,
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			testReconcile(t, c)
		})
	}
}

// testReconcile starts a shipd's routes on the case's state and containers and checks
// what the route serves and what is removed, and when.
func testReconcile(t *testing.T, c reconcileCase) (*agent, *fakeEngine) {
	t.Helper()
	reps, port := boxes(t, "shop", c.boxes)
	eng := &fakeEngine{reps: reps}
	if c.down {
		eng.down = errors.New("Cannot connect to the Docker daemon")
	}
	listen := freeAddr(t)
	route := &RouteState{
		Service: "web", Listen: listen, Port: port, Network: testNetwork, Health: "/up",
		Container: "id-" + c.live, Name: c.live, Release: c.current,
	}
	for _, r := range reps {
		if r.Name == c.live {
			route.Target, _ = r.Addr(testNetwork, port)
		}
	}
	if route.Target == "" {
		route.Target = fmt.Sprintf("127.0.0.99:%d", port) // the container is gone
	}
	path := t.TempDir()
	a := newTestAgent(t, eng, &AppState{
		App: "shop", Path: path, Release: c.current, Deploying: c.cut,
		Routes: map[string]*RouteState{"web": route},
	})
	before := *route

	ctx := context.Background()
	cleanup := a.startRoutes(ctx, nil)
	if got := eng.removedNames(); len(got) > 0 {
		t.Errorf("removed %v before the routes served", got)
	}
	status, body := get(t, listen)
	switch {
	case c.serves == "" && status != http.StatusServiceUnavailable:
		t.Errorf("the route answers %d %q, want 503", status, body)
	case c.serves != "" && (status != http.StatusOK || body != c.serves):
		t.Errorf("the route answers %d %q, want %s", status, body, c.serves)
	}
	if cleanup != nil {
		cleanup(ctx)
	}
	if got := eng.removedNames(); !slices.Equal(got, c.removed) {
		t.Errorf("removed %v, want %v", got, c.removed)
	}

	got := a.store.snapshot().Apps["shop"].Routes["web"]
	switch {
	case c.serves == "" || c.down:
		if got.Container != before.Container || got.Target != before.Target || !got.Since.Equal(before.Since) {
			t.Errorf("the state's route changed to %+v, want it as it was", got)
		}
	case got.Name != c.serves || got.Container != "id-"+c.serves:
		t.Errorf("the state's route names %s (%s), want %s", got.Name, got.Container, c.serves)
	}
	if c.down && eng.listed > 0 {
		t.Errorf("the engine was asked for containers %d time(s) after it did not answer", eng.listed)
	}
	return a, eng
}

// A deploy of v2 cut off by a restart, right after its switch: the state names v2's
// web container. The deploy did not happen: the route goes back to v1's container, the
// containers the deploy started go (but a service's only one), and the failure is in
// the state, audit.log and v2's release.json.
func TestReconcileCutOffDeploy(t *testing.T) {
	cut := &Deploying{
		Kind: kindDeploy, Release: "v2", From: "v1", Started: time.Now().UTC(), Service: "worker",
		Created: []string{"id-web-2", "id-worker-2", "id-cache-1", "id-gone"},
	}
	c := reconcileCase{
		boxes: []box{
			{name: "web-1", release: "v1"}, {name: "web-2", release: "v2"},
			{name: "worker-1", service: "worker", release: "v1"}, {name: "worker-2", service: "worker", release: "v2"},
			{name: "cache-1", service: "cache", release: "v2"},
		},
		live: "web-2", current: "v1", cut: cut,
		serves: "web-1", removed: []string{"web-2", "worker-2"},
	}
	a, _ := testReconcile(t, c)

	app := a.store.snapshot().Apps["shop"]
	if app.Deploying != nil || app.LastResult != agentapi.ResultFailed || app.LastError != "deploy of v2 was cut off by a shipd restart" {
		t.Errorf("state: deploying %+v, last %q %q", app.Deploying, app.LastResult, app.LastError)
	}
	if r := app.Routes["web"]; r.Release != "v1" {
		t.Errorf("the route's release in the state: %q, want v1", r.Release)
	}
	dir := release.Layout(app.Path)
	data, err := os.ReadFile(dir.Audit())
	if err != nil {
		t.Fatal(err)
	}
	var e release.AuditEntry
	if err := json.Unmarshal(data, &e); err != nil || strings.Count(string(data), "\n") != 1 {
		t.Fatalf("audit.log: %v\n%s", err, data)
	}
	if e.Event != release.AuditDeploy || e.SHA != "v2" || e.Prev != "v1" || e.Result != agentapi.ResultFailed ||
		e.Agent != "shipd" || !strings.Contains(e.Error, "cut off by a shipd restart") || !strings.Contains(e.Error, "web -> web-1 (v1)") {
		t.Errorf("audit line: %+v", e)
	}
	var info release.Info
	data, err = os.ReadFile(dir.Info("v2"))
	if err := errors.Join(err, json.Unmarshal(data, &info)); err != nil || info.Result != release.Failed {
		t.Errorf("v2's release.json: %v\n%s", err, data)
	}
}

// Without a deploy cut off, reconcile keeps a container of the state's release and does
// not prefer one of the current release: that rule is for a cut-off deploy only.
func TestReconcileNoCutOffKeepsTheLiveRelease(t *testing.T) {
	c := reconcileCase{
		boxes: []box{{name: "web-1", release: "v1"}, {name: "web-2", release: "v2"}},
		live:  "web-2", current: "v1",
		serves: "web-2", removed: []string{"web-1"},
	}
	a, _ := testReconcile(t, c)
	if app := a.store.snapshot().Apps["shop"]; app.LastResult != "" || app.LastError != "" {
		t.Errorf("a restart without a cut-off deploy recorded %q %q", app.LastResult, app.LastError)
	}
	if _, err := os.Stat(release.Layout(a.store.snapshot().Apps["shop"].Path).Audit()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("audit.log written without a cut-off deploy: %v", err)
	}
}
