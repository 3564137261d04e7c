package agent

import (
	"context"
	"log/slog"
	"net"
	"os"
	"strings"
	"testing"

	"github.com/shipdeploy/ship/pkg/proxy"
	"github.com/shipdeploy/ship/pkg/release"
)

func TestCheckRequest(t *testing.T) {
	tests := []struct {
		app, path, sha string
		bad            string
	}{
		{"web", "/srv/web", "0123abc", ""},
		{"web_2", "/srv/web", "0123abc-dirty-5f3a", ""},
		{"Web", "/srv/web", "abc", "app"},
		{"web", "srv/web", "abc", "path"},
		{"web", "/srv/../etc", "abc", "path"},
		{"web", "/", "abc", "path"},
		{"web", "/srv/web", "../abc", "sha"},
		{"web", "/srv/web", "", "sha"},
	}
	for _, tt := range tests {
		err := checkRequest(tt.app, tt.path, tt.sha, true)
		if (err != nil) != (tt.bad != "") || err != nil && !strings.Contains(err.Error(), tt.bad) {
			t.Errorf("%s %s %s: %v, want a problem with %q", tt.app, tt.path, tt.sha, err, tt.bad)
		}
	}
	if err := checkRequest("web", "/srv/web", "", false); err != nil {
		t.Errorf("a rollback without a sha: %v", err)
	}
}

func TestLookupAuth(t *testing.T) {
	auth := map[string]string{
		"reg.example.com:5000/web/app:abc": "exact",
		"reg.example.com:5000/web/other":   "repo",
		"reg.example.com:5000":             "host",
		"localhost/x":                      "localrepo",
	}
	for image, want := range map[string]string{
		"reg.example.com:5000/web/app:abc":    "exact",
		"reg.example.com:5000/web/other:def":  "repo",
		"reg.example.com:5000/web/other@sha2": "repo",
		"reg.example.com:5000/web/app:xyz":    "host",
		"postgres:16":                         "",
		"localhost/x:1":                       "localrepo",
	} {
		if got := lookupAuth(auth, image); got != want {
			t.Errorf("%s: %q, want %q", image, got, want)
		}
	}
}

// writeRelease writes a compose file as releases/<sha>/docker-compose.yml under dir.
func writeRelease(t *testing.T, dir *release.Store, sha, yaml string) {
	t.Helper()
	os.MkdirAll(dir.Layout.Release(sha), 0o755)
	if err := os.WriteFile(dir.Layout.ComposeFile(sha), []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestLoadReleaseKeepsDollarsLiteral(t *testing.T) {
	dir := newStore(t.TempDir())
	writeRelease(t, dir, "abc", "services:\n  web:\n    image: app\n    environment:\n      PASSWORD: a$b\n    x-ship: {port: 8080, listen: ':80', health: /up}\n")
	p, err := loadRelease(context.Background(), "web", dir, "abc")
	if err != nil {
		t.Fatal(err)
	}
	if v := p.Services["web"].Environment["PASSWORD"]; v == nil || *v != "a$b" {
		t.Errorf("PASSWORD = %v: a resolved release file is not interpolated again", v)
	}
	if s := p.Ship["web"]; s.Port != 8080 || s.Health != "/up" || p.Name != "web" || p.WorkingDir != dir.Layout.Release("abc") {
		t.Errorf("project %s in %s, x-ship %+v", p.Name, p.WorkingDir, s)
	}
	if _, err := loadRelease(context.Background(), "web", dir, "missing"); !os.IsNotExist(err) {
		t.Errorf("missing release: %v", err)
	}
}

func TestCheckReleaseRefusesByService(t *testing.T) {
	dir := newStore(t.TempDir())
	writeRelease(t, dir, "abc", `services:
  web:
    image: app
    ports: ["8080:8080"]
    container_name: web
    volumes: ["data:/data", "ro:/ro:ro"]
    x-ship: {port: 8080, listen: "127.0.0.1:8081"}
  api:
    image: app
    x-ship: {port: 8080, listen: ":9090"}
  migrate:
    image: app
    depends_on: [api]
    x-ship: {job: pre-deploy}
  db:
    image: postgres
    volumes: ["data:/var/lib/postgresql/data"]
volumes:
  data: {}
  ro: {}
`)
	p, err := loadRelease(context.Background(), "web", dir, "abc")
	if err != nil {
		t.Fatal(err)
	}
	a := &agent{log: slog.New(slog.DiscardHandler), routes: map[string]*liveRoute{}}
	ln, err := proxyListener(t)
	if err != nil {
		t.Fatal(err)
	}
	a.routes["other/site"] = &liveRoute{app: "other", service: "site", listen: "0.0.0.0:9090", route: proxy.NewRoute("other/site", ln, proxy.RouteOptions{})}
	err = a.checkRelease("web", dir, "abc", p)
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{
		`service "web" publishes ports`, `service "web" has container_name`, `named volume "data" writable`,
		`service "api": listen :9090 is already served by other/site`, `service "migrate": a pre-deploy job`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("no %q in:\n%v", want, err)
		}
	}
	if strings.Contains(err.Error(), `"ro"`) || strings.Contains(err.Error(), `"db"`) {
		t.Errorf("a read-only volume or a service that is not routed was refused:\n%v", err)
	}

	if mode, why := replaceMode(p, "db"); mode != modeStopFirst || !strings.Contains(why, "data") {
		t.Errorf("db: %s (%s)", mode, why)
	}
	if mode, _ := replaceMode(p, "api"); mode != modeBlueGreen {
		t.Errorf("api: %s", mode)
	}
	if got := strings.Join(serviceOrder(p), ","); got != "api,db,web" {
		t.Errorf("order %s", got)
	}
}

func TestServiceOrderFollowsDependencies(t *testing.T) {
	dir := newStore(t.TempDir())
	writeRelease(t, dir, "abc", `services:
  a: {image: x, depends_on: [c]}
  b: {image: x}
  c: {image: x, depends_on: [b]}
  worker: {image: x}
`)
	p, err := loadRelease(context.Background(), "web", dir, "abc")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(serviceOrder(p), ","); got != "b,c,a,worker" {
		t.Errorf("order %s", got)
	}
	if mode, _ := replaceMode(p, "worker"); mode != modeStartFirst {
		t.Errorf("worker: %s", mode)
	}
}

func proxyListener(t *testing.T) (net.Listener, error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err == nil {
		t.Cleanup(func() { ln.Close() })
	}
	return ln, err
}

func TestCheckWritable(t *testing.T) {
	dir := t.TempDir()
	if err := checkWritable(dir); err != nil {
		t.Fatal(err)
	}
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Errorf("the probe left %v", left)
	}
	if err := checkWritable(dir + "/missing"); err == nil || !strings.Contains(err.Error(), "may not write the app's folder") {
		t.Errorf("a folder that is not there: %v", err)
	}
}
