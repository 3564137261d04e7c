package vcs

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
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
}
