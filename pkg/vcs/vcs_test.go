package vcs

import (
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func run(t *testing.T, dir string, args ...string) {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.com", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.com")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("git %v: %v\n%s", args, err, out)
	}
}

func TestHead(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	if _, err := Head(ctx, dir); !errors.Is(err, ErrNotRepo) {
		t.Fatalf("outside a checkout: got %v, want ErrNotRepo", err)
	}
	run(t, dir, "init", "-q")
	if _, err := Head(ctx, dir); err == nil || !strings.Contains(err.Error(), "no commit yet") {
		t.Fatalf("a checkout without a commit: got %v, want \"no commit yet\"", err)
	}
	os.WriteFile(filepath.Join(dir, "a.txt"), []byte("one\n"), 0o644)
	run(t, dir, "add", ".")
	run(t, dir, "commit", "-q", "-m", "first commit")

	info, err := Head(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(info.SHA) != 40 || !info.Clean || info.Subject != "first commit" || info.Version() != info.SHA {
		t.Fatalf("clean tree: %+v", info)
	}

	os.WriteFile(filepath.Join(dir, "a.txt"), []byte("two\n"), 0o644)
	dirty1, _ := Head(ctx, dir)
	os.WriteFile(filepath.Join(dir, "new.txt"), []byte("x"), 0o644)
	dirty2, _ := Head(ctx, dir)
	if dirty1.Clean || dirty1.Diff == "" || dirty1.Version() != info.SHA+"-dirty-"+dirty1.Diff {
		t.Fatalf("dirty tree: %+v", dirty1)
	}
	if dirty2.Diff == dirty1.Diff {
		t.Fatalf("an untracked file must change the diff hash")
	}
	again, _ := Head(ctx, dir)
	if again.Diff != dirty2.Diff {
		t.Fatalf("diff hash not stable: %s then %s", dirty2.Diff, again.Diff)
	}

	// From a folder inside the checkout, with an untracked file elsewhere: the same
	// checkout and hash, and the same as one git command at a time finds.
	sub := filepath.Join(dir, "sub")
	os.MkdirAll(sub, 0o755)
	os.WriteFile(filepath.Join(sub, "b.txt"), []byte("b"), 0o644)
	fromTop, err := Head(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	fromSub, err := Head(ctx, sub)
	if err != nil {
		t.Fatal(err)
	}
	slow, err := headSlow(ctx, sub)
	if err != nil {
		t.Fatal(err)
	}
	if fromSub != fromTop || slow != fromTop || fromTop.Clean || fromTop.Diff == dirty2.Diff {
		t.Fatalf("from the top: %+v\nfrom sub/: %+v\none at a time: %+v", fromTop, fromSub, slow)
	}
}

// TestHeadCancelled: a git that is killed because the command was cancelled (Ctrl-C
// during the first git step) is reported as the cancellation, which shipctl maps to
// exit 130, not as "signal: killed" or "not a git checkout".
func TestHeadCancelled(t *testing.T) {
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
	t.Setenv("PATH", bin+string(os.PathListSeparator)+os.Getenv("PATH"))

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := Head(ctx, t.TempDir())
		done <- err
	}()
	f, err := os.Open(started) // returns once git has opened it
	if err != nil {
		t.Fatal(err)
	}
	io.ReadAll(f)
	f.Close()
	cancel()
	err = <-done
	if !errors.Is(err, context.Canceled) || errors.Is(err, ErrNotRepo) {
		t.Fatalf("Head cancelled during git = %v, want context.Canceled", err)
	}
}

// TestHeadInterruptedByTerminal: Ctrl-C in a terminal signals git too (it shares
// shipctl's process group) and git may die of it before shipctl has cancelled its
// context. That is the user's cancellation (exit 130), not "signal: interrupt".
func TestHeadInterruptedByTerminal(t *testing.T) {
	bin := t.TempDir()
	// A git that dies of SIGINT, as it does when Ctrl-C reaches its process group.
	script := "#!/bin/sh\nkill -INT $$\nsleep 5\n"
	if err := os.WriteFile(filepath.Join(bin, "git"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin+string(os.PathListSeparator)+os.Getenv("PATH"))

	_, err := Head(context.Background(), t.TempDir())
	if !errors.Is(err, context.Canceled) || errors.Is(err, ErrNotRepo) {
		t.Fatalf("Head with git killed by Ctrl-C = %v, want context.Canceled", err)
	}
	if strings.Contains(err.Error(), "signal:") {
		t.Errorf("the error names git's death, not the interruption: %v", err)
	}
}
