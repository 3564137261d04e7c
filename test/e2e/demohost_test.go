package e2e

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/shipdeploy/ship/pkg/engine"
	"github.com/shipdeploy/ship/test/testenv"
)

// reachableDemo points the example's demo environment in dir at a real sshd of its
// own (ship's preflight reaches and locks its hosts before it builds), under an app
// name and a path of the test's own, and returns the app's name, its path and the
// environment variables that reach the host. The app's containers are removed at the
// end of the test.
func reachableDemo(t *testing.T, dir string) (app, path string, env []string) {
	t.Helper()
	sshd := testenv.SSHD(t)
	app = "e2e-ship-" + randomHex(3)
	path = filepath.Join(t.TempDir(), "srv", app)
	cfgPath := filepath.Join(dir, "ship.yaml")
	data, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	cfg := strings.NewReplacer(
		"app: example", "app: "+app,
		"hosts: [root@127.0.0.1:2222]", "hosts: ["+sshd.User+"@"+sshd.Addr+"]",
		"path: /srv/ship-example", "path: "+path,
	).Replace(string(data))
	if !strings.Contains(cfg, sshd.Addr) || !strings.Contains(cfg, "app: "+app) {
		t.Fatalf("fixture: the example's ship.yaml changed:\n%s", data)
	}
	writeFile(t, cfgPath, cfg)
	if err := os.MkdirAll(filepath.Join(dir, "deploy"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "deploy", "known_hosts"), knownhosts.Line([]string{knownhosts.Normalize(sshd.Addr)}, sshd.HostKey)+"\n")
	git(t, dir, "add", "-A")
	git(t, dir, "commit", "-q", "-m", "demo on a test sshd")
	key, err := os.ReadFile(sshd.UserKeyFile)
	if err != nil {
		t.Fatal(err)
	}
	cli := testenv.Docker(t)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := engine.New(cli).Down(ctx, app, engine.DownOptions{Volumes: true}); err != nil {
			t.Logf("clean up %s: %v", app, err)
		}
	})
	return app, path, []string{"HOME=" + t.TempDir(), "SSH_AUTH_SOCK=", "SHIP_SSH_KEY=" + string(key)}
}

// busyPort is a port on 127.0.0.1 this test listens on until it ends: a container
// that publishes it cannot start.
func busyPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l.Addr().(*net.TCPAddr).Port
}
