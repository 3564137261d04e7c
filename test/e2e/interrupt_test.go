package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestDeployTerminalCtrlCDuringGit (issue 9, item 9): Ctrl-C in a terminal signals the
// whole foreground process group, git as well as shipctl, and git may die of it before
// shipctl has cancelled its work. That is still the user's cancellation: exit 130,
// not exit 1 with git's "signal: interrupt", and nothing on the host touched.
func TestDeployTerminalCtrlCDuringGit(t *testing.T) {
	t.Parallel()
	s := newSite(t, siteOptions{})
	// shipctl leads a process group of its own, as a terminal's foreground job does.
	p := deployInGit(t, s, true)
	if err := syscall.Kill(-p.cmd.Process.Pid, syscall.SIGINT); err != nil { // the terminal's Ctrl-C
		t.Fatal(err)
	}
	r := p.wait(t)
	if r.code != 130 || strings.Contains(r.stderr, "signal: ") {
		t.Errorf("Ctrl-C to the process group during git: want exit 130, not git's death\n%s", r)
	}
	s.assertUntouched()
}

// deployInGit starts `shipctl deploy e2e` with a git that says it has started, then
// waits in a program that Ctrl-C ends, and returns once git runs. group: shipctl
// leads a process group of its own.
func deployInGit(t *testing.T, s *site, group bool) *proc {
	t.Helper()
	bin := t.TempDir()
	started := filepath.Join(bin, "started")
	if err := syscall.Mkfifo(started, 0o600); err != nil {
		t.Fatal(err)
	}
	script := "#!/bin/sh\necho started > " + started + "\nexec sleep 3600\n"
	if err := os.WriteFile(filepath.Join(bin, "git"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	env := append(append([]string(nil), s.env...), "PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	var p *proc
	if group {
		p = startGroup(t, s.dir, env, "deploy", "e2e", "--untested")
	} else {
		p = start(t, s.dir, env, "deploy", "e2e", "--untested")
	}
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
	return p
}

// startGroup is start with shipctl leading a process group of its own.
func startGroup(t *testing.T, dir string, env []string, args ...string) *proc {
	t.Helper()
	return startWith(t, dir, env, func(a *syscall.SysProcAttr) { a.Setpgid = true }, shipctl, args...)
}
