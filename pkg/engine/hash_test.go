package engine_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/types"

	"github.com/shipdeploy/ship/pkg/compose"
	"github.com/shipdeploy/ship/pkg/engine"
)

// TestConfigHashGolden checks ConfigHash, NetworkHash and VolumeHash against docker
// compose's own (ServiceHash, NetworkHash and VolumeHash of compose ComposeVersion) over
// the corpus in testdata/confighash, as testdata/hashgen computed them: equal hashes are
// what lets `docker compose up` and a ship deploy leave each other's unchanged
// containers, networks and volumes alone. Each file is loaded as ship loads a project to
// deploy or test it.
func TestConfigHashGolden(t *testing.T) {
	dir, err := filepath.Abs(filepath.Join("testdata", "confighash"))
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(dir, "hashes.json"))
	if err != nil {
		t.Fatal(err)
	}
	var golden map[string]struct{ Services, Networks, Volumes map[string]string }
	if err := json.Unmarshal(data, &golden); err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.yml"))
	if len(files) == 0 || len(files) != len(golden) {
		t.Fatalf("%d corpus files, %d in hashes.json: regenerate it (see testdata/hashgen)", len(files), len(golden))
	}
	counts := map[string]int{}
	for _, f := range files {
		name := filepath.Base(f)
		t.Run(strings.TrimSuffix(name, ".yml"), func(t *testing.T) {
			p := loadGolden(t, dir, f)
			want := golden[name]
			check := func(kind string, want map[string]string, names []string, hash func(string) (string, error)) {
				t.Helper()
				if !equalKeys(names, want) {
					t.Fatalf("%s %v, hashes.json has %v", kind, names, keys(want))
				}
				for _, n := range names {
					got, err := hash(n)
					if err != nil {
						t.Fatal(err)
					}
					reason, isUnmatched := unmatched[name+" "+kind+" "+n]
					switch {
					case isUnmatched && got == want[n]:
						t.Errorf("%s %s now matches docker compose: remove it from unmatched", kind, n)
					case isUnmatched:
						t.Logf("%s %s: ship's hash differs, as known: %s", kind, n, reason)
					case got != want[n]:
						t.Errorf("%s %s: ship %s, docker compose %s", kind, n, got, want[n])
					}
					counts[kind]++
				}
			}
			check("service", want.Services, p.ServiceNames(), func(n string) (string, error) {
				return engine.ConfigHash(p.Services[n])
			})
			check("network", want.Networks, p.NetworkNames(), func(n string) (string, error) {
				return engine.NetworkHash(p.Networks[n])
			})
			check("volume", want.Volumes, p.VolumeNames(), func(n string) (string, error) {
				return engine.VolumeHash(p.Volumes[n])
			})
		})
	}
	t.Logf("%d files: %d services, %d networks, %d volumes", len(files), counts["service"], counts["network"], counts["volume"])
}

// unmatched are the corpus entries ("file kind name") whose hash ship cannot match, with
// the reason.
var unmatched = map[string]string{
	"mounts.yml service propagated": "a long-syntax bind with a bind section without create_host_path: " +
		"compose-go v2.9.1 reads false, ship's compose-go true, and the loaded project cannot tell it from an explicit true",
}

// loadGolden loads file as the generator does: the project folder is /srv/app (the
// hashes hold resolved paths) and ${HASHDATA} names the corpus folder.
func loadGolden(t *testing.T, dir, file string) *compose.Project {
	t.Helper()
	p, err := compose.Load(context.Background(), compose.Options{
		Dir:       "/srv/app",
		Files:     []string{file},
		Name:      strings.TrimSuffix(filepath.Base(file), ".yml"),
		Environ:   []string{"HASHDATA=" + dir},
		SkipCheck: true, // the corpus holds keys ship refuses: compose hashes them all the same
	})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestConfigHashEnvFile: the test path keeps env_file in the project, the deploy path
// drops it once its values are in the environment; both must hash alike, as docker
// compose drops it too.
func TestConfigHashEnvFile(t *testing.T) {
	v := "1"
	s := types.ServiceConfig{Name: "web"}
	s.Image = "app:1"
	s.Environment = types.MappingWithEquals{"A": &v}
	h0, err := engine.ConfigHash(s)
	if err != nil {
		t.Fatal(err)
	}
	s.EnvFiles = []types.EnvFile{{Path: "/srv/app/.env", Required: true}}
	if h, _ := engine.ConfigHash(s); h != h0 {
		t.Errorf("env_file changed the hash: %s, %s", h0, h)
	}
}

func equalKeys(names []string, m map[string]string) bool {
	if len(names) != len(m) {
		return false
	}
	for _, n := range names {
		if _, ok := m[n]; !ok {
			return false
		}
	}
	return true
}

func keys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
