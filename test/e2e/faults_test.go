package e2e

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestDeployCtrlCDuringGit (issue 9, item 9): Ctrl-C while shipctl's first git step
// runs is a cancellation (exit 130), not a failure of git ("signal: killed", exit 1).
func TestDeployCtrlCDuringGit(t *testing.T) {
	t.Parallel()
	s := newSite(t, siteOptions{})
	bin := t.TempDir()
	started := filepath.Join(bin, "started")
	if err := syscall.Mkfifo(started, 0o600); err != nil {
		t.Fatal(err)
	}
	// A git that says it has started, then hangs until it is killed.
	script := "#!/bin/sh\necho started > " + started + "\nexec sleep 3600\n"
	if err := os.WriteFile(filepath.Join(bin, "git"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	env := append(append([]string(nil), s.env...), "PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	p := start(t, s.dir, env, "deploy", "e2e", "--untested")

	opened := make(chan struct{})
	go func() {
		defer close(opened)
		if f, err := os.Open(started); err == nil { // returns once git has opened it
			f.Close()
		}
	}()
	select {
	case <-opened:
	case <-p.done:
		t.Fatalf("shipctl ended before running git:\n%s", p.wait(t))
	}
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
