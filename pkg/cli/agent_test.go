package cli

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/shipdeploy/ship/pkg/agentapi"
	"github.com/shipdeploy/ship/pkg/deploy"
)

// builtShipd builds cmd/shipd for linux with Version v1.2.3 linked in.
func builtShipd(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "shipd")
	cmd := exec.Command("go", "build", "-ldflags", "-X github.com/shipdeploy/ship/pkg/version.Version=v1.2.3", "-o", bin, "github.com/shipdeploy/ship/cmd/shipd")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build shipd: %v\n%s", err, out)
	}
	return bin
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, data, 0o755); err != nil {
		t.Fatal(err)
	}
}

func TestShipdFinder(t *testing.T) {
	bin := builtShipd(t)
	sf, err := readShipd(bin)
	if err != nil {
		t.Fatal(err)
	}
	if sf.goos != "linux" || sf.goarch != runtime.GOARCH || sf.build.version != "v1.2.3" {
		t.Fatalf("read %+v", sf)
	}
	arch := runtime.GOARCH
	other := "arm64"
	if arch == "arm64" {
		other = "amd64"
	}
	want := build{version: "v1.2.3", commit: sf.build.commit}

	t.Run("shipd beside shipctl", func(t *testing.T) {
		dir := t.TempDir()
		copyFile(t, bin, filepath.Join(dir, "shipd"))
		f := &shipdFinder{dir: dir, want: want}
		data, from, err := f.find(arch)
		if err != nil || from != filepath.Join(dir, "shipd") || len(data) == 0 {
			t.Fatalf("find: %s, %v", from, err)
		}
		// Another architecture: shipd is the wrong one, and the hint says how to build it.
		_, _, err = f.find(other)
		if err == nil || !strings.Contains(err.Error(), "shipd is for linux/"+arch) || !strings.Contains(err.Error(), "GOARCH="+other) || !strings.Contains(err.Error(), "shipd-linux-"+other) {
			t.Errorf("find %s: %v", other, err)
		}
	})
	t.Run("shipd-linux-ARCH first", func(t *testing.T) {
		dir := t.TempDir()
		copyFile(t, bin, filepath.Join(dir, "shipd-linux-"+arch))
		os.WriteFile(filepath.Join(dir, "shipd"), []byte("not a binary"), 0o755)
		f := &shipdFinder{dir: dir, want: want}
		if _, from, err := f.find(arch); err != nil || filepath.Base(from) != "shipd-linux-"+arch {
			t.Errorf("find: %s, %v", from, err)
		}
	})
	t.Run("another version", func(t *testing.T) {
		dir := t.TempDir()
		copyFile(t, bin, filepath.Join(dir, "shipd"))
		f := &shipdFinder{dir: dir, want: build{version: "v2.0.0"}}
		_, _, err := f.find(arch)
		if err == nil || !strings.Contains(err.Error(), "shipd is shipd v1.2.3") || !strings.Contains(err.Error(), "not v2.0.0") {
			t.Errorf("find: %v", err)
		}
	})
	t.Run("not shipd", func(t *testing.T) {
		self, err := os.Executable()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := readShipd(self); err == nil || !strings.Contains(err.Error(), "is not shipd") {
			t.Errorf("readShipd of the test binary: %v", err)
		}
	})
	t.Run("--binary", func(t *testing.T) {
		f := &shipdFinder{explicit: bin, want: build{version: "v2.0.0"}}
		if _, from, err := f.find(arch); err != nil || from != bin || !strings.Contains(f.mismatch, "the versions differ") {
			t.Errorf("find: %s, %v, %q", from, err, f.mismatch)
		}
		f = &shipdFinder{explicit: bin, want: want}
		if _, _, err := f.find(other); exitCode(err) != ExitUsage {
			t.Errorf("--binary for another architecture: %v (exit %d)", err, exitCode(err))
		}
	})
}

func TestRenderAgentStatus(t *testing.T) {
	since := time.Date(2025, 3, 1, 12, 0, 0, 0, time.Local)
	st := &agentapi.Status{
		Version: "shipd v1.2.3 (abc) go1.26 linux/amd64", PID: 42, Started: since, Uptime: agentapi.Duration(90 * time.Second),
		Routes: []agentapi.Route{{App: "shop", Service: "web", Listen: ":80", Target: "172.18.0.3:8080", Container: "shop-web-3",
			Release: "aaaaaaaaaaaaaaaa", Since: since, Requests: 12}},
		Apps: []agentapi.App{{App: "shop", Path: "/srv/shop", Release: "aaaaaaaaaaaaaaaa", Previous: "bbbbbbbbbbbbbbbb", Since: since,
			LastResult: "failed", LastError: "deploy of cccccccccccc was cut off by a shipd restart\nmore", LastTime: since}},
	}
	io, out, _ := testIO("", false)
	g := &Globals{IO: io}
	renderAgentStatus(g, newPrinter(g), deploy.HostAgent{Host: "deploy@web1", Status: st})
	renderAgentStatus(g, newPrinter(g), deploy.HostAgent{Host: "deploy@web2", Err: errors.New("shipd does not answer")})
	want := `deploy@web1: shipd v1.2.3 (abc) go1.26 linux/amd64, pid 42, up 1m30s (since 2025-03-01 12:00:00)
  routes:
    shop/web  :80 -> 172.18.0.3:8080  (shop-web-3, release aaaaaaaaaaaa, since 2025-03-01 12:00:00, 12 requests)
  apps:
    shop  live aaaaaaaaaaaa since 2025-03-01 12:00:00, previous bbbbbbbbbbbb; last: failed at 2025-03-01 12:00:00 (deploy of cccccccccccc was cut off by a shipd restart)
      /srv/shop
deploy@web2: shipd does not answer
`
	if out.String() != want {
		t.Errorf("got:\n%s\nwant:\n%s", out.String(), want)
	}
}
