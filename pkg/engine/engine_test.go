package engine_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"

	"github.com/shipdeploy/ship/pkg/engine"
	"github.com/shipdeploy/ship/test/testenv"
)

// stack is one test's compose project on the engine, removed (and checked gone)
// when the test ends.
type stack struct {
	t    *testing.T
	cli  *client.Client
	eng  *engine.Engine
	name string
	dir  string
}

func newStack(t *testing.T) *stack {
	t.Helper()
	cli := testenv.Docker(t)
	testenv.AppImage(t, cli)
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	s := &stack{t: t, cli: cli, eng: engine.New(cli), name: "shiptest-" + hex.EncodeToString(b), dir: t.TempDir()}
	testenv.Track(t, "project", s.name) // swept after a killed run
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), testenv.Scale(time.Minute))
		defer cancel()
		if err := s.eng.Down(ctx, s.name, engine.DownOptions{Volumes: true}); err != nil {
			t.Errorf("down: %v", err)
		}
		s.assertGone(ctx)
	})
	return s
}

// load builds the project from compose YAML; ${IMAGE} is the example app's image.
func (s *stack) load(yaml string) *types.Project {
	s.t.Helper()
	p, err := loader.LoadWithContext(context.Background(), types.ConfigDetails{
		WorkingDir:  s.dir,
		ConfigFiles: []types.ConfigFile{{Filename: "compose.yaml", Content: []byte(yaml)}},
		Environment: types.Mapping{"IMAGE": testenv.AppImageRef},
	}, func(o *loader.Options) { o.SetProjectName(s.name, true) })
	if err != nil {
		s.t.Fatalf("load compose: %v", err)
	}
	p.ComposeFiles = []string{filepath.Join(s.dir, "compose.yaml")} // the loader leaves it to its caller
	return p
}

func (s *stack) up(p *types.Project, o engine.UpOptions) (*recorder, error) {
	s.t.Helper()
	rec := &recorder{}
	o.Progress = rec.add
	if o.WaitTimeout == 0 {
		o.WaitTimeout = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return rec, s.eng.Up(ctx, p, o)
}

func (s *stack) mustUp(p *types.Project, o engine.UpOptions) *recorder {
	s.t.Helper()
	rec, err := s.up(p, o)
	if err != nil {
		s.t.Fatalf("up: %v\nevents:\n%s", err, rec)
	}
	return rec
}

func (s *stack) inspect(name string) container.InspectResponse {
	s.t.Helper()
	c, err := s.cli.ContainerInspect(context.Background(), name, client.ContainerInspectOptions{})
	if err != nil {
		s.t.Fatalf("inspect %s: %v", name, err)
	}
	return c.Container
}

func (s *stack) byProject() client.Filters {
	return make(client.Filters).Add("label", "com.docker.compose.project="+s.name)
}

func (s *stack) assertGone(ctx context.Context) {
	s.t.Helper()
	cs, err := s.cli.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: s.byProject()})
	if err != nil || len(cs.Items) > 0 {
		s.t.Errorf("after down: %d containers left (%v)", len(cs.Items), err)
	}
	nets, err := s.cli.NetworkList(ctx, client.NetworkListOptions{Filters: s.byProject()})
	if err != nil || len(nets.Items) > 0 {
		s.t.Errorf("after down: %d networks left (%v)", len(nets.Items), err)
	}
	vols, err := s.cli.VolumeList(ctx, client.VolumeListOptions{Filters: s.byProject()})
	if err != nil || len(vols.Items) > 0 {
		s.t.Errorf("after down: %d volumes left (%v)", len(vols.Items), err)
	}
}

// recorder keeps the events of one call.
type recorder struct {
	mu     sync.Mutex
	events []engine.Event
}

func (r *recorder) add(e engine.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
}

// index is the position of the first event of service with action, or -1.
func (r *recorder) index(service, action string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.IndexFunc(r.events, func(e engine.Event) bool { return e.Service == service && e.Action == action })
}

func (r *recorder) has(service, action string) bool { return r.index(service, action) >= 0 }

func (r *recorder) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var b strings.Builder
	for _, e := range r.events {
		fmt.Fprintf(&b, "  %-8s %-28s %-10s %s\n", e.Service, e.Container, e.Action, e.Msg)
	}
	return b.String()
}

func get(t *testing.T, url string) string {
	t.Helper()
	c := &http.Client{Timeout: 2 * time.Second}
	var last error
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		resp, err := c.Get(url)
		if err != nil {
			last = err
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			return string(body)
		}
		last = fmt.Errorf("status %d: %s", resp.StatusCode, body)
	}
	t.Fatalf("GET %s: %v", url, last)
	return ""
}

const webYAML = `
services:
  web:
    image: ${IMAGE}
    pull_policy: never
    environment:
      VERSION: "%s"
    ports: ["127.0.0.1::8080"]
    volumes: ["data:/data"]
    labels: {app.role: web}
    stop_grace_period: 3s
    healthcheck: {interval: 500ms, timeout: 2s, retries: 3}
  other:
    image: ${IMAGE}
    pull_policy: never
    healthcheck: {interval: 500ms}
volumes:
  data: {}
`

func TestUpCreatesThenLeavesAloneThenRecreatesWhatChanged(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	ctx := context.Background()

	p := s.load(fmt.Sprintf(webYAML, "1"))
	rec := s.mustUp(p, engine.UpOptions{Wait: true})
	for _, svc := range []string{"web", "other"} {
		if !rec.has(svc, "create") || !rec.has(svc, "start") || !rec.has(svc, "healthy") {
			t.Errorf("%s: want create, start and healthy events; got\n%s", svc, rec)
		}
	}
	if !rec.has("", "network") || !rec.has("", "volume") {
		t.Errorf("want network and volume events; got\n%s", rec)
	}

	// Network and volume, named and labelled as docker compose does.
	netRes, err := s.cli.NetworkInspect(ctx, s.name+"_default", client.NetworkInspectOptions{})
	if err != nil {
		t.Fatalf("default network: %v", err)
	}
	net := netRes.Network
	if net.Labels["com.docker.compose.project"] != s.name || net.Labels["com.docker.compose.network"] != "default" {
		t.Errorf("network labels = %v", net.Labels)
	}
	volRes, err := s.cli.VolumeInspect(ctx, s.name+"_data", client.VolumeInspectOptions{})
	if err != nil {
		t.Fatalf("volume: %v", err)
	}
	vol := volRes.Volume
	if vol.Labels["com.docker.compose.project"] != s.name || vol.Labels["com.docker.compose.volume"] != "data" {
		t.Errorf("volume labels = %v", vol.Labels)
	}

	web := s.inspect(s.name + "-web-1")
	img, err := s.cli.ImageInspect(ctx, testenv.AppImageRef)
	if err != nil {
		t.Fatal(err)
	}
	hash, err := engine.ConfigHash(p.Services["web"])
	if err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{
		"com.docker.compose.project":              s.name,
		"com.docker.compose.service":              "web",
		"com.docker.compose.container-number":     "1",
		"com.docker.compose.oneoff":               "False",
		"com.docker.compose.config-hash":          hash,
		"com.docker.compose.image":                img.ID,
		"com.docker.compose.project.working_dir":  s.dir,
		"com.docker.compose.project.config_files": p.ComposeFiles[0],
		"com.docker.compose.depends_on":           "",
		"app.role":                                "web",
	} {
		if got, ok := web.Config.Labels[k]; !ok || got != want {
			t.Errorf("label %s = %q, want %q", k, got, want)
		}
	}
	if web.Config.Labels["com.docker.compose.version"] == "" {
		t.Errorf("no com.docker.compose.version label")
	}
	if web.Config.StopTimeout == nil || *web.Config.StopTimeout != 3 {
		t.Errorf("StopTimeout = %v, want 3", web.Config.StopTimeout)
	}
	if web.State.Health == nil || web.State.Health.Status != "healthy" {
		t.Errorf("web health = %+v, want healthy", web.State.Health)
	}
	if !slices.ContainsFunc(web.Mounts, func(m container.MountPoint) bool { return m.Name == s.name+"_data" && m.Destination == "/data" }) {
		t.Errorf("web mounts = %+v, want %s_data at /data", web.Mounts, s.name)
	}
	aliases := web.NetworkSettings.Networks[s.name+"_default"].Aliases
	if !slices.Contains(aliases, "web") {
		t.Errorf("aliases on the default network = %v, want web among them", aliases)
	}

	// The published port on 127.0.0.1 answers.
	bindings := web.NetworkSettings.Ports[network.MustParsePort("8080/tcp")]
	if len(bindings) == 0 || bindings[0].HostIP != netip.MustParseAddr("127.0.0.1") {
		t.Fatalf("8080/tcp bindings = %+v", bindings)
	}
	url := "http://127.0.0.1:" + bindings[0].HostPort + "/version"
	if body := get(t, url); !strings.Contains(body, `"version":"1"`) {
		t.Errorf("GET /version = %s", body)
	}

	cs, err := s.eng.Containers(ctx, s.name)
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) != 2 || cs[0].Service != "other" || cs[1].Service != "web" {
		t.Fatalf("Containers = %+v, want other then web", cs)
	}
	if c := cs[1]; c.Name != s.name+"-web-1" || c.Number != 1 || c.OneOff || c.State != "running" ||
		c.Health != "healthy" || c.ConfigHash != hash || c.Image != testenv.AppImageRef || c.ID != web.ID {
		t.Errorf("Containers()[1] = %+v", c)
	}
	other := s.inspect(s.name + "-other-1")

	// Nothing changed: nothing touched.
	rec = s.mustUp(s.load(fmt.Sprintf(webYAML, "1")), engine.UpOptions{Wait: true})
	if !rec.has("web", "unchanged") || !rec.has("other", "unchanged") || rec.has("web", "create") {
		t.Errorf("second up: want only unchanged; got\n%s", rec)
	}
	if id := s.inspect(s.name + "-web-1").ID; id != web.ID {
		t.Errorf("second up replaced web: %s -> %s", web.ID, id)
	}

	// A changed environment variable recreates that service only.
	rec = s.mustUp(s.load(fmt.Sprintf(webYAML, "2")), engine.UpOptions{Wait: true})
	if !rec.has("web", "recreate") || !rec.has("other", "unchanged") || rec.has("other", "recreate") {
		t.Errorf("third up: want web recreated, other unchanged; got\n%s", rec)
	}
	web2 := s.inspect(s.name + "-web-1")
	if web2.ID == web.ID {
		t.Errorf("web was not recreated")
	}
	if s.inspect(s.name+"-other-1").ID != other.ID {
		t.Errorf("other was recreated")
	}
	url = "http://127.0.0.1:" + web2.NetworkSettings.Ports[network.MustParsePort("8080/tcp")][0].HostPort + "/version"
	if body := get(t, url); !strings.Contains(body, `"version":"2"`) {
		t.Errorf("GET /version after the change = %s", body)
	}
}

func TestDependsOnServiceHealthyStartsAfterHealthy(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	p := s.load(`
services:
  db:
    image: ${IMAGE}
    pull_policy: never
    environment: {SLOW_START: 2s}
    healthcheck: {interval: 500ms, timeout: 2s, retries: 10}
  web:
    image: ${IMAGE}
    pull_policy: never
    depends_on:
      db: {condition: service_healthy}
    healthcheck: {interval: 500ms}
`)
	start := time.Now()
	rec := s.mustUp(p, engine.UpOptions{})
	healthy, webStart := rec.index("db", "healthy"), rec.index("web", "start")
	if healthy < 0 || webStart < 0 || webStart < healthy {
		t.Fatalf("want web started after db was healthy; got\n%s", rec)
	}
	if d := time.Since(start); d < 2*time.Second {
		t.Errorf("up took %s, less than db's SLOW_START", d)
	}
	db, web := s.inspect(s.name+"-db-1"), s.inspect(s.name+"-web-1")
	webStarted, _ := time.Parse(time.RFC3339Nano, web.State.StartedAt)
	// The engine keeps db's last 5 probes: the last one to end before web started
	// must have passed.
	var before *container.HealthcheckResult
	for _, l := range db.State.Health.Log {
		if l.End.Before(webStarted) {
			before = l
		}
	}
	if before != nil && before.ExitCode != 0 {
		t.Errorf("web started at %s, after a failed probe of db (%+v)", webStarted, before)
	}
	if got := web.Config.Labels["com.docker.compose.depends_on"]; got != "db:service_healthy:false" {
		t.Errorf("depends_on label = %q", got)
	}
}

const jobYAML = `
services:
  web:
    image: ${IMAGE}
    pull_policy: never
    healthcheck: {interval: 500ms}
  migrate:
    image: ${IMAGE}
    pull_policy: never
    command: ["check", "-timeout=%s", "%s"]
    depends_on:
      web: {condition: service_healthy}
  app:
    image: ${IMAGE}
    pull_policy: never
    healthcheck: {interval: 500ms}
    depends_on:
      migrate: {condition: service_completed_successfully}
`

func TestDependsOnServiceCompletedSuccessfully(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	rec := s.mustUp(s.load(fmt.Sprintf(jobYAML, "10s", "http://web:8080/up")), engine.UpOptions{Wait: true})
	exited, appStart := rec.index("migrate", "exited"), rec.index("app", "start")
	if exited < 0 || appStart < 0 || appStart < exited {
		t.Fatalf("want app started after migrate exited 0; got\n%s", rec)
	}
	if m := s.inspect(s.name + "-migrate-1"); m.State.Status != "exited" || m.State.ExitCode != 0 {
		t.Errorf("migrate state = %s, exit code %d", m.State.Status, m.State.ExitCode)
	}
}

func TestDependsOnServiceCompletedSuccessfullyFails(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	rec, err := s.up(s.load(fmt.Sprintf(jobYAML, "1s", "http://nowhere.invalid:8080/")), engine.UpOptions{})
	var he *engine.HealthError
	if !errors.As(err, &he) || !errors.Is(err, engine.ErrUnhealthy) {
		t.Fatalf("up: err = %v, want a *HealthError", err)
	}
	if he.Container != s.name+"-migrate-1" || he.Service != "migrate" || !strings.Contains(he.Status, "exited with code 1") {
		t.Errorf("HealthError = %+v", he)
	}
	if !slices.ContainsFunc(he.Logs, func(l string) bool { return strings.Contains(l, "FAIL http://nowhere.invalid:8080/") }) {
		t.Errorf("HealthError logs = %q, want the check's FAIL line", he.Logs)
	}
	if msg := err.Error(); !strings.Contains(msg, s.name+"-migrate-1") || !strings.Contains(msg, "FAIL") {
		t.Errorf("error message %q does not name the container and show its logs", msg)
	}
	if rec.has("app", "create") {
		t.Errorf("app was created though migrate failed:\n%s", rec)
	}
}

func TestWaitUnhealthyGivesHealthError(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	p := s.load(`
services:
  web:
    image: ${IMAGE}
    pull_policy: never
    environment: {FAIL_HEALTH: "1"}
    healthcheck: {interval: 500ms, timeout: 5s, retries: 2}
`)
	_, err := s.up(p, engine.UpOptions{Wait: true})
	var he *engine.HealthError
	if !errors.As(err, &he) || !errors.Is(err, engine.ErrUnhealthy) {
		t.Fatalf("up: err = %v, want a *HealthError", err)
	}
	if he.Container != s.name+"-web-1" || !strings.HasPrefix(he.Status, "unhealthy") {
		t.Errorf("HealthError = %+v", he)
	}
	if !strings.Contains(he.Status, "FAIL_HEALTH") {
		t.Errorf("status %q does not show the failing probe's output", he.Status)
	}
	if !slices.ContainsFunc(he.Logs, func(l string) bool { return strings.Contains(l, "listening on :8080") }) {
		t.Errorf("logs = %q, want the app's start line", he.Logs)
	}
	if msg := err.Error(); !strings.Contains(msg, s.name+"-web-1") || !strings.Contains(msg, "listening on :8080") {
		t.Errorf("error message %q does not name the container and show its logs", msg)
	}
}

func TestWaitTimesOut(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	p := s.load(`
services:
  web:
    image: ${IMAGE}
    pull_policy: never
    environment: {SLOW_START: 1m}
    stop_grace_period: 1s # it ignores SIGTERM while it sleeps
    healthcheck: {interval: 500ms, timeout: 1s, retries: 1000}
`)
	_, err := s.up(p, engine.UpOptions{Wait: true, WaitTimeout: 2 * time.Second})
	var he *engine.HealthError
	if !errors.As(err, &he) || !strings.Contains(he.Status, "not healthy after 2s") {
		t.Fatalf("up: err = %v, want a timeout *HealthError", err)
	}
	if !slices.ContainsFunc(he.Logs, func(l string) bool { return strings.Contains(l, "starting slowly") }) {
		t.Errorf("logs = %q", he.Logs)
	}
}

func TestRemoveOrphans(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	two := `
services:
  web:
    image: ${IMAGE}
    pull_policy: never
  extra:
    image: ${IMAGE}
    pull_policy: never
`
	s.mustUp(s.load(two), engine.UpOptions{})
	one := s.load(strings.Split(two, "  extra:")[0])

	s.mustUp(one, engine.UpOptions{}) // without RemoveOrphans the orphan stays
	if _, err := s.cli.ContainerInspect(context.Background(), s.name+"-extra-1", client.ContainerInspectOptions{}); err != nil {
		t.Fatalf("orphan removed without RemoveOrphans: %v", err)
	}
	rec := s.mustUp(one, engine.UpOptions{RemoveOrphans: true})
	if !rec.has("extra", "remove") || !rec.has("web", "unchanged") {
		t.Errorf("want extra removed, web unchanged; got\n%s", rec)
	}
	if _, err := s.cli.ContainerInspect(context.Background(), s.name+"-extra-1", client.ContainerInspectOptions{}); err == nil {
		t.Errorf("orphan still there")
	}
}

func TestDownRemovesEverythingAndIsANoOpWhenGone(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	ctx := context.Background()
	p := s.load(`
services:
  db:
    image: ${IMAGE}
    pull_policy: never
    volumes: ["data:/data"]
    networks: [back]
  web:
    image: ${IMAGE}
    pull_policy: never
    depends_on: [db]
    networks: [front, back]
networks:
  front: {}
  back: {}
volumes:
  data: {}
`)
	s.mustUp(p, engine.UpOptions{})

	rec := &recorder{}
	if err := s.eng.Down(ctx, s.name, engine.DownOptions{Progress: rec.add}); err != nil {
		t.Fatalf("down: %v", err)
	}
	if rec.index("web", "remove") > rec.index("db", "remove") {
		t.Errorf("db stopped before web, which depends on it:\n%s", rec)
	}
	cs, _ := s.cli.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: s.byProject()})
	nets, _ := s.cli.NetworkList(ctx, client.NetworkListOptions{Filters: s.byProject()})
	if len(cs.Items) != 0 || len(nets.Items) != 0 {
		t.Errorf("after down: %d containers, %d networks", len(cs.Items), len(nets.Items))
	}
	vols, _ := s.cli.VolumeList(ctx, client.VolumeListOptions{Filters: s.byProject()})
	if len(vols.Items) != 1 {
		t.Errorf("down without Volumes removed the named volume (%d left)", len(vols.Items))
	}
	if err := s.eng.Down(ctx, s.name, engine.DownOptions{Volumes: true}); err != nil {
		t.Fatalf("down -v: %v", err)
	}
	s.assertGone(ctx)
	if err := s.eng.Down(ctx, s.name, engine.DownOptions{Volumes: true}); err != nil {
		t.Fatalf("down of a project already gone: %v", err)
	}
}

func TestLogsAndWait(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	ctx := context.Background()
	p := s.load(`
services:
  web:
    image: ${IMAGE}
    pull_policy: never
    healthcheck: {interval: 500ms}
  ok:
    image: ${IMAGE}
    pull_policy: never
    network_mode: "service:web"
    command: ["check", "-timeout=10s", "http://127.0.0.1:8080/up"]
    depends_on:
      web: {condition: service_healthy}
  bad:
    image: ${IMAGE}
    pull_policy: never
    command: ["check", "-timeout=500ms", "http://127.0.0.1:1/"]
`)
	s.mustUp(p, engine.UpOptions{})

	for svc, want := range map[string]int{"ok": 0, "bad": 1} {
		code, err := s.eng.Wait(ctx, s.name, svc)
		if err != nil || code != want {
			t.Errorf("Wait(%s) = %d, %v; want %d", svc, code, err, want)
		}
	}
	// Again, on containers already exited.
	if code, err := s.eng.Wait(ctx, s.name, "bad"); err != nil || code != 1 {
		t.Errorf("Wait(bad) again = %d, %v", code, err)
	}
	if _, err := s.eng.Wait(ctx, s.name, "nosuch"); err == nil {
		t.Errorf("Wait(nosuch): no error")
	}

	var lines []engine.LogLine
	err := s.eng.Logs(ctx, s.name, engine.LogOptions{}, func(l engine.LogLine) { lines = append(lines, l) })
	if err != nil {
		t.Fatalf("logs: %v", err)
	}
	want := []engine.LogLine{
		{Service: "bad", Container: s.name + "-bad-1", Stream: "stderr", Text: "app: http://127.0.0.1:1/: "},
		{Service: "ok", Container: s.name + "-ok-1", Stream: "stdout", Text: "ok   http://127.0.0.1:8080/up"},
		{Service: "web", Container: s.name + "-web-1", Stream: "stdout", Text: "app dev listening on :8080"},
	}
	for _, w := range want {
		if !slices.ContainsFunc(lines, func(l engine.LogLine) bool {
			return l.Service == w.Service && l.Container == w.Container && l.Stream == w.Stream && strings.HasPrefix(l.Text, w.Text)
		}) {
			t.Errorf("no log line like %+v in\n%+v", w, lines)
		}
	}
	for _, l := range lines {
		if strings.HasSuffix(l.Text, "\n") {
			t.Errorf("line with its newline: %q", l.Text)
		}
	}

	// Only one service, its last line, following: returns once the container has stopped.
	lines = nil
	done := make(chan error, 1)
	go func() {
		done <- s.eng.Logs(ctx, s.name, engine.LogOptions{Services: []string{"bad"}, Follow: true, Tail: "1", Timestamps: true},
			func(l engine.LogLine) { lines = append(lines, l) })
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("logs -f: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("logs -f of a stopped container did not return")
	}
	if len(lines) != 1 || lines[0].Service != "bad" || !timestamped.MatchString(lines[0].Text) {
		t.Errorf("logs -f --tail 1 --timestamps = %+v", lines)
	}

	// Following a running container ends with the context.
	fctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if err := s.eng.Logs(fctx, s.name, engine.LogOptions{Services: []string{"web"}, Follow: true}, func(engine.LogLine) {}); err != nil {
		t.Errorf("logs -f ended by its context: %v", err)
	}
}

var timestamped = regexp.MustCompile(`^\d{4}-\d\d-\d\dT[0-9:.]+Z \S`)

func TestNetworksWithAliases(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	p := s.load(`
services:
  web:
    image: ${IMAGE}
    pull_policy: never
    networks:
      front: {}
      back: {aliases: [api]}
    healthcheck: {interval: 500ms}
  client:
    image: ${IMAGE}
    pull_policy: never
    command: ["check", "-timeout=10s", "http://api:8080/up", "http://web:8080/up"]
    networks: [back]
    depends_on:
      web: {condition: service_healthy}
networks:
  front: {}
  back: {}
`)
	s.mustUp(p, engine.UpOptions{})
	if code, err := s.eng.Wait(context.Background(), s.name, "client"); err != nil || code != 0 {
		t.Errorf("client reaching web by its alias on the second network: exit %d, %v", code, err)
	}
	web := s.inspect(s.name + "-web-1")
	if len(web.NetworkSettings.Networks) != 2 {
		t.Errorf("web networks = %v", web.NetworkSettings.Networks)
	}
}

func TestUpRefusesUnsupportedBeforeTouchingAnything(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	p := s.load(`
services:
  web:
    image: ${IMAGE}
    pull_policy: never
    secrets: [token]
    volumes_from: [other]
  other:
    image: ${IMAGE}
    pull_policy: never
secrets:
  token: {environment: IMAGE}
`)
	_, err := s.up(p, engine.UpOptions{})
	if err == nil || !strings.Contains(err.Error(), `service "web": secrets is not supported`) ||
		!strings.Contains(err.Error(), `service "web": volumes_from is not supported`) {
		t.Fatalf("up: err = %v, want secrets and volumes_from refused by name", err)
	}
	nets, _ := s.cli.NetworkList(context.Background(), client.NetworkListOptions{Filters: s.byProject()})
	if len(nets.Items) > 0 {
		t.Errorf("a refused up created %d networks", len(nets.Items))
	}
}

func TestUpPullPolicyNeverWithMissingImage(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	p := s.load(`
services:
  web:
    image: ship-test/absent:nope
    pull_policy: never
`)
	_, err := s.up(p, engine.UpOptions{})
	if err == nil || !strings.Contains(err.Error(), "ship-test/absent:nope") || !strings.Contains(err.Error(), "never") {
		t.Fatalf("up: err = %v", err)
	}
}

func TestUpRecreatesWhenTheTagMovesToAnotherImage(t *testing.T) {
	t.Parallel()
	cli := testenv.Docker(t)
	testenv.AppImage(t, cli)
	ctx := context.Background()
	var built []string
	t.Cleanup(func() { // registered first, so it runs after Down
		for _, id := range built {
			if _, err := cli.ImageRemove(ctx, id, client.ImageRemoveOptions{Force: true, PruneChildren: true}); err != nil {
				t.Errorf("remove image %s: %v", id, err)
			}
		}
	})
	s := newStack(t)
	ref := "ship-test/retag:" + s.name
	build := func(label string) {
		t.Helper()
		tar, err := testenv.TarFiles(map[string][]byte{
			"Dockerfile": []byte("FROM " + testenv.AppImageRef + "\nLABEL ship.test=" + label + "\n"),
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := testenv.BuildImage(ctx, cli, tar, ref); err != nil {
			t.Fatalf("build %s: %v", ref, err)
		}
		img, err := cli.ImageInspect(ctx, ref)
		if err != nil {
			t.Fatal(err)
		}
		built = append(built, img.ID)
	}
	yaml := `
services:
  web:
    image: ` + ref + `
    pull_policy: never
`
	build(s.name + "-one") // unique: another run builds its own image, never this one
	s.mustUp(s.load(yaml), engine.UpOptions{})
	first := s.inspect(s.name + "-web-1")

	if rec := s.mustUp(s.load(yaml), engine.UpOptions{}); !rec.has("web", "unchanged") {
		t.Errorf("same image: want unchanged; got\n%s", rec)
	}
	build(s.name + "-two")
	rec := s.mustUp(s.load(yaml), engine.UpOptions{})
	if i := rec.index("web", "recreate"); i < 0 || rec.events[i].Msg != "image changed" {
		t.Errorf("tag moved: want recreate (image changed); got\n%s", rec)
	}
	second := s.inspect(s.name + "-web-1")
	if second.ID == first.ID || second.Image != built[1] || second.Config.Labels["com.docker.compose.image"] != built[1] {
		t.Errorf("container runs %s (label %s), want %s", second.Image, second.Config.Labels["com.docker.compose.image"], built[1])
	}
}
