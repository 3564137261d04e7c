package testenv

import (
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// Build compiles the package pkg of this repository (e.g. "./cmd/shipd") into the
// static binary out, with flags before the package (e.g. "-ldflags", "-s -w"). The
// error carries the compiler's output.
func Build(out, pkg string, flags ...string) error {
	args := append([]string{"build", "-trimpath"}, flags...)
	cmd := exec.Command("go", append(args, "-o", out, pkg)...)
	cmd.Dir = RepoRoot()
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build %s: %v\n%s", pkg, err, b)
	}
	return nil
}

// ExampleRepo copies examples/ into a fresh git checkout with one commit, as an
// application's repository of its own, the example app's binary built into it. edit,
// when given, may change each file's content on the way (rel is its path in examples/).
func ExampleRepo(t testing.TB, edit func(rel string, data []byte) []byte) string {
	t.Helper()
	src := filepath.Join(RepoRoot(), "examples")
	dst := t.TempDir()
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		if rel == filepath.Join("app", "app") {
			return nil // a stale binary; built below
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if edit != nil {
			data = edit(rel, data)
		}
		return os.WriteFile(target, data, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	AppBinary(t, filepath.Join(dst, "app"))
	if err := os.WriteFile(filepath.Join(dst, ".gitignore"), []byte("app/app\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"init", "-q"}, {"add", "."}, {"commit", "-q", "-m", "example app"}} {
		cmd := exec.Command("git", args...)
		cmd.Dir = dst
		cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=ship", "GIT_AUTHOR_EMAIL=ship@example.com",
			"GIT_COMMITTER_NAME=ship", "GIT_COMMITTER_EMAIL=ship@example.com")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	return dst
}
