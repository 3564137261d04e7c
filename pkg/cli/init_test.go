package cli

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shipdeploy/ship/pkg/config"
)

const testCompose = `name: shop-app
x-build: &build
  build: .
services:
  web:
    <<: *build
    image: shop/web
    ports:
      - "80:8080"
      - target: 443
        published: 8443
        host_ip: 127.0.0.1
  worker:
    <<: *build
    command: ["worker"]
  db:
    image: postgres:16
    volumes: [data:/var/lib/postgresql/data]
volumes:
  data:
`

// testIO returns streams on buffers, with stdin a terminal or not.
func testIO(in string, tty bool) (*IOStreams, *bytes.Buffer, *bytes.Buffer) {
	var out, errOut bytes.Buffer
	return &IOStreams{
		In: strings.NewReader(in), Out: &out, ErrOut: &errOut,
		InTTY: tty, Getenv: func(string) string { return "" },
	}, &out, &errOut
}

// appDir makes a folder named name holding the given files and makes it the current folder.
func appDir(t *testing.T, name string, files map[string]string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for f, content := range files {
		p := filepath.Join(dir, filepath.FromSlash(f))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Chdir(dir)
	return dir
}

func TestInit(t *testing.T) {
	dir := appDir(t, "shop", map[string]string{"docker-compose.yml": testCompose})

	io, out, errOut := testIO("", false)
	if code := Main([]string{"init"}, io); code != ExitOK {
		t.Fatalf("shipctl init: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	cfg, err := config.Load(filepath.Join(dir, "ship.yaml"))
	if err != nil {
		t.Fatalf("the written ship.yaml does not load: %v", err)
	}
	if cfg.App != "shop-app" || cfg.Compose != "docker-compose.yml" || cfg.Registry != defaultRegistry {
		t.Errorf("app, compose, registry = %q, %q, %q; want shop-app (from name:), docker-compose.yml, %s", cfg.App, cfg.Compose, cfg.Registry, defaultRegistry)
	}
	data, err := os.ReadFile(filepath.Join(dir, "ship.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"web", "worker", "db", "80:8080", "127.0.0.1:8443:443"} {
		if !bytes.Contains(data, []byte(s)) {
			t.Errorf("ship.yaml does not list %q:\n%s", s, data)
		}
	}
	for _, s := range []string{"Wrote ship.yaml", "built here and pushed: web, worker", "pulled on the hosts as written: db", "Next:", "Write docker-compose.test.yml", "3. Run: shipctl ship staging"} {
		if !strings.Contains(out.String(), s) {
			t.Errorf("output lacks %q:\n%s", s, out)
		}
	}
	if errOut.Len() != 0 {
		t.Errorf("stderr is not empty without a terminal: %q", errOut)
	}

	t.Run("second run refuses to overwrite", func(t *testing.T) {
		if err := os.WriteFile(filepath.Join(dir, "ship.yaml"), []byte("app: mine\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		io, _, errOut := testIO("", false)
		if code := Main([]string{"init"}, io); code != ExitUsage {
			t.Fatalf("second shipctl init: exit %d, want %d; stderr: %s", code, ExitUsage, errOut)
		}
		if !strings.Contains(errOut.String(), "ship.yaml already exists") || !strings.Contains(errOut.String(), "--force") {
			t.Errorf("stderr = %q; want it to name ship.yaml and --force", errOut)
		}
		if data, _ := os.ReadFile(filepath.Join(dir, "ship.yaml")); string(data) != "app: mine\n" {
			t.Errorf("ship.yaml was changed: %q", data)
		}
	})
	t.Run("--force overwrites", func(t *testing.T) {
		io, _, errOut := testIO("", false)
		if code := Main([]string{"init", "--force", "--app", "shop"}, io); code != ExitOK {
			t.Fatalf("exit %d: %s", code, errOut)
		}
		cfg, err := config.Load(filepath.Join(dir, "ship.yaml"))
		if err != nil || cfg.App != "shop" {
			t.Fatalf("after --force: %+v, %v", cfg, err)
		}
		if tmps, _ := filepath.Glob(filepath.Join(dir, ".ship.yaml.*")); len(tmps) != 0 {
			t.Errorf("temporary files left: %v", tmps)
		}
	})
}

func TestInitOptions(t *testing.T) {
	tests := []struct {
		name     string
		folder   string
		files    map[string]string
		args     []string
		stdin    string
		tty      bool
		wantCode int
		wantFile string // the config written, relative to the folder
		wantApp  string
		wantReg  string
		wantComp string
		wantOut  []string
		wantErr  []string
	}{
		{
			name: "folder name made valid", folder: "My_Shop.v2",
			files: map[string]string{"compose.yaml": "services:\n  web:\n    build: .\n"},
			args:  []string{"init"}, wantFile: "ship.yaml", wantApp: "my_shopv2", wantReg: defaultRegistry, wantComp: "compose.yaml",
		},
		{
			name: "first compose file in the documented order", folder: "app",
			files: map[string]string{"compose.yml": "services: {a: {image: x}}\n", "docker-compose.yaml": "services: {b: {image: x}}\n"},
			args:  []string{"init", "--registry", "localhost:5000/team"}, wantFile: "ship.yaml", wantApp: "app", wantReg: "localhost:5000/team", wantComp: "docker-compose.yaml",
			wantOut: []string{"pulled on the hosts as written: b"},
		},
		{
			name: "named compose file and config elsewhere", folder: "app",
			files:    map[string]string{"deploy/prod.yml": "services: {web: {build: ., ports: [8080]}}\n"},
			args:     []string{"init", "--compose", "deploy/prod.yml", "-c", "deploy/ship.yaml", "--registry", ""},
			wantFile: "deploy/ship.yaml", wantApp: "app", wantReg: "", wantComp: "prod.yml",
			wantOut: []string{"Wrote deploy/ship.yaml", "no registry", "shipctl -c deploy/ship.yaml ship staging"},
		},
		{
			name: "test compose present", folder: "app",
			files: map[string]string{"docker-compose.yml": "services: {web: {build: .}}\n", "docker-compose.test.yml": "services: {test: {build: .}}\n"},
			args:  []string{"init"}, wantFile: "ship.yaml", wantApp: "app", wantReg: defaultRegistry, wantComp: "docker-compose.yml",
			wantOut: []string{"2. Run: shipctl ship staging"},
		},
		{
			name: "terminal: asks, defaults shown", folder: "app",
			files: map[string]string{"docker-compose.yml": "services: {web: {build: .}}\n"},
			args:  []string{"init"}, stdin: "Bad Name\nshop\n\n", tty: true,
			wantFile: "ship.yaml", wantApp: "shop", wantReg: defaultRegistry, wantComp: "docker-compose.yml",
			wantErr: []string{"? App name (compose project name on the hosts) [app]: ", "use lowercase letters", "? Registry for the built images (host[:port][/path]) [registry.example.com:5000]: "},
		},
		{
			name: "terminal: a bad registry is asked again", folder: "app",
			files: map[string]string{"docker-compose.yml": "services: {web: {build: .}}\n"},
			args:  []string{"init", "--app", "shop"}, stdin: "https://r.example.com\nr.example.com\n", tty: true,
			wantFile: "ship.yaml", wantApp: "shop", wantReg: "r.example.com", wantComp: "docker-compose.yml",
			wantErr: []string{"has a scheme"},
		},
		{
			name: "terminal with --yes asks nothing", folder: "app",
			files: map[string]string{"docker-compose.yml": "services: {web: {build: .}}\n"},
			args:  []string{"init", "--yes"}, stdin: "other\n", tty: true,
			wantFile: "ship.yaml", wantApp: "app", wantReg: defaultRegistry, wantComp: "docker-compose.yml",
		},
		{
			name: "no terminal asks nothing", folder: "app",
			files: map[string]string{"docker-compose.yml": "services: {web: {build: .}}\n"},
			args:  []string{"init"}, stdin: "other\nregistry.other\n",
			wantFile: "ship.yaml", wantApp: "app", wantReg: defaultRegistry, wantComp: "docker-compose.yml",
		},
		{
			name: "no compose file", folder: "app", args: []string{"init"}, wantCode: ExitUsage,
			wantErr: []string{"no compose file in", "--compose FILE"},
		},
		{
			name: "named compose file missing", folder: "app", args: []string{"init", "--compose", "nope.yml"}, wantCode: ExitUsage,
			wantErr: []string{"--compose nope.yml: no such file"},
		},
		{
			name: "invalid --app", folder: "app", files: map[string]string{"compose.yaml": "services: {a: {image: x}}\n"},
			args: []string{"init", "--app", "My App"}, wantCode: ExitUsage,
			wantErr: []string{`--app "My App" is not a valid compose project name`, "--app myapp"},
		},
		{
			name: "invalid --registry", folder: "app", files: map[string]string{"compose.yaml": "services: {a: {image: x}}\n"},
			args: []string{"init", "--registry", "https://r.example.com"}, wantCode: ExitUsage,
			wantErr: []string{"has a scheme", "r.example.com"},
		},
		{
			name: "compose file without services", folder: "app", files: map[string]string{"compose.yaml": "volumes: {a: {}}\n"},
			args: []string{"init"}, wantCode: ExitUsage, wantErr: []string{"compose.yaml: no services"},
		},
		{
			name: "config folder missing", folder: "app", files: map[string]string{"compose.yaml": "services: {a: {image: x}}\n"},
			args: []string{"init", "-c", "nope/ship.yaml"}, wantCode: ExitError, wantErr: []string{"write " + filepath.Join("nope", "ship.yaml")},
		},
		{
			name: "arguments refused", folder: "app", args: []string{"init", "prod"}, wantCode: ExitUsage,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := appDir(t, tt.folder, tt.files)
			io, out, errOut := testIO(tt.stdin, tt.tty)
			code := Main(tt.args, io)
			if code != tt.wantCode {
				t.Fatalf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tt.wantCode, out, errOut)
			}
			for _, s := range tt.wantOut {
				if !strings.Contains(out.String(), s) {
					t.Errorf("stdout lacks %q:\n%s", s, out)
				}
			}
			for _, s := range tt.wantErr {
				if !strings.Contains(errOut.String(), s) {
					t.Errorf("stderr lacks %q:\n%s", s, errOut)
				}
			}
			if !tt.tty && strings.Contains(errOut.String(), "? ") {
				t.Errorf("asked a question without a terminal: %s", errOut)
			}
			if tt.wantFile == "" {
				if _, err := os.Stat(filepath.Join(dir, "ship.yaml")); err == nil {
					t.Error("ship.yaml was written")
				}
				return
			}
			cfg, err := config.Load(filepath.Join(dir, filepath.FromSlash(tt.wantFile)))
			if err != nil {
				t.Fatalf("load %s: %v", tt.wantFile, err)
			}
			if cfg.App != tt.wantApp || cfg.Registry != tt.wantReg || cfg.Compose != tt.wantComp {
				t.Errorf("app, registry, compose = %q, %q, %q; want %q, %q, %q", cfg.App, cfg.Registry, cfg.Compose, tt.wantApp, tt.wantReg, tt.wantComp)
			}
			if _, err := os.Stat(cfg.Path(cfg.Compose)); err != nil {
				t.Errorf("compose: %s does not resolve to the compose file: %v", cfg.Compose, err)
			}
		})
	}
}

func TestInitJSON(t *testing.T) {
	appDir(t, "shop", map[string]string{"docker-compose.yml": testCompose})
	io, out, errOut := testIO("", true)
	if code := Main([]string{"init", "--json"}, io); code != ExitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var ev struct {
		Event    string
		File     string
		App      string
		Services []struct {
			Name  string
			Build bool
			Ports []string
		}
	}
	if err := json.Unmarshal(out.Bytes(), &ev); err != nil {
		t.Fatalf("stdout is not one JSON object: %v\n%s", err, out)
	}
	if ev.Event != "init" || ev.File != "ship.yaml" || ev.App != "shop-app" || len(ev.Services) != 3 || !ev.Services[0].Build || ev.Services[2].Build {
		t.Errorf("event = %+v", ev)
	}
	if errOut.Len() != 0 {
		t.Errorf("asked with --json: %q", errOut)
	}
}
