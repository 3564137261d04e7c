package agent

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func TestStoreSavesEveryChangeAtomically(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lib", "state.json")
	st, warning, err := openStore(path)
	if err != nil || warning != nil {
		t.Fatalf("open a missing state: %v %v", warning, err)
	}
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			err := st.update(func(s *State) {
				a := s.app("web", "/srv/web")
				a.Routes["web"] = &RouteState{Service: "web", Listen: ":80", Target: "10.0.0.1:8080", Release: strings.Repeat("x", i)}
			})
			if err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("state file: %v %v", fi, err)
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("temporary files left: %v", entries)
	}
	data, _ := os.ReadFile(path)
	var s State
	if err := json.Unmarshal(data, &s); err != nil || s.Version != stateVersion || s.Apps["web"].Routes["web"].Target != "10.0.0.1:8080" {
		t.Fatalf("saved state %s: %v", data, err)
	}

	again, warning, err := openStore(path)
	if err != nil || warning != nil {
		t.Fatal(warning, err)
	}
	if got := again.snapshot(); got.Apps["web"].Path != "/srv/web" || got.Apps["web"].Routes["web"].Listen != ":80" {
		t.Errorf("read back: %+v", got.Apps["web"])
	}
	// A snapshot is a copy.
	snap := again.snapshot()
	snap.Apps["web"].Release = "changed"
	if again.snapshot().Apps["web"].Release == "changed" {
		t.Error("a snapshot shares the store's state")
	}
}

func TestUnreadableStateIsMovedAside(t *testing.T) {
	for name, content := range map[string]string{
		"not json":       "{half",
		"future version": `{"version": 99, "apps": {}}`,
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "state.json")
			os.WriteFile(path, []byte(content), 0o600)
			st, warning, err := openStore(path)
			if err != nil || warning == nil || len(st.snapshot().Apps) != 0 {
				t.Fatalf("warning %v, err %v", warning, err)
			}
			matches, _ := filepath.Glob(path + ".bad-*")
			if len(matches) != 1 || !strings.Contains(warning.Error(), matches[0]) {
				t.Errorf("moved aside: %v; warning %v", matches, warning)
			}
		})
	}
}

func TestWriteFileAtomicReplaces(t *testing.T) {
	name := filepath.Join(t.TempDir(), "f.json")
	for _, content := range []string{"one", "two"} {
		if err := writeFileAtomic(name, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		if data, _ := os.ReadFile(name); string(data) != content {
			t.Errorf("content %q, want %q", data, content)
		}
	}
	// A folder where the file should be: the error names it, and nothing is left.
	dir := filepath.Join(t.TempDir(), "d")
	os.MkdirAll(filepath.Join(dir, "f"), 0o755)
	if err := writeFileAtomic(filepath.Join(dir, "f"), []byte("x"), 0o644); err == nil {
		t.Error("replacing a folder worked")
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("left behind: %v", entries)
	}
}
