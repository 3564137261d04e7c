package testrun_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shipdeploy/ship/pkg/compose"
	"github.com/shipdeploy/ship/pkg/testrun"
	"github.com/shipdeploy/ship/test/testenv"
)

// events collects a run's events; safe for the run's goroutines.
type events struct {
	mu   sync.Mutex
	list []testrun.Event
	on   func(testrun.Event) // called for each, outside the lock
}

func (e *events) add(ev testrun.Event) {
	e.mu.Lock()
	e.list = append(e.list, ev)
	on := e.on
	e.mu.Unlock()
	if on != nil {
		on(ev)
	}
}

// has reports whether an event of kind for service has a message containing msg.
func (e *events) has(kind, service, msg string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, ev := range e.list {
		if ev.Kind == kind && (service == "" || ev.Service == service) && strings.Contains(ev.Msg, msg) {
			return true
		}
	}
	return false
}

func (e *events) String() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var b strings.Builder
	for _, ev := range e.list {
		b.WriteString(ev.Kind + " " + ev.Service + ": " + ev.Msg + "\n")
	}
	return b.String()
}

// app is the app's name in these tests, this process's own: its test projects are
// app-test-<random>, swept by that name after a killed run.
var app = fmt.Sprintf("testrun-%d", os.Getpid())

// options run the example app's test stack in dir, environ added to the process's.
func options(dir string, ev *events, environ ...string) testrun.Options {
	return testrun.Options{
		Dir: dir, File: "docker-compose.test.yml", Service: "test", App: app,
		Environ: append(os.Environ(), environ...), Progress: ev.add,
	}
}

// TestRun runs the example app's test stack (FROM scratch images of its static
// binary) on this machine's engine: passing, failing, timing out and cancelled.
// Each run has a project name of its own, and must leave nothing behind.
func TestRun(t *testing.T) {
	api := testenv.Docker(t) // skips (fails in CI) without an engine
	testenv.Track(t, "project", app)
	dir := testenv.ExampleRepo(t, nil)

	t.Run("passes", func(t *testing.T) {
		ev := &events{}
		res, err := testrun.Run(t.Context(), api, options(dir, ev))
		if err != nil {
			t.Fatalf("Run: %v\nevents:\n%s", err, ev)
		}
		if res.ExitCode != 0 || !strings.HasPrefix(res.Project, app+"-test-") || res.Duration <= 0 {
			t.Errorf("result %+v, want exit 0 of an %s-test-* project", res, app)
		}
		for _, want := range []struct{ kind, service, msg string }{
			{"build", "web", "building " + res.Project + "/"},
			{"log", "test", "ok   http://web:8080/version"}, // the suite's own output, every line
			{"exit", "test", "exited with code 0"},
			{"cleanup", "", res.Project},
		} {
			if !ev.has(want.kind, want.service, want.msg) {
				t.Errorf("no %s event of %q with %q:\n%s", want.kind, want.service, want.msg, ev)
			}
		}
		noLeftovers(t, res.Project)
	})

	t.Run("fails", func(t *testing.T) {
		ev := &events{}
		res, err := testrun.Run(t.Context(), api, options(dir, ev, "EXPECT_VERSION=nope", "CHECK_TIMEOUT=1s"))
		if !errors.Is(err, testrun.ErrTestsFailed) || !strings.Contains(err.Error(), `"test"`) {
			t.Fatalf("Run: %v, want the test service's failure\nevents:\n%s", err, ev)
		}
		if res.ExitCode == 0 {
			t.Errorf("exit code 0 for a failed suite")
		}
		if !ev.has("log", "test", "FAIL http://web:8080/") {
			t.Errorf("the suite's failure is not in the logs:\n%s", ev)
		}
		noLeftovers(t, res.Project)
	})

	t.Run("timeout", func(t *testing.T) {
		ev := &events{}
		// The suite keeps trying for ten minutes: only the run's timeout ends it.
		o := options(dir, ev, "EXPECT_VERSION=nope", "CHECK_TIMEOUT=10m")
		o.Timeout = 20 * time.Second
		res, err := testrun.Run(t.Context(), api, o)
		if !errors.Is(err, testrun.ErrTestsFailed) || !strings.Contains(err.Error(), "longer than its timeout") {
			t.Fatalf("Run: %v, want the timeout\nevents:\n%s", err, ev)
		}
		noLeftovers(t, res.Project)
	})

	t.Run("cancelled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		sock := testenv.DockerSocket(t)
		var project string
		var running []json.RawMessage
		var listErr error
		ev := &events{on: func(e testrun.Event) {
			if e.Kind == "build" && project == "" {
				// "building <project>/web:test"
				project, _, _ = strings.Cut(strings.TrimPrefix(e.Msg, "building "), "/")
			}
			if e.Kind == "engine" && e.Service == "test" && strings.Contains(e.Msg, "started") {
				// What noLeftovers looks for is there while the suite runs.
				running, listErr = engineList(ctx, sock, containersOf(project))
				cancel() // the suite is running (and silent until it gives up)
			}
		}}
		res, err := testrun.Run(ctx, api, options(dir, ev, "EXPECT_VERSION=nope", "CHECK_TIMEOUT=10m"))
		if !errors.Is(err, context.Canceled) || errors.Is(err, testrun.ErrTestsFailed) {
			t.Fatalf("Run: %v, want cancelled, not failed\nevents:\n%s", err, ev)
		}
		if project != res.Project || listErr != nil || len(running) != 2 {
			t.Errorf("while the suite ran, project %q (want %q) had %d containers (want web and test): %v",
				project, res.Project, len(running), listErr)
		}
		noLeftovers(t, res.Project)
	})
}

func TestRunNoSuchService(t *testing.T) {
	dir := t.TempDir()
	file := "services:\n  web:\n    image: example/web\n  check:\n    image: example/check\n"
	if err := os.WriteFile(dir+"/docker-compose.test.yml", []byte(file), 0o644); err != nil {
		t.Fatal(err)
	}
	// Refused before any engine is asked: none is given.
	_, err := testrun.Run(t.Context(), nil, options(dir, &events{}))
	if !errors.Is(err, compose.ErrInvalid) {
		t.Fatalf("Run: %v, want the file refused", err)
	}
	for _, want := range []string{"docker-compose.test.yml", `"test"`, "check, web"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not say %q: %v", want, err)
		}
	}
}

// noLeftovers fails if the engine still has a container, network or volume of
// project, or an image of its (named <project>/...).
func noLeftovers(t *testing.T, project string) {
	t.Helper()
	sock := testenv.DockerSocket(t)
	label := url.QueryEscape(`{"label":["com.docker.compose.project=` + project + `"]}`)
	ref := url.QueryEscape(`{"reference":["` + project + `/*"]}`)
	for _, path := range []string{containersOf(project), "/networks?filters=" + label, "/volumes?filters=" + label, "/images/json?filters=" + ref} {
		left, err := engineList(context.WithoutCancel(t.Context()), sock, path)
		if err != nil {
			t.Fatal(err)
		}
		if len(left) > 0 {
			t.Errorf("left behind: GET %s: %s", path, left)
		}
	}
}

func containersOf(project string) string {
	return "/containers/json?all=1&filters=" + url.QueryEscape(`{"label":["com.docker.compose.project=`+project+`"]}`)
}

// engineList GETs a list from the Docker Engine API over its unix socket, with no
// SDK: what these tests check stays put whichever client testrun is built on.
func engineList(ctx context.Context, sock, path string) ([]json.RawMessage, error) {
	hc := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		},
	}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://docker"+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s %s", path, resp.Status, body)
	}
	// /volumes answers {"Volumes": [...]}, the others a list.
	var list []json.RawMessage
	if strings.HasPrefix(path, "/volumes") {
		var wrapped struct{ Volumes []json.RawMessage }
		err = json.Unmarshal(body, &wrapped)
		list = wrapped.Volumes
	} else {
		err = json.Unmarshal(body, &list)
	}
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", path, err)
	}
	return list, nil
}
