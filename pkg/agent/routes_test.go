package agent_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/moby/moby/client"
	"github.com/shipdeploy/ship/pkg/agentapi"
	"github.com/shipdeploy/ship/test/loadgen"
	"github.com/shipdeploy/ship/test/testenv"
)

// adminImage builds this tree's example app (with ADMIN_PORT) under a tag of its own,
// removed at the end: the shared test image's tag may be rebuilt meanwhile by another
// test process from another tree.
func adminImage(t *testing.T, cli *client.Client) string {
	t.Helper()
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	ref := "ship-test/app-routes:" + hex.EncodeToString(b)
	dir := t.TempDir()
	bin, err := os.ReadFile(testenv.AppBinary(t, dir))
	if err != nil {
		t.Fatal(err)
	}
	dockerfile, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "examples", "app", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	tarball, err := testenv.TarFiles(map[string][]byte{"Dockerfile": dockerfile, "app": bin})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), testenv.Scale(5*time.Minute))
	defer cancel()
	if err := testenv.BuildImage(ctx, cli, tarball, ref); err != nil {
		t.Fatalf("build %s: %v", ref, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), testenv.Scale(time.Minute))
		defer cancel()
		if _, err := cli.ImageRemove(ctx, ref, client.ImageRemoveOptions{Force: true, PruneChildren: true}); err != nil {
			t.Errorf("remove %s: %v", ref, err)
		}
	})
	return ref
}

// TestSeveralRoutes runs shipd (the binary) with one service on two routes: the app on
// host a.test (container port 8080) on a shared plain listener, and its admin port
// (9090) on a listener of its own. Both answer each version; a swap under load on both
// loses no request on either; a version whose admin port does not answer is refused
// and leaves both routes on the old container; a route removed from x-ship.routes stops
// serving, and once added again serves; a restart serves both from the state; a
// release whose other service fails after web switched puts both routes back together.
func TestSeveralRoutes(t *testing.T) {
	front, admin := freeAddr(t), freeAddr(t)
	d := newDaemon(t)
	d.start(false)
	image := adminImage(t, testenv.Docker(t)) // removed after the app's containers
	a := newApp(t)
	a.image = image
	xship := fmt.Sprintf("host: a.test, listen: %q, routes: [{port: 9090, listen: %q}]", front, admin)
	adminEnv := `ADMIN_PORT: "9090"`

	fc, ac := frontClient(front, nil), frontClient(admin, nil)
	// both checks that each route answers version from the container port it names.
	both := func(version string) {
		t.Helper()
		resp, body := get(t, fc, "http://a.test/version")
		if resp.StatusCode != 200 || versionOf(t, body) != version || resp.Header.Get("X-App-Port") != "" {
			t.Errorf("a.test: %s, X-App-Port %q, %q; want 200 from port 8080 with %s", resp.Status, resp.Header.Get("X-App-Port"), body, version)
		}
		resp, body = get(t, ac, "http://"+admin+"/version")
		if resp.StatusCode != 200 || versionOf(t, body) != version || resp.Header.Get("X-App-Port") != "9090" {
			t.Errorf("admin: %s, X-App-Port %q, %q; want 200 from port 9090 with %s", resp.Status, resp.Header.Get("X-App-Port"), body, version)
		}
	}

	frontRelease(t, a, "v1", xship, adminEnv)
	a.mustDeploy(d, "v1")
	both("v1")

	t.Run("status and state list each route", func(t *testing.T) {
		var listens []string
		for _, r := range d.status().Routes {
			if r.App == a.name {
				// Each route: its addresses, names and container port, on the one container.
				_, port, _ := strings.Cut(r.Target, ":")
				listens = append(listens, r.Service+" "+r.Listen+" "+strings.Join(r.Hosts, ",")+" "+port+" "+r.Container)
			}
		}
		container := d.stateFile().Apps[a.name].Routes["web"].Name
		if container == "" {
			t.Fatal("no live container in the state")
		}
		want := []string{"web " + front + " a.test 8080 " + container, "web " + admin + "  9090 " + container}
		if strings.Join(listens, "|") != strings.Join(want, "|") {
			t.Errorf("status routes: %q, want %q", listens, want)
		}
		rs := d.stateFile().Apps[a.name].Routes["web"]
		if rs == nil || rs.Port != 8080 || len(rs.More) != 1 || rs.More[0].Port != 9090 || rs.More[0].Listen != admin || rs.More[0].Container != rs.Container {
			t.Errorf("state route: %+v", rs)
		}
	})

	// loads sends requests to both routes for dur; the function it returns checks that
	// every one was answered 2xx.
	loads := func(dur time.Duration) func() {
		run := func(url, host string) chan *loadgen.Report {
			out := make(chan *loadgen.Report, 1)
			go func() {
				rep, err := loadgen.Run(context.Background(), loadgen.Config{
					URL: url, Host: host, Rate: 100, Duration: dur, Conns: 4, Fresh: 0.3, Timeout: loadTimeout,
				})
				if err != nil {
					t.Error(err)
				}
				out <- rep
			}()
			return out
		}
		app, adm := run("http://"+front+"/version", "a.test"), run("http://"+admin+"/version", "")
		return func() {
			t.Helper()
			for what, ch := range map[string]chan *loadgen.Report{"a.test": app, "admin": adm} {
				rep := <-ch
				if rep == nil {
					t.FailNow()
				}
				t.Logf("%s: %d requests, %d 2xx, %d failed %v", what, rep.Requests, rep.OK, rep.Failed(), rep.Errors)
				noFailures(t, what, rep)
			}
		}
	}

	t.Run("swap under load on both routes", func(t *testing.T) {
		wait := loads(6 * time.Second)
		frontRelease(t, a, "v2", xship, adminEnv)
		a.mustDeploy(d, "v2")
		wait()
		both("v2")
	})

	t.Run("an admin port that does not answer leaves both routes", func(t *testing.T) {
		wait := loads(5 * time.Second)
		frontRelease(t, a, "noadmin", xship) // no ADMIN_PORT: nothing listens on 9090
		res, ev, err := a.deploy(d, a.request("noadmin", 3*time.Second))
		wait()
		if err == nil && res.Result == agentapi.ResultDeployed {
			t.Fatalf("a version whose admin port does not answer was deployed:\n%s", ev)
		}
		if !strings.Contains(ev.String(), ":9090") {
			t.Errorf("the failure does not name the admin port:\n%s", ev)
		}
		both("v2")
	})

	t.Run("a route removed from x-ship.routes stops serving", func(t *testing.T) {
		frontRelease(t, a, "v3", fmt.Sprintf("host: a.test, listen: %q", front), adminEnv)
		a.mustDeploy(d, "v3")
		resp, body := get(t, fc, "http://a.test/version")
		if resp.StatusCode != http.StatusOK || versionOf(t, body) != "v3" {
			t.Errorf("a.test after v3: %s %q", resp.Status, body)
		}
		if _, err := ac.Get("http://" + admin + "/version"); err == nil {
			t.Errorf("the admin listener still answers after its route was removed")
		}
		if rs := d.stateFile().Apps[a.name].Routes["web"]; rs == nil || len(rs.More) != 0 {
			t.Errorf("state route after v3: %+v", rs)
		}
	})

	// Last: the listeners the restart takes from the (fake) systemd's store are not
	// removed from it afterwards.
	t.Run("a route added again, and a restart that serves both from the state", func(t *testing.T) {
		frontRelease(t, a, "v4", xship, adminEnv)
		a.mustDeploy(d, "v4")
		both("v4")
		wait := loads(4 * time.Second)
		d.stop(syscall.SIGTERM)
		d.start(true)
		wait()
		both("v4")
	})

	t.Run("a failure after the switch puts both routes back", func(t *testing.T) {
		// web (both routes) switches to v5, then zz fails its check: the release is
		// restored, and both routes go back to v4's container together.
		frontRelease(t, a, "v5", xship, adminEnv)
		file := filepath.Join(a.path, "releases", "v5", "docker-compose.yml")
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		zz := fmt.Sprintf("  zz:\n    image: %s\n%s    environment:\n      FAIL_HEALTH: \"1\"\n    stop_grace_period: 2s\n    x-ship: {port: 8080, health: /up, listen: %q}\n", a.image, a.pull, freeAddr(t))
		if err := os.WriteFile(file, append(data, zz...), 0o600); err != nil {
			t.Fatal(err)
		}
		wait := loads(8 * time.Second)
		res, ev, err := a.deploy(d, a.request("v5", 3*time.Second))
		wait()
		if err == nil && res.Result == agentapi.ResultDeployed {
			t.Fatalf("a release with a failing service was deployed:\n%s", ev)
		}
		switches := 0
		for _, line := range strings.Split(ev.String(), "\n") {
			if strings.Contains(line, " web ") && strings.Contains(line, "now routes to") {
				switches++
			}
		}
		if switches != 4 {
			t.Errorf("web's routes switched %d times, want 4 (both to v5, both back to v4):\n%s", switches, ev)
		}
		both("v4")
	})
}
