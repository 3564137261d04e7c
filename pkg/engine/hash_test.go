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

// TestConfigHashGolden checks ConfigHash against docker compose's own config hash
// (ServiceHash of compose ComposeVersion) over the corpus in testdata/confighash, as
// testdata/hashgen computed it: equal hashes are what lets `docker compose up` and a ship
// deploy leave each other's unchanged containers running. Each file is loaded as ship
// loads a project to deploy or test it.
func TestConfigHashGolden(t *testing.T) {
	dir, err := filepath.Abs(filepath.Join("testdata", "confighash"))
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(dir, "hashes.json"))
	if err != nil {
		t.Fatal(err)
	}
	var golden map[string]map[string]string
	if err := json.Unmarshal(data, &golden); err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.yml"))
	if len(files) == 0 || len(files) != len(golden) {
		t.Fatalf("%d corpus files, %d in hashes.json: regenerate it (see testdata/hashgen)", len(files), len(golden))
	}
	services := 0
	for _, f := range files {
		name := filepath.Base(f)
		t.Run(strings.TrimSuffix(name, ".yml"), func(t *testing.T) {
			p := loadGolden(t, dir, f)
			want := golden[name]
			if got := p.ServiceNames(); !equalKeys(got, want) {
				t.Fatalf("services %v, hashes.json has %v", got, keys(want))
			}
			for _, svc := range p.ServiceNames() {
				got, err := engine.ConfigHash(p.Services[svc])
				if err != nil {
					t.Fatal(err)
				}
				if got != want[svc] {
					t.Errorf("service %s: ConfigHash %s, docker compose %s", svc, got, want[svc])
				}
				services++
			}
		})
	}
	t.Logf("%d services in %d files", services, len(files))
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
