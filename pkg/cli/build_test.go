package cli

import (
	"bufio"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shipdeploy/ship/pkg/config"
	"github.com/shipdeploy/ship/pkg/image"
)

// buildEvents is a build as the image package reports it: the builder, a cached step,
// a step with output that fails.
func buildEvents(live bool) []image.Event {
	start := time.Now().Add(-time.Second)
	step := func(id, name string, state image.StepState, detail string) *image.Step {
		return &image.Step{ID: id, Name: name, State: state, Started: start, Duration: 1500 * time.Millisecond, Detail: detail}
	}
	var evs []image.Event
	evs = append(evs,
		image.Event{Service: "web", Kind: image.KindBuild, Msg: "building r/web:1", Ref: "r/web:1"},
		image.Event{Service: "web", Kind: image.KindBuilder, Msg: "builder: buildkit"},
		image.Event{Service: "web", Kind: image.KindBuilder, Msg: "builder: buildkit"},
		image.Event{Service: "web", Kind: image.KindStep, Step: step("a", "[1/2] COPY app /app", image.StepCached, "")},
	)
	if live {
		evs = append(evs,
			image.Event{Service: "web", Kind: image.KindStep, Step: step("b", "[2/2] RUN make", image.StepRunning, "")},
			image.Event{Service: "web", Kind: image.KindStep, Step: step("b", "[2/2] RUN make", image.StepRunning, "fetching 1.0MB")},
		)
	}
	evs = append(evs,
		image.Event{Service: "web", Kind: image.KindLog, Msg: "compiling", Step: step("b", "[2/2] RUN make", image.StepRunning, "")},
		image.Event{Service: "web", Kind: image.KindWarning, Msg: "a warning"},
		image.Event{Service: "web", Kind: image.KindStep, Step: step("b", "[2/2] RUN make", image.StepDone, "")},
		image.Event{Service: "web", Kind: image.KindBuild, Msg: "built", Ref: "r/web:1",
			Built: &image.Built{Target: image.Target{Service: "web", Ref: "r/web:1"}, ID: "sha256:beef", Duration: 2 * time.Second}},
	)
	return evs
}

func TestProgressViewPlain(t *testing.T) {
	io, out, errOut := testIO("", false)
	g := &Globals{Factory: NewFactory(io)}
	v := newProgressView(g, newPrinter(g))
	for _, e := range buildEvents(false) {
		v.show(e)
	}
	v.close()
	want := `==> web: building r/web:1
==> builder: buildkit
--> web: Step 1/2 : COPY app /app  CACHED
--> web: Step 2/2 : RUN make  DONE 1.5s
==> web: built r/web:1 in 2.0s
`
	if out.String() != want {
		t.Errorf("plain output:\n%s\nwant:\n%s", out, want)
	}
	if errOut.String() != "warning: web: a warning\n" {
		t.Errorf("stderr: %q", errOut)
	}

	// --debug adds each step's output.
	io, out, _ = testIO("", false)
	g = &Globals{Factory: NewFactory(io), Debug: true}
	v = newProgressView(g, newPrinter(g))
	for _, e := range buildEvents(false) {
		v.show(e)
	}
	if !strings.Contains(out.String(), "    web | compiling\n") {
		t.Errorf("--debug output lacks the step's output:\n%s", out)
	}
}

func TestProgressViewJSON(t *testing.T) {
	io, out, errOut := testIO("", false)
	g := &Globals{Factory: NewFactory(io), JSON: true}
	v := newProgressView(g, newPrinter(g))
	for _, e := range buildEvents(true) {
		v.show(e)
	}
	v.close()
	var kinds []string
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		var ev map[string]any
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("not JSON: %q", sc.Text())
		}
		kinds = append(kinds, ev["event"].(string))
		switch ev["event"] {
		case "build_step":
			if ev["service"] != "web" || ev["step"] == "" || ev["status"] == "" {
				t.Errorf("build_step event: %v", ev)
			}
		case "build_log":
			if ev["line"] != "compiling" || ev["step"] != "[2/2] RUN make" {
				t.Errorf("build_log event: %v", ev)
			}
		case "build_image":
			if ev["id"] != "sha256:beef" || ev["image"] != "r/web:1" {
				t.Errorf("build_image event: %v", ev)
			}
		}
	}
	want := "build_image_start builder build_step build_log warning build_step build_image"
	if got := strings.Join(kinds, " "); got != want {
		t.Errorf("events %q, want %q", got, want)
	}
	if errOut.Len() != 0 {
		t.Errorf("--json wrote to stderr: %q", errOut)
	}
}

func TestProgressViewTerminal(t *testing.T) {
	io, out, _ := testIO("", false)
	io.OutTTY = true
	g := &Globals{Factory: NewFactory(io)}
	v := newProgressView(g, newPrinter(g))
	if !v.isLive() {
		t.Fatal("a terminal gets the live view")
	}
	for _, e := range buildEvents(true) {
		v.show(e)
	}
	v.close()
	s := out.String()
	for _, want := range []string{
		"web: Step 2/2 : RUN make  fetching 1.0MB", // in progress, redrawn in place
		"web: Step 2/2 : RUN make  compiling",      // its latest output
		"\x1b[1A\r\x1b[J",                          // cursor up, clear
		"--> web: Step 2/2 : RUN make  DONE 1.5s\n",
		"==> web: built r/web:1 in 2.0s\n",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("terminal output lacks %q:\n%q", want, s)
		}
	}
	if !strings.HasSuffix(s, "==> web: built r/web:1 in 2.0s\n") {
		t.Errorf("the region must be cleared at the end:\n%q", s)
	}
}

func TestPushEventsPlain(t *testing.T) {
	io, out, _ := testIO("", false)
	g := &Globals{Factory: NewFactory(io)}
	v := newProgressView(g, newPrinter(g))
	pushed := &image.Pushed{Ref: "r/web:1", Digest: "sha256:abc", Sent: 1, Found: 1}
	for _, e := range []image.Event{
		{Kind: image.KindRegistry, Msg: "registry r: answers", Ref: "r"},
		{Kind: image.KindPush, Msg: "pushing r/web:1", Ref: "r/web:1"},
		{Kind: image.KindLayer, Layer: &image.Layer{Ref: "r/web:1", ID: "aaa", Status: "Pushing", Current: 1, Total: 2}},
		{Kind: image.KindLayer, Layer: &image.Layer{Ref: "r/web:1", ID: "aaa", Status: "Pushed"}},
		{Kind: image.KindLayer, Layer: &image.Layer{Ref: "r/web:1", ID: "bbb", Status: "Layer already exists"}},
		{Kind: image.KindPush, Ref: "r/web:1", Pushed: pushed},
		{Kind: image.KindVerified, Ref: "r/web:1", Pushed: pushed},
	} {
		v.show(e)
	}
	want := `==> registry r: answers
==> pushing r/web:1
--> aaa: Pushed
--> bbb: Layer already exists
==> pushed r/web:1: 1 layer(s) sent, 1 already in the registry
==> r/web:1 is in the registry (sha256:abc)
`
	if out.String() != want {
		t.Errorf("push output:\n%s\nwant:\n%s", out, want)
	}
}

// TestKeychainUsageError asserts what the command adds to image.KeychainFromEnv (whose
// cases image's tests cover): half of the credentials is a usage error (exit 2) that
// does not show the password.
func TestKeychainUsageError(t *testing.T) {
	io, _, _ := testIO("", false)
	env := map[string]string{"DOCKER_CONFIG": t.TempDir(), "SHIP_REGISTRY_PASSWORD": "pw"}
	io.Getenv = func(k string) string { return env[k] }
	_, err := keychain(&Globals{Factory: NewFactory(io)}, &config.Config{Registry: "registry.example.com:5000/team"})
	if exitCode(err) != ExitUsage || strings.Contains(err.Error(), "pw") {
		t.Errorf("want a usage error that does not show the password, got %v", err)
	}
}

func TestRequireRegistry(t *testing.T) {
	err := requireRegistry(&config.Config{File: "ship.yaml"})
	if !errors.Is(err, config.ErrInvalid) || exitCode(err) != ExitUsage || !strings.Contains(err.Error(), "ship.yaml: registry: not set") {
		t.Errorf("a missing registry: %v (exit %d)", err, exitCode(err))
	}
	if err := requireRegistry(&config.Config{Registry: "r:5000"}); err != nil {
		t.Error(err)
	}
	if got := registryHost("registry.example.com:5000/team/x"); got != "registry.example.com:5000" {
		t.Errorf("registryHost: %q", got)
	}
}

func TestPickTargets(t *testing.T) {
	all := []image.Target{{Service: "web"}, {Service: "worker"}}
	got, err := pickTargets(all, []string{"worker"}, "c.yml")
	if err != nil || len(got) != 1 || got[0].Service != "worker" {
		t.Errorf("pick worker: %v, %v", got, err)
	}
	_, err = pickTargets(all, []string{"db"}, "c.yml")
	if exitCode(err) != ExitUsage || !strings.Contains(err.Error(), "web, worker") {
		t.Errorf("an unknown service: %v", err)
	}
}

func TestBuildCommandsNeedARegistry(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "ship.yaml")
	writeTestFile(t, file, "app: shop\nenvironments:\n  prod:\n    hosts: [deploy@web1.example.com]\n    path: /srv/shop\n")
	for _, args := range [][]string{{"build"}, {"push"}, {"ship", "prod"}} {
		io, _, errOut := testIO("", false)
		code := Main(append(args, "-c", file), io)
		if code != ExitUsage || !strings.Contains(errOut.String(), "registry: not set") {
			t.Errorf("shipctl %v without a registry: exit %d, stderr %q", args, code, errOut)
		}
	}
	for _, args := range [][]string{{"ship"}, {"ship", "prod", "extra"}, {"ship", "nowhere"}, {"push", "extra"}} {
		io, _, errOut := testIO("", false)
		if code := Main(append(args, "-c", file), io); code != ExitUsage {
			t.Errorf("shipctl %v: exit %d, want 2; stderr %q", args, code, errOut)
		}
	}
}
