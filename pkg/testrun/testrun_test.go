package testrun

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/moby/moby/client"

	"github.com/shipdeploy/ship/pkg/compose"
	"github.com/shipdeploy/ship/test/testenv"
)

// testStack is a test compose file like the example app's: web, and a test service
// that checks web's /version, both built FROM the app image.
const testStack = `
services:
  web:
    build: ./app
    environment:
      VERSION: test
    healthcheck:
      test: ["CMD", "/app", "health"]
      interval: 500ms
      timeout: 2s
      retries: 20
  test:
    build: ./app
    command: ["check", "-timeout=${CHECK_TIMEOUT:-20s}", "-expect", "${EXPECT_VERSION:-test}", "http://web:8080/version"]
    depends_on:
      web:
        condition: service_healthy
`

func stackDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "app"), 0o755); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"docker-compose.test.yml": testStack,
		"app/Dockerfile":          "FROM " + testenv.AppImageRef + "\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// events records a run's events.
type events struct {
	mu  sync.Mutex
	all []Event
}

func (e *events) add(ev Event) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.all = append(e.all, ev)
}

func (e *events) has(kind, service, text string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.ContainsFunc(e.all, func(ev Event) bool {
		return ev.Kind == kind && ev.Service == service && strings.Contains(ev.Msg, text)
	})
}

// assertGone fails the test if anything of project is left on the engine.
func assertGone(t *testing.T, cli *client.Client, project string) {
	t.Helper()
	ctx := context.Background()
	cs, err := cli.ContainerList(ctx, client.ContainerListOptions{All: true,
		Filters: make(client.Filters).Add("label", "com.docker.compose.project="+project)})
	if err != nil || len(cs.Items) > 0 {
		t.Errorf("containers of %s left: %d (%v)", project, len(cs.Items), err)
	}
	nets, err := cli.NetworkList(ctx, client.NetworkListOptions{
		Filters: make(client.Filters).Add("label", "com.docker.compose.project="+project)})
	if err != nil || len(nets.Items) > 0 {
		t.Errorf("networks of %s left: %d (%v)", project, len(nets.Items), err)
	}
	imgs, err := cli.ImageList(ctx, client.ImageListOptions{Filters: make(client.Filters).Add("reference", project+"/*")})
	if err != nil || len(imgs.Items) > 0 {
		t.Errorf("test images of %s left: %d (%v)", project, len(imgs.Items), err)
	}
}

func TestRun(t *testing.T) {
	cli := testenv.Docker(t)
	testenv.AppImage(t, cli)
	for _, tc := range []struct {
		name, expect, timeout string
		code                  int
		err                   error
		exitLine              string
	}{
		{"passes", "test", "20s", 0, nil, "exited with code 0"},
		// A wrong version never matches: the check may give up at once.
		{"fails", "nope", "1s", 1, ErrTestsFailed, "exited with code 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var ev events
			res, err := Run(context.Background(), cli, Options{
				Dir: stackDir(t), File: "docker-compose.test.yml", Service: "test", App: "testrun",
				Environ:  []string{"EXPECT_VERSION=" + tc.expect, "CHECK_TIMEOUT=" + tc.timeout},
				Progress: ev.add,
			})
			if !errors.Is(err, tc.err) || (tc.err == nil) != (err == nil) {
				t.Fatalf("Run: %v, want %v", err, tc.err)
			}
			if res.ExitCode != tc.code || !strings.HasPrefix(res.Project, "testrun-test-") || res.Duration <= 0 {
				t.Errorf("result = %+v, want exit code %d", res, tc.code)
			}
			if !ev.has("build", "web", "building "+res.Project+"/") || !ev.has("exit", "test", tc.exitLine) ||
				!ev.has("log", "test", "http://web:8080/version") || !ev.has("cleanup", "", res.Project) {
				t.Errorf("events lack the build, the test's log, its exit or the clean-up: %+v", ev.all)
			}
			assertGone(t, cli, res.Project)
		})
	}
}

func TestRunUnknownService(t *testing.T) {
	_, err := Run(context.Background(), nil, Options{Dir: stackDir(t), File: "docker-compose.test.yml", Service: "tests", App: "testrun"})
	if !errors.Is(err, compose.ErrInvalid) || !strings.Contains(err.Error(), `no service "tests"`) ||
		!strings.Contains(err.Error(), "test, web") && !strings.Contains(err.Error(), "web, test") {
		t.Errorf("an unknown test service: %v, want it named with the services there are", err)
	}
}
