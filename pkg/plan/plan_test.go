package plan

import (
	"context"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shipdeploy/ship/pkg/compose"
	"github.com/shipdeploy/ship/pkg/engine"
)

var update = flag.Bool("update", false, "rewrite the golden files")

func load(t *testing.T) *compose.Project {
	t.Helper()
	p, err := compose.Load(context.Background(), compose.Options{Dir: "testdata", Name: "fml", Environ: []string{}})
	if err != nil {
		t.Fatal(err)
	}
	p.PinImages(compose.RegistryRef("reg:5000", "bbbbbbbbbbbb"))
	return p
}

func TestDiff(t *testing.T) {
	p := load(t)
	wanted := map[string]string{"web": "h-web-2", "worker": "h-worker", "db": "h-db", "cache": "h-cache"}
	tests := []struct {
		name     string
		observed []Observed
		changes  bool
		actions  map[string]Action
	}{
		{
			name:    "first deploy",
			changes: true,
			actions: map[string]Action{"web": Create, "worker": Create, "db": Create, "cache": Create, "migrate": Job},
		},
		{
			name: "new sha",
			observed: []Observed{
				{Service: "web", Image: "reg:5000/fml/web:aaaaaaaaaaaa", ConfigHash: "h-web-1", Running: true},
				{Service: "worker", Image: "reg:5000/fml/worker:bbbbbbbbbbbb", ConfigHash: "h-worker-old", Running: true},
				{Service: "db", Image: "postgres:16", ConfigHash: "h-db", Running: true},
				{Service: "cache", Image: "redis:7", ConfigHash: "h-cache", Running: false},
				{Service: "old", Image: "old:1", ConfigHash: "x", Running: true},
			},
			changes: true,
			actions: map[string]Action{"web": Recreate, "worker": Recreate, "db": Unchanged, "cache": Recreate, "old": Remove, "migrate": Job},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pl := Diff("deploy@web1", p, wanted, tt.observed)
			if pl.Changes() != tt.changes {
				t.Errorf("Changes() = %v", pl.Changes())
			}
			got := map[string]Action{}
			for _, s := range pl.Steps {
				got[s.Service] = s.Action
			}
			for svc, want := range tt.actions {
				if got[svc] != want {
					t.Errorf("%s: %s, want %s", svc, got[svc], want)
				}
			}
			if len(got) != len(tt.actions) {
				t.Errorf("steps for %v, want %v", got, tt.actions)
			}
			golden(t, filepath.Join("testdata", strings.ReplaceAll(tt.name, " ", "-")+".golden"), pl.Format())
		})
	}
}

func TestNoChanges(t *testing.T) {
	p := load(t)
	delete(p.Services, "migrate")
	var observed []Observed
	wanted := map[string]string{}
	for _, name := range p.ServicesInOrder() {
		wanted[name] = "h-" + name
		observed = append(observed, Observed{Service: name, Image: p.Services[name].Image, ConfigHash: "h-" + name, Running: true})
	}
	if pl := Diff("h", p, wanted, observed); pl.Changes() {
		t.Fatalf("an unchanged release plans changes:\n%s", pl.Format())
	}
}

func golden(t *testing.T, path, got string) {
	t.Helper()
	if *update {
		os.WriteFile(path, []byte(got), 0o644)
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to write it)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs:\n--- got:\n%s--- want:\n%s", path, got, want)
	}
}

// deploy's Swarm keys are accepted, ignored, and said so under the plan.
func TestSwarmKeysNoted(t *testing.T) {
	dir := t.TempDir()
	yaml := "services:\n  web:\n    image: nginx\n    deploy:\n      placement: {constraints: [node.role == manager]}\n      update_config: {parallelism: 1}\n  db:\n    image: postgres\n"
	if err := os.WriteFile(filepath.Join(dir, "docker-compose.yml"), []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := compose.Load(context.Background(), compose.Options{Dir: dir, Name: "x", Environ: []string{}})
	if err != nil {
		t.Fatal(err)
	}
	got := Diff("deploy@web1", p, nil, nil).Format()
	want := "  note: web: deploy.placement, deploy.update_config ignored (Swarm only; docker compose ignores them too)\n"
	if !strings.HasSuffix(got, want) || strings.Count(got, "note:") != 1 {
		t.Errorf("plan:\n%s\nwant it to end with:\n%s", got, want)
	}
}

// A container that differs from the release only by its image tag may be left running
// (the engine knows once the image is pulled): the plan says so.
func TestOnlyTheTagChanged(t *testing.T) {
	p := load(t)
	web := p.Services["web"]
	old := web
	old.Image = "reg:5000/fml/web:aaaaaaaaaaaa"
	oldHash, err := engine.ConfigHash(old)
	if err != nil {
		t.Fatal(err)
	}
	newHash, _ := engine.ConfigHash(web)
	pl := Diff("deploy@web1", p, map[string]string{"web": newHash}, []Observed{
		{Service: "web", Image: old.Image, ConfigHash: oldHash, Running: true},
	})
	for _, s := range pl.Steps {
		if s.Service == "web" && (s.Action != Recreate || s.Why != "new image tag; left running if it is the same image") {
			t.Errorf("web: %s (%s)", s.Action, s.Why)
		}
	}
}

// When the new tag's image ID is known and is the image the container runs, the plan
// says the service is left running ("unchanged: same image"); another ID is a new
// image; unknown, the engine decides once it has pulled.
func TestSameImageUnchanged(t *testing.T) {
	p := load(t)
	web := p.Services["web"]
	old := web
	old.Image = "reg:5000/fml/web:aaaaaaaaaaaa"
	oldHash, err := engine.ConfigHash(old)
	if err != nil {
		t.Fatal(err)
	}
	newHash, _ := engine.ConfigHash(web)
	running := []Observed{{Service: "web", Image: old.Image, ConfigHash: oldHash, Running: true, ImageID: "sha256:1111"}}
	for _, tc := range []struct {
		name   string
		ids    []string
		action Action
		line   string
	}{
		{"same image", []string{"sha256:1111", "sha256:manifest"}, Unchanged,
			"  unchanged web      reg:5000/fml/web:aaaaaaaaaaaa  (unchanged: same image as reg:5000/fml/web:bbbbbbbbbbbb; left running)\n"},
		{"other image", []string{"sha256:2222"}, Recreate,
			"  recreate  web      reg:5000/fml/web:aaaaaaaaaaaa -> reg:5000/fml/web:bbbbbbbbbbbb  (new image)\n"},
		{"unknown", nil, Recreate,
			"  recreate  web      reg:5000/fml/web:aaaaaaaaaaaa -> reg:5000/fml/web:bbbbbbbbbbbb  (new image tag; left running if it is the same image)\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pl := DiffImages("deploy@web1", p, map[string]string{"web": newHash}, map[string][]string{"web": tc.ids}, running)
			for _, s := range pl.Steps {
				if s.Service == "web" && s.Action != tc.action {
					t.Errorf("web: %s (%s), want %s", s.Action, s.Why, tc.action)
				}
			}
			if text := pl.Format(); !strings.Contains(text, tc.line) {
				t.Errorf("plan:\n%s\nwant the line:\n%s", text, tc.line)
			}
		})
	}
}
