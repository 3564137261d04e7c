package compose

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/types"
)

func load(t *testing.T, o Options) (*Project, error) {
	t.Helper()
	if o.Environ == nil {
		o.Environ = []string{}
	}
	return Load(context.Background(), o)
}

func TestLoadApp(t *testing.T) {
	p, err := load(t, Options{Dir: "testdata/app", Name: "fml", EnvFiles: []string{".env.prod"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := p.ServicesInOrder(); strings.Join(got, ",") != "db,migrate,web,worker" {
		t.Errorf("services = %v; the debug profile should be left out", got)
	}
	if got := p.Services["db"].Environment["POSTGRES_PASSWORD"]; got == nil || *got != "s3cret-from-env-file" {
		t.Errorf("POSTGRES_PASSWORD not interpolated from env_file: %v", got)
	}
	want := Ship{Port: 8080, Listen: ":80", Health: "/up", Drain: 30 * time.Second, Routes: []Route{{Port: 8080, Listen: ":80"}}}
	if !sameShip(p.Ship["web"], want) {
		t.Errorf("web x-ship = %+v, want %+v", p.Ship["web"], want)
	}
	if p.Ship["migrate"].Job != JobPreDeploy || p.Ship["migrate"].Routed() {
		t.Errorf("migrate x-ship = %+v", p.Ship["migrate"])
	}
	if !sameShip(p.Ship["db"], Ship{}) {
		t.Errorf("db has no x-ship, got %+v", p.Ship["db"])
	}
}

func TestLoadProfiles(t *testing.T) {
	_, err := load(t, Options{Dir: "testdata/app", Name: "fml", EnvFiles: []string{".env.prod"}, Profiles: []string{"debug"}})
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), `service "debug": key "devices"`) {
		t.Fatalf("with the debug profile, its unknown key must be refused; got %v", err)
	}
}

func TestInterpolationFromEnviron(t *testing.T) {
	p, err := load(t, Options{Dir: "testdata/app", Name: "fml", Environ: []string{"GREETING=hi", "DB_PASSWORD=x"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := *p.Services["web"].Environment["GREETING"]; got != "hi" {
		t.Errorf("GREETING = %q, want hi", got)
	}
}

func TestPinImages(t *testing.T) {
	p, err := load(t, Options{Dir: "testdata/app", Name: "fml", EnvFiles: []string{".env.prod"}})
	if err != nil {
		t.Fatal(err)
	}
	sha := "0123456789abcdef0123456789abcdef01234567"
	p.PinImages(RegistryRef("registry.example.com:5000", sha))
	for svc, want := range map[string]string{
		"web":     "registry.example.com:5000/fml/web:" + sha,
		"migrate": "registry.example.com:5000/fml/web:" + sha, // same image as web
		"worker":  "registry.example.com:5000/fml/worker:" + sha,
		"db":      "postgres:16", // not ours
	} {
		if got := p.Services[svc].Image; got != want {
			t.Errorf("%s image = %q, want %q", svc, got, want)
		}
	}
	if len(p.Built) != 2 || p.Built["worker"] == "" || p.Built["web"] == "" {
		t.Errorf("Built = %v, want web and worker", p.Built)
	}
}

func TestRegistryRef(t *testing.T) {
	ref := RegistryRef("reg:5000/", "abc")
	for in, want := range map[string]string{
		"fml/web":          "reg:5000/fml/web:abc",
		"reg:5000/fml/web": "reg:5000/fml/web:abc",
	} {
		if got := ref(in); got != want {
			t.Errorf("ref(%q) = %q, want %q", in, got, want)
		}
	}
	if got := withoutTag("fml/web:1.2"); got != "fml/web" {
		t.Errorf("withoutTag = %q", got)
	}
}

func TestUnsupportedKeysRefusedByName(t *testing.T) {
	_, err := load(t, Options{Dir: "testdata/unsupported", Name: "x"})
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("want ErrInvalid, got %v", err)
	}
	msg := err.Error()
	for _, want := range []string{
		`docker-compose.yml:4: service "web": key "secrets" is not supported`,
		`docker-compose.yml:7: service "web": deploy.replicas 3 is not supported`,
		`service "web": volume type "npipe"`,
		`docker-compose.yml:17: service "cache": key "links"`,
		`docker-compose.yml:18: top-level key "secrets"`,
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q:\n%s", want, msg)
		}
	}
	// What docker compose runs is not refused among them.
	for _, accepted := range []string{"deploy.labels", "start_interval", "ipam"} {
		if strings.Contains(msg, accepted) {
			t.Errorf("%s is refused:\n%s", accepted, msg)
		}
	}
	if strings.Contains(msg, "restart") {
		t.Errorf("links: must be refused once, as links, not as the depends_on.restart compose-go makes of it:\n%s", msg)
	}
}

func TestBadShipSettings(t *testing.T) {
	_, err := load(t, Options{Dir: "testdata/badship", Name: "x"})
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("want ErrInvalid, got %v", err)
	}
	msg := err.Error()
	for _, want := range []string{
		`service "a": x-ship: port 99999 is not a port number`,
		`service "a": x-ship: listen "80"`,
		`service "a": x-ship: unknown key "helth"`,
		`service "b": x-ship: job "post-deploy"`,
		`service "c": x-ship: drain forever is not a duration`,
		`service "c": x-ship.listen "127.0.0.1:80": port 80 is already served for service "b"`,
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q:\n%s", want, msg)
		}
	}
}

func TestMissingFile(t *testing.T) {
	_, err := load(t, Options{Dir: "testdata", Files: []string{"nope.yml"}})
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "nope.yml") {
		t.Fatalf("got %v", err)
	}
}

func TestJobs(t *testing.T) {
	p := &Project{
		Project: &types.Project{Name: "app", Services: types.Services{
			"web": {Name: "web"}, "migrate": {Name: "migrate"}, "seed": {Name: "seed"},
		}},
		Ship: map[string]Ship{"migrate": {Job: JobPreDeploy}, "seed": {Job: JobPreDeploy}},
	}
	if got := p.Jobs(); len(got) != 2 || got[0] != "migrate" || got[1] != "seed" {
		t.Errorf("jobs: %v", got)
	}
	rest := p.WithoutJobs()
	if len(rest.Services) != 1 || rest.Services["web"].Name != "web" || len(p.Services) != 3 {
		t.Errorf("without jobs: %v; the project: %v", rest.ServiceNames(), p.ServiceNames())
	}
}

// Keys docker compose runs outside Swarm are accepted: network ipam and enable_ipv6, a
// port's app_protocol, healthcheck.start_interval (the engine checks its API version);
// deploy's Swarm keys are accepted and named by SwarmKeys for the plan's note.
func TestComposeKeysAccepted(t *testing.T) {
	p, err := load(t, Options{Dir: "testdata/swarmkeys", Name: "x"})
	if err != nil {
		t.Fatalf("a file docker compose runs is refused: %v", err)
	}
	if got := strings.Join(SwarmKeys(p.Services["web"]), ","); got != "deploy.labels,deploy.placement,deploy.update_config" {
		t.Errorf("SwarmKeys(web) = %s", got)
	}
	if got := SwarmKeys(p.Services["worker"]); got != nil {
		t.Errorf("SwarmKeys(worker) = %v, want none", got)
	}
	if n := p.Networks["back"]; n.Ipam.Driver != "default" || n.EnableIPv6 == nil || !*n.EnableIPv6 {
		t.Errorf("network back = %+v", n)
	}
	if ports := p.Services["web"].Ports; len(ports) != 1 || ports[0].AppProtocol != "http" {
		t.Errorf("ports = %+v", ports)
	}
}

// A short-syntax port compose-go cannot parse is named by file:line, service and entry.
func TestBadContainerPort(t *testing.T) {
	_, err := load(t, Options{Dir: "testdata/badport", Name: "x"})
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("want ErrInvalid, got %v", err)
	}
	for _, want := range []string{
		`docker-compose.yml:6: service "api": ports entry "8080:http": invalid containerPort: http`,
		`docker-compose.yml:11: service "admin": ports target "http" is not a container port`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}

// A release read back as a host (or shipd) reads it names its file on the host, which
// the engine writes in com.docker.compose.project.config_files.
func TestLoadResolvedNamesItsFile(t *testing.T) {
	file := "/srv/shop/releases/abc/docker-compose.yml"
	p, err := LoadResolved(context.Background(), "shop", "/srv/shop/releases/abc", file, []byte("services:\n  web:\n    image: nginx\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(p.ComposeFiles) != 1 || p.ComposeFiles[0] != file {
		t.Errorf("ComposeFiles = %v, want [%s]", p.ComposeFiles, file)
	}
}

// TestSkipCheckSkipsSchema: SkipCheck (push) reads the services and their builds from
// a file compose's schema refuses; without it the schema check refuses the file.
func TestSkipCheckSkipsSchema(t *testing.T) {
	dir := t.TempDir()
	file := "services:\n  web:\n    build: ./app\n    image: example/web\n    not_a_compose_key: 1\n"
	if err := os.WriteFile(filepath.Join(dir, "docker-compose.yml"), []byte(file), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := load(t, Options{Dir: dir, Name: "x"}); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "not_a_compose_key") {
		t.Fatalf("without SkipCheck: got %v, want the schema's refusal", err)
	}
	p, err := load(t, Options{Dir: dir, Name: "x", SkipCheck: true})
	if err != nil {
		t.Fatal(err)
	}
	if p.Services["web"].Build == nil || p.Services["web"].Image != "example/web" {
		t.Fatalf("with SkipCheck: web = %+v", p.Services["web"])
	}
}
