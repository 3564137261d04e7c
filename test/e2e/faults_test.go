package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"
)

// TestDeployCtrlCDuringGit (issue 9, item 9): Ctrl-C while shipctl's first git step
// runs is a cancellation (exit 130), not a failure of git ("signal: killed", exit 1).
func TestDeployCtrlCDuringGit(t *testing.T) {
	t.Parallel()
	s := newSite(t, siteOptions{})
	p := deployInGit(t, s, false)
	if err := p.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	r := p.wait(t)
	if r.code != 130 || strings.Contains(r.stderr, "signal: killed") {
		t.Errorf("Ctrl-C during git: want exit 130, not git's death\n%s", r)
	}
	s.assertUntouched()
}

// TestDeployPathWithDotDot (issue 9, item 9): an environment's path with ".." is
// refused with ship.yaml's line (exit 2) instead of cleaned into another folder.
func TestDeployPathWithDotDot(t *testing.T) {
	t.Parallel()
	s := newSite(t, siteOptions{})
	cfg, err := os.ReadFile(filepath.Join(s.dir, "ship.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	odd := s.path + "/../other"
	s.write("ship.yaml", strings.Replace(string(cfg), "path: "+s.path, "path: "+odd, 1))
	s.commit("a path with ..")
	r := s.deploy(2, "--untested")
	if !strings.Contains(r.stderr, "ship.yaml:6:") || !strings.Contains(r.stderr, `contains ".."`) {
		t.Errorf("the refusal does not name the line and the fault:\n%s", r)
	}
	s.assertUntouched()
	if _, err := os.Stat(filepath.Join(filepath.Dir(s.path), "other")); !os.IsNotExist(err) {
		t.Errorf("the cleaned path was used: %v", err)
	}
}

// TestDeployDiskFull (issue 9, item 9): a host whose disk is full (the app's folder on
// a small tmpfs, filled) fails the deploy with a message that says the disk may be
// full, on which host and where to look, not only sftp's "Failure".
func TestDeployDiskFull(t *testing.T) {
	t.Parallel()
	s := newSite(t, siteOptions{})
	s.push(git(t, s.dir, "rev-parse", "HEAD"))
	if err := os.MkdirAll(s.path, 0o755); err != nil {
		t.Fatal(err)
	}
	// The test's sshd runs on this machine, so a mount here is on its host.
	if err := syscall.Mount("tmpfs", s.path, "tmpfs", 0, "size=64k"); err != nil {
		t.Fatalf("mount a small tmpfs (the test needs root): %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(s.path, syscall.MNT_DETACH) })
	_ = os.WriteFile(filepath.Join(s.path, "filler"), make([]byte, 128<<10), 0o644) // fails when full

	r := s.run("deploy", "e2e", "--untested")
	if r.code == 0 {
		t.Fatalf("the deploy to a full disk succeeded:\n%s", r)
	}
	for _, want := range []string{"disk of " + s.dest + " may be full", "df -h " + s.path} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("the failure does not say %q:\n%s", want, r)
		}
	}
	if cs := s.containers(); len(cs) > 0 {
		t.Errorf("the app has containers: %v", cs)
	}
}

// TestAgentRealIP (issue 9, item 9): shipd's front door tells the app the client's
// address in X-Real-IP as it saw it; a client's own X-Real-IP does not pass through.
func TestAgentRealIP(t *testing.T) {
	t.Parallel()
	s := newAgentSite(t)
	sha := s.version("v1")
	d := startShipd(t)
	s.env = append(s.env, "SHIP_AGENT_SOCKET="+d.sock)
	s.deploy(0, "--sha", sha, "--untested")

	req, _ := http.NewRequest(http.MethodGet, "http://"+s.listen+"/headers", nil)
	req.Header.Set("X-Real-IP", "203.0.113.9")
	req.Header.Set("X-Forwarded-For", "203.0.113.9")
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("GET /headers through shipd: %v", err)
	}
	defer resp.Body.Close()
	var got map[string]string
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /headers through shipd: %s, %v", resp.Status, err)
	}
	if got["x-real-ip"] != "127.0.0.1" || got["x-forwarded-for"] != "127.0.0.1" {
		t.Errorf("the app was told X-Real-IP %q, X-Forwarded-For %q; want the client's address as shipd saw it, 127.0.0.1", got["x-real-ip"], got["x-forwarded-for"])
	}
}

// TestDeployCtrlCWhileStopping (issue 9, item 3): Ctrl-C while the agentless deploy
// stops the old container. The stop is slow (the app ignores its stop signal, so the
// engine waits out stop_grace_period), and the engine finishes it whatever the client
// does; the restore must judge the previous release from what runs once that stop is
// over, not from a container on its way out. The user is told the previous release
// is back only if it is: afterwards the app's web container runs, healthy, with the
// previous release's image and answers on its port; else the exit is 5.
func TestDeployCtrlCWhileStopping(t *testing.T) {
	t.Parallel()
	s := newSite(t, siteOptions{})
	slowStop := func(c string) string {
		return strings.Replace(c, "    healthcheck:", "    stop_signal: SIGWINCH\n    stop_grace_period: 6s\n    healthcheck:", 1)
	}
	shaA := s.editCompose("slow stop", slowStop)
	s.push(shaA)
	s.deploy(0, "--untested")
	oldWeb := s.containers()["web"]
	if oldWeb.State != "running" {
		t.Fatalf("web after the first deploy: %+v", oldWeb)
	}

	shaB := s.editCompose("v2", func(c string) string {
		return strings.Replace(c, "VERSION: ${VERSION:-v1}", "VERSION: v2", 1)
	})
	s.push(shaB)
	p := start(t, s.dir, s.env, "deploy", "e2e", "--untested", "--yes")
	p.waitFor(t, ": web: stopping", 2*time.Minute)
	if err := p.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	r := p.wait(t)
	t.Logf("shipctl after Ctrl-C:\n%s", r)

	// Whatever shipctl said, wait until the old container's stop is over: the engine
	// carries it out even though the client went away.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res := s.cli.ContainerWait(ctx, oldWeb.ID, client.ContainerWaitOptions{Condition: container.WaitConditionNotRunning})
	select {
	case <-res.Result:
	case err := <-res.Error:
		if !cerrdefs.IsNotFound(err) {
			t.Fatalf("wait for the old container: %v", err)
		}
	}

	web := s.containers()["web"]
	running := web.State == "running" && web.Image == s.reg.Addr+"/example/web:"+shaA
	healthy := false
	if running {
		h := s.inspect(web.ID).State.Health
		healthy = h != nil && h.Status == "healthy"
	}
	switch r.code {
	case 130:
		if !strings.Contains(r.stdout+r.stderr, "previous release restored") {
			t.Errorf("exit 130 without saying that the previous release is back:\n%s", r)
		}
		if !running || !healthy || web.ID == oldWeb.ID {
			t.Errorf("shipctl said the previous release was restored, but web is %s %s (healthy %v; the container on its way out was %s)", web.Image, web.State, healthy, oldWeb.ID[:12])
		}
		if s.current() != shaA {
			t.Errorf("current = %q, want %s", s.current(), shaA)
		}
	case 5:
		// Restore failed: that is allowed to happen, but must not be claimed otherwise.
		if strings.Contains(r.stdout, "previous release restored") {
			t.Errorf("exit 5 and 'previous release restored':\n%s", r)
		}
	default:
		t.Fatalf("want exit 130 (cancelled, previous release back) or 5 (restore failed):\n%s", r)
	}
	if r.code == 130 {
		resp, err := (&http.Client{Timeout: 10 * time.Second}).Get("http://127.0.0.1:" + s.webPort() + "/version")
		if err != nil {
			t.Fatalf("the restored app does not answer: %v", err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("the restored app answers %s", resp.Status)
		}
	}
}

// webPort is the host port the app's web publishes (WEB_PORT of .env.e2e).
func (s *site) webPort() string {
	s.t.Helper()
	data, err := os.ReadFile(filepath.Join(s.dir, ".env.e2e"))
	if err != nil {
		s.t.Fatal(err)
	}
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, "WEB_PORT="); ok {
			return v
		}
	}
	s.t.Fatal("no WEB_PORT in .env.e2e")
	return ""
}

// TestDeployAgentlessWaitsForHealthPath (issue 10, item 4; issue 13, item 4): without
// shipd, x-ship.health is waited for before the deploy reports success. The release's
// image health check is off and the app takes 3s before it listens: once shipctl has
// said "deployed", the app answers on its published port at once.
func TestDeployAgentlessWaitsForHealthPath(t *testing.T) {
	t.Parallel()
	s := newSite(t, siteOptions{})
	sha := s.editCompose("slow start, no HEALTHCHECK", func(c string) string {
		c = strings.Replace(c, "VERSION: ${VERSION:-v1}", "VERSION: ${VERSION:-v1}\n      SLOW_START: 3s", 1)
		return strings.Replace(c, `    healthcheck:
      test: ["CMD", "/app", "health"]
      interval: 1s
      timeout: 2s
      retries: 3
      start_period: 10s
`, "    healthcheck:\n      disable: true\n", 1)
	})
	s.push(sha)
	r := s.deploy(0, "--untested")
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://127.0.0.1:" + s.webPort() + "/up")
	if err != nil {
		t.Fatalf("shipctl said deployed, but the app does not answer: %v\n%s", err, r)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET /up right after the deploy: %s", resp.Status)
	}
	if !strings.Contains(r.stdout, "GET /up answered 200") {
		t.Errorf("the output does not say that x-ship.health was checked:\n%s", r)
	}
}
