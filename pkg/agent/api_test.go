package agent

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shipdeploy/ship/pkg/agentapi"
)

// serveAPI serves a's API on a loopback port and returns a client of it, as shipctl's,
// and the server's URL for raw requests.
func serveAPI(t *testing.T, a *agent) (*agentapi.Client, string) {
	t.Helper()
	srv := httptest.NewServer(a.handler())
	t.Cleanup(srv.Close)
	c := agentapi.NewClient(func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", srv.Listener.Addr().String())
	})
	t.Cleanup(c.Close)
	return c, srv.URL
}

// post sends body to path and returns the answer's status and error body.
func post(t *testing.T, url, path, body string) (int, agentapi.ErrorBody) {
	t.Helper()
	resp, err := http.Post(url+path, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	var eb agentapi.ErrorBody
	if resp.StatusCode != http.StatusOK {
		if err := json.NewDecoder(resp.Body).Decode(&eb); err != nil {
			t.Errorf("POST %s: %s: the error is not an ErrorBody: %v", path, resp.Status, err)
		}
	}
	return resp.StatusCode, eb
}

func TestAPIStatus(t *testing.T) {
	reps, port := boxes(t, "shop", []box{{name: "web-1", release: "v1"}})
	listen := freeAddr(t)
	target, _ := reps[0].Addr(testNetwork, port)
	since := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	a := newTestAgent(t, &fakeEngine{reps: reps},
		&AppState{
			App: "shop", Path: "/srv/shop", Release: "v1", Previous: "v0", Since: since,
			LastResult: agentapi.ResultDeployed, LastTime: since,
			Routes: map[string]*RouteState{"web": {
				Service: "web", Listen: listen, Port: port, Network: testNetwork, Health: "/up",
				Container: "id-web-1", Name: "web-1", Target: target, Release: "v1",
			}},
		},
	)
	if cleanup := a.startRoutes(context.Background(), nil); cleanup != nil {
		t.Errorf("reconcile found strays")
	}
	// A deploy of another app, running now.
	a.saveState(func(s *State) {
		s.app("blog", "/srv/blog").Deploying = &Deploying{Kind: kindDeploy, Release: "b7", Started: since}
	})
	c, url := serveAPI(t, a)

	st, err := c.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.PID != os.Getpid() || !strings.Contains(st.Version, "shipd") || !st.Started.Equal(a.started) {
		t.Errorf("status: pid %d, version %q, started %s", st.PID, st.Version, st.Started)
	}
	if len(st.Routes) != 1 {
		t.Fatalf("routes: %+v", st.Routes)
	}
	r := st.Routes[0]
	if r.App != "shop" || r.Service != "web" || r.Listen != listen || r.Target != target || r.Container != "web-1" || r.Release != "v1" {
		t.Errorf("route: %+v", r)
	}
	if len(st.Apps) != 2 || st.Apps[0].App != "blog" || st.Apps[1].App != "shop" {
		t.Fatalf("apps, by name: %+v", st.Apps)
	}
	if blog := st.Apps[0]; blog.Deploying != "b7" || blog.Path != "/srv/blog" {
		t.Errorf("blog: %+v", blog)
	}
	if shop := st.Apps[1]; shop.Release != "v1" || shop.Previous != "v0" || !shop.Since.Equal(since) || shop.LastResult != agentapi.ResultDeployed || shop.Deploying != "" {
		t.Errorf("shop: %+v", shop)
	}

	// Requests the API has no endpoint for.
	for _, req := range [][2]string{{http.MethodGet, agentapi.PathDeploy}, {http.MethodPost, agentapi.PathStatus}, {http.MethodGet, "/v2/status"}} {
		hr, _ := http.NewRequest(req[0], url+req[1], nil)
		resp, err := http.DefaultClient.Do(hr)
		if err != nil {
			t.Fatal(err)
		}
		var eb agentapi.ErrorBody
		_ = json.NewDecoder(resp.Body).Decode(&eb)
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound || eb.Code != agentapi.CodeNotFound || !strings.Contains(eb.Error, req[0]+" "+req[1]) {
			t.Errorf("%s %s: %d %+v, want 404 naming it", req[0], req[1], resp.StatusCode, eb)
		}
	}
}

// A deploy or rollback request that cannot name a release is refused with 400, every
// problem in one answer, before anything is looked at.
func TestAPIRefusesBadRequests(t *testing.T) {
	_, url := serveAPI(t, newTestAgent(t, &fakeEngine{}))
	path := t.TempDir()
	cases := []struct {
		name, endpoint, body string
		status               int
		code                 string
		want                 []string
	}{
		{"not JSON", agentapi.PathDeploy, `{"app":`, 400, agentapi.CodeBadRequest, []string{"read the deploy request"}},
		{"not JSON (rollback)", agentapi.PathRollback, `[1]`, 400, agentapi.CodeBadRequest, []string{"read the rollback request"}},
		{"app not a project name", agentapi.PathDeploy, `{"app":"Shop","path":"/srv/shop","sha":"v1"}`, 400, agentapi.CodeBadRequest, []string{`app "Shop" is not a compose project name`}},
		{"no app", agentapi.PathRollback, `{"path":"/srv/shop"}`, 400, agentapi.CodeBadRequest, []string{`app "" is not a compose project name`}},
		{"relative path", agentapi.PathDeploy, `{"app":"shop","path":"srv/shop","sha":"v1"}`, 400, agentapi.CodeBadRequest, []string{`path "srv/shop" is not a clean absolute folder`}},
		{"path not clean", agentapi.PathDeploy, `{"app":"shop","path":"/srv/../etc","sha":"v1"}`, 400, agentapi.CodeBadRequest, []string{`path "/srv/../etc" is not a clean absolute folder`}},
		{"path is /", agentapi.PathRollback, `{"app":"shop","path":"/"}`, 400, agentapi.CodeBadRequest, []string{`path "/" is not a clean absolute folder`}},
		{"deploy without sha", agentapi.PathDeploy, `{"app":"shop","path":"/srv/shop"}`, 400, agentapi.CodeBadRequest, []string{`sha "" is not a release name`}},
		{"sha a path", agentapi.PathDeploy, `{"app":"shop","path":"/srv/shop","sha":"../v1"}`, 400, agentapi.CodeBadRequest, []string{`sha "../v1" is not a release name`}},
		{"sha a path (rollback)", agentapi.PathRollback, `{"app":"shop","path":"/srv/shop","sha":"v1/.."}`, 400, agentapi.CodeBadRequest, []string{`sha "v1/.." is not a release name`}},
		{"every problem at once", agentapi.PathDeploy, `{"app":"-x","path":"x","sha":""}`, 400, agentapi.CodeBadRequest, []string{`app "-x"`, `path "x"`, `sha ""`}},
		{"health not a duration", agentapi.PathDeploy, `{"app":"shop","path":"/srv/shop","sha":"v1","health":{"deadline":"soon"}}`, 400, agentapi.CodeBadRequest, []string{"read the deploy request", `duration "soon"`}},
		{"health of the wrong type", agentapi.PathRollback, `{"app":"shop","path":"/srv/shop","health":{"interval":true}}`, 400, agentapi.CodeBadRequest, []string{"read the rollback request", "duration"}},
		{"wait_timeout not a duration", agentapi.PathDeploy, `{"app":"shop","path":"/srv/shop","sha":"v1","wait_timeout":"1 minute"}`, 400, agentapi.CodeBadRequest, []string{`duration "1 minute"`}},
		// Well-formed, but nothing to deploy: 404 once the request is read.
		{"release not uploaded", agentapi.PathDeploy, `{"app":"shop","path":"` + path + `","sha":"v1"}`, 404, agentapi.CodeNotFound, []string{"release v1 of shop is not on the host", "upload it first"}},
		{"nothing to roll back to", agentapi.PathRollback, `{"app":"shop","path":"` + path + `"}`, 404, agentapi.CodeNotFound, []string{"rollback of shop"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			status, eb := post(t, url, c.endpoint, c.body)
			if status != c.status || eb.Code != c.code {
				t.Errorf("%d %q, want %d %q: %s", status, eb.Code, c.status, c.code, eb.Error)
			}
			for _, w := range c.want {
				if !strings.Contains(eb.Error, w) {
					t.Errorf("the error %q does not say %q", eb.Error, w)
				}
			}
		})
	}
}

// A request body is read up to maxRequest bytes: one byte more is refused.
func TestAPIDecodeLimit(t *testing.T) {
	_, url := serveAPI(t, newTestAgent(t, &fakeEngine{}))
	path := t.TempDir()
	body := func(size int) string {
		head, tail := `{"app":"shop","path":"`+path+`","sha":"v1","who":"`, `"}`
		return head + strings.Repeat("x", size-len(head)-len(tail)) + tail
	}
	for _, endpoint := range []string{agentapi.PathDeploy, agentapi.PathRollback} {
		// At the limit the request is read, and refused for what it asks.
		if status, eb := post(t, url, endpoint, body(maxRequest)); status != http.StatusNotFound || eb.Code != agentapi.CodeNotFound {
			t.Errorf("%s of %d bytes: %d %+v, want it read (404: no release)", endpoint, maxRequest, status, eb)
		}
		status, eb := post(t, url, endpoint, body(maxRequest+1))
		if status != http.StatusBadRequest || eb.Code != agentapi.CodeBadRequest || !strings.Contains(eb.Error, "request larger than 1048576 bytes") {
			t.Errorf("%s of %d bytes: %d %+v, want 400 too large", endpoint, maxRequest+1, status, eb)
		}
	}
}

// The health check, wait and job timeouts of a request override shipd's defaults; a
// zero or negative one keeps them.
func TestAPIRequestTimings(t *testing.T) {
	a := newTestAgent(t, &fakeEngine{})
	defaults := a.baseRequest(kindDeploy, "shop", "/srv/shop", "v1", nil, nil, 0, agentapi.Origin{})
	cfg := DefaultConfig()
	if defaults.health.Interval != cfg.Health.Interval || defaults.health.Timeout != cfg.Health.Timeout ||
		defaults.health.Deadline != cfg.Health.Deadline || defaults.wait != cfg.WaitTimeout || defaults.job != cfg.JobTimeout {
		t.Errorf("without overrides: %+v %s %s, want the config's %+v", defaults.health, defaults.wait, defaults.job, cfg)
	}
	h := &agentapi.HealthCheck{Interval: agentapi.Duration(time.Second), Timeout: -1, Deadline: agentapi.Duration(time.Minute)}
	req := a.baseRequest(kindDeploy, "shop", "/srv/shop", "v1", nil, h, agentapi.Duration(-time.Second), agentapi.Origin{})
	if req.health.Interval != time.Second || req.health.Timeout != cfg.Health.Timeout || req.health.Deadline != time.Minute || req.wait != cfg.WaitTimeout {
		t.Errorf("with overrides: %+v, wait %s", req.health, req.wait)
	}
}

// One deploy per app at a time: while one runs, a second deploy or a rollback of the
// app is refused with 409 "locked", naming what runs; another app is not held up, and
// the app is free again once the first has answered.
func TestAPIOneDeployPerApp(t *testing.T) {
	a := newTestAgent(t, &fakeEngine{})
	c, url := serveAPI(t, a)
	path := t.TempDir()
	dir := filepath.Join(path, "releases", "v1")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	// The release's compose file is a FIFO: the first deploy, reading it, waits there
	// with the app's lock held until the test writes it.
	file := filepath.Join(dir, "docker-compose.yml")
	if err := syscall.Mkfifo(file, 0o600); err != nil {
		t.Fatal(err)
	}
	req := agentapi.DeployRequest{App: "shop", Path: path, SHA: "v1"}
	first := make(chan error, 1)
	go func() {
		_, err := c.Deploy(context.Background(), req, nil)
		first <- err
	}()
	opened := make(chan *os.File, 1)
	go func() {
		f, err := os.OpenFile(file, os.O_WRONLY, 0)
		if err != nil {
			t.Error(err)
		}
		opened <- f
	}()
	var w *os.File
	select {
	case w = <-opened: // the first deploy reads the release: it holds the lock
	case err := <-first:
		t.Fatalf("the first deploy ended before it read its release: %v", err)
	}
	if w == nil {
		t.FailNow()
	}

	_, err := c.Deploy(context.Background(), agentapi.DeployRequest{App: "shop", Path: path, SHA: "v2"}, nil)
	var ae *agentapi.Error
	if !errors.Is(err, agentapi.ErrLocked) || !errors.As(err, &ae) || ae.Status != http.StatusConflict ||
		!strings.Contains(err.Error(), "app shop is locked: shipd is running its deploy of v1") {
		t.Errorf("a second deploy: %v, want 409 locked by the deploy of v1", err)
	}
	status, eb := post(t, url, agentapi.PathRollback, `{"app":"shop","path":"`+path+`"}`)
	if status != http.StatusConflict || eb.Code != agentapi.CodeLocked {
		t.Errorf("a rollback meanwhile: %d %+v, want 409 locked", status, eb)
	}
	if _, err := c.Deploy(context.Background(), agentapi.DeployRequest{App: "blog", Path: path + "-blog", SHA: "v1"}, nil); !errors.Is(err, agentapi.ErrNotFound) {
		t.Errorf("a deploy of another app meanwhile: %v, want it to go on (to 404: no release)", err)
	}

	// A release shipd refuses: the first deploy ends with 400, nothing touched. The
	// FIFO, open, gives way to a plain file with the same text, which shipd reads
	// again for the problems' line numbers.
	refused := "services:\n  web:\n    image: example.test/web:1\n    ports: [\"8080:8080\"]\n    x-ship: {port: 8080, listen: \"127.0.0.1:1\"}\n"
	if err := os.Remove(file); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, []byte(refused), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := w.WriteString(refused); err != nil {
		t.Fatal(err)
	}
	w.Close()
	if err := <-first; !errors.Is(err, agentapi.ErrBadRequest) || !strings.Contains(err.Error(), "publishes ports") {
		t.Fatalf("the first deploy: %v, want 400: publishes ports", err)
	}

	if _, err := c.Deploy(context.Background(), req, nil); !errors.Is(err, agentapi.ErrBadRequest) {
		t.Errorf("a deploy after the first answered: %v, want it read (400), not locked", err)
	}
}

// While shipd stops or hands over, a deploy is refused with 503.
func TestAPIRefusesDeploysWhileStopping(t *testing.T) {
	a := newTestAgent(t, &fakeEngine{})
	c, _ := serveAPI(t, a)
	a.mu.Lock()
	a.closing = true
	a.mu.Unlock()
	_, err := c.Deploy(context.Background(), agentapi.DeployRequest{App: "shop", Path: t.TempDir(), SHA: "v1"}, nil)
	var ae *agentapi.Error
	if !errors.As(err, &ae) || ae.Code != agentapi.CodeShutdown || ae.Status != http.StatusServiceUnavailable {
		t.Errorf("a deploy while stopping: %v, want 503 %s", err, agentapi.CodeShutdown)
	}
}
