package release

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// sequenceDir is an app folder with a staged symlink, a staged release.json and a
// lock, for an end's sequence.
func sequenceDir(t *testing.T) (l Layout, link, staged string) {
	t.Helper()
	l = Layout(t.TempDir())
	for _, d := range []string{l.Tmp(), l.Lock(), l.Release("new"), l.Release("old")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	link, staged = filepath.Join(l.Tmp(), "current-x"), filepath.Join(l.Tmp(), "release.json-x")
	if err := os.Symlink(CurrentLink("old"), l.Current()); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(CurrentLink("new"), link); err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string]string{staged: "deployed\n", l.Holder(): "{}\n", l.Audit(): "one\n"} {
		if err := os.WriteFile(name, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return l, link, staged
}

// The plain way (shipd's OS): first, then then in order once proceed says so; no
// then when it says no.
func TestSequencePlain(t *testing.T) {
	ctx := context.Background()
	l, link, staged := sequenceDir(t)
	moved := filepath.Join(l.Tmp(), "unlocked-x")
	then := []Step{
		RenameStep(staged, l.Info("new")),
		AppendStep(l.Audit(), []byte("two\n")),
		RenameStep(l.Lock(), moved), RemoveStep(filepath.Join(moved, "holder.json")), RmdirStep(moved),
	}
	var told []error
	ferrs, terrs := Sequence(ctx, OS{}, []Step{RenameStep(link, l.Current())}, func(errs []error) bool {
		told = errs
		return errors.Join(errs...) == nil
	}, then)
	if err := errors.Join(append(ferrs, terrs...)...); err != nil || len(told) != 1 || len(terrs) != len(then) {
		t.Fatalf("sequence: %v (told %v)", err, told)
	}
	if target, _ := os.Readlink(l.Current()); target != CurrentLink("new") {
		t.Errorf("current -> %q", target)
	}
	if data, _ := os.ReadFile(l.Info("new")); string(data) != "deployed\n" {
		t.Errorf("release.json: %q", data)
	}
	if data, _ := os.ReadFile(l.Audit()); string(data) != "one\ntwo\n" {
		t.Errorf("audit.log: %q", data)
	}
	for _, p := range []string{l.Lock(), moved} {
		if _, err := os.Lstat(p); !os.IsNotExist(err) {
			t.Errorf("%s is still there (%v)", p, err)
		}
	}

	// A switch that fails (its symlink is gone): nothing of then is carried out.
	ferrs, terrs = Sequence(ctx, OS{}, []Step{RenameStep(link, l.Current())}, func(errs []error) bool {
		return errors.Join(errs...) == nil
	}, []Step{AppendStep(l.Audit(), []byte("three\n"))})
	if ferrs[0] == nil || !errors.Is(terrs[0], ErrNotSent) {
		t.Errorf("errors %v, %v; want the rename's, then ErrNotSent", ferrs, terrs)
	}
	if data, _ := os.ReadFile(l.Audit()); string(data) != "one\ntwo\n" {
		t.Errorf("audit.log after a failed first step: %q", data)
	}
}
