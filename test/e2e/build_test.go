package e2e

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moby/moby/client"

	"github.com/shipdeploy/ship/test/testenv"
)

// sentinel is the registry password of the tests: it must never be printed.
const sentinel = "s3ntinel-PASSWORD-do-not-print"

const baseName = "ship-test/base"

// baseRepo is the example app built FROM base (an image in a test registry) instead of
// FROM scratch, in a fresh checkout with one commit.
func baseRepo(t *testing.T, base string) string {
	t.Helper()
	dir := exampleRepo(t)
	path := filepath.Join(dir, "app", "Dockerfile")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	df := strings.Replace(string(data), "FROM scratch", "FROM "+base, 1)
	if df == string(data) {
		t.Fatal("fixture: the example Dockerfile has no FROM scratch")
	}
	writeFile(t, path, df)
	git(t, dir, "commit", "-q", "-am", "build FROM the test base image")
	return dir
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// shipEnv points shipctl at reg, with an empty docker config; with auth, it logs in
// through SHIP_REGISTRY_USER and SHIP_REGISTRY_PASSWORD.
func shipEnv(t *testing.T, reg *testenv.RegistryServer, auth bool) []string {
	t.Helper()
	env := []string{"SHIP_REGISTRY=" + reg.Addr, "DOCKER_CONFIG=" + t.TempDir(), "SHIP_REGISTRY_USER=", "SHIP_REGISTRY_PASSWORD=", "DOCKER_BUILDKIT="}
	if auth {
		env = append(env, "SHIP_REGISTRY_USER="+reg.User, "SHIP_REGISTRY_PASSWORD="+reg.Password)
	}
	return env
}

// events parses --json output, failing on a line that is not JSON.
func events(t *testing.T, r result) []map[string]any {
	t.Helper()
	var evs []map[string]any
	sc := bufio.NewScanner(strings.NewReader(r.stdout))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var ev map[string]any
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("--json output has a line that is not JSON: %q\n%s", sc.Text(), r)
		}
		evs = append(evs, ev)
	}
	return evs
}

func eventsOf(evs []map[string]any, kind string) []map[string]any {
	var out []map[string]any
	for _, ev := range evs {
		if ev["event"] == kind {
			out = append(out, ev)
		}
	}
	return out
}

// noSecret fails the test when a run printed the password, as is or base64-encoded
// with its user (a basic auth header, an X-Registry-Auth value).
func noSecret(t *testing.T, password string, rs ...result) {
	t.Helper()
	for _, r := range rs {
		for _, s := range []string{password, base64.StdEncoding.EncodeToString([]byte("ship:" + password))} {
			if strings.Contains(r.stdout, s) || strings.Contains(r.stderr, s) {
				t.Errorf("the registry password was printed: %s", r)
			}
		}
	}
}

// baseLabel is the base image's marker in the built image ref.
func baseLabel(t *testing.T, cli *client.Client, ref string) string {
	t.Helper()
	img, err := cli.ImageInspect(context.Background(), ref)
	if err != nil {
		t.Fatalf("inspect %s: %v", ref, err)
	}
	return img.Config.Labels[testenv.BaseMarkerLabel]
}

func removeImages(t *testing.T, cli *client.Client, refs ...string) {
	t.Helper()
	for _, ref := range refs {
		testenv.Track(t, "image", ref) // swept after a killed run
	}
	t.Cleanup(func() {
		for _, ref := range refs {
			cli.ImageRemove(context.Background(), ref, client.ImageRemoveOptions{Force: true})
		}
	})
}

func TestBuildPullsNewerBase(t *testing.T) {
	cli := testenv.Docker(t)
	reg := testenv.Registry(t, testenv.WithAuth("ship", sentinel))
	base := testenv.BaseImage(t, cli, reg, baseName, "v1")
	dir := baseRepo(t, base)
	sha := git(t, dir, "rev-parse", "HEAD")
	web := reg.Addr + "/example/web:" + sha
	keep := "ship-test/keep-base:v1"
	removeImages(t, cli, web, base, keep)
	env := shipEnv(t, reg, true)

	r1 := run(t, dir, env, "build")
	if r1.code != 0 {
		t.Fatalf("shipctl build: %s", r1)
	}
	for _, want := range []string{"builder: buildkit", "built " + web} {
		if !strings.Contains(r1.stdout, want) {
			t.Errorf("output lacks %q: %s", want, r1)
		}
	}
	if got := baseLabel(t, cli, web); got != "v1" {
		t.Fatalf("first build: base %q, want v1", got)
	}

	// Keep v1 on the engine under the base's name, so that only a pull can bring v2.
	ctx := context.Background()
	if err := testenv.PullImage(ctx, cli, base, reg.RegistryAuth()); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.ImageTag(ctx, client.ImageTagOptions{Source: base, Target: keep}); err != nil {
		t.Fatal(err)
	}
	testenv.BaseImage(t, cli, reg, baseName, "v2")
	if _, err := cli.ImageTag(ctx, client.ImageTagOptions{Source: keep, Target: base}); err != nil {
		t.Fatal(err)
	}

	r2 := run(t, dir, env, "build", "--no-pull")
	if r2.code != 0 {
		t.Fatalf("shipctl build --no-pull: %s", r2)
	}
	if got := baseLabel(t, cli, web); got != "v1" {
		t.Errorf("build --no-pull: base %q, want the v1 already on the engine", got)
	}
	r3 := run(t, dir, env, "build")
	if r3.code != 0 {
		t.Fatalf("shipctl build after a newer base was pushed: %s", r3)
	}
	if got := baseLabel(t, cli, web); got != "v2" {
		t.Errorf("build after a newer base was pushed: base %q, want v2 (not pulled)", got)
	}
	noSecret(t, reg.Password, r1, r2, r3)
}

func TestBuildClassicBuilder(t *testing.T) {
	cli := testenv.Docker(t)
	reg := testenv.Registry(t, testenv.WithAuth("ship", sentinel))
	base := testenv.BaseImage(t, cli, reg, baseName, "classic")
	dir := baseRepo(t, base)
	web := reg.Addr + "/example/web:" + git(t, dir, "rev-parse", "HEAD")
	removeImages(t, cli, web, base)

	r := run(t, dir, append(shipEnv(t, reg, true), "DOCKER_BUILDKIT=0"), "build")
	if r.code != 0 {
		t.Fatalf("DOCKER_BUILDKIT=0 shipctl build: %s", r)
	}
	if !strings.Contains(r.stdout, "builder: classic (DOCKER_BUILDKIT=0)") || !strings.Contains(r.stdout, "Step 2/") {
		t.Errorf("the output must say the classic builder ran, step by step: %s", r)
	}
	if got := baseLabel(t, cli, web); got != "classic" {
		t.Errorf("base %q, want classic", got)
	}
	noSecret(t, reg.Password, r)
}

func TestBuildFailingStep(t *testing.T) {
	testenv.Docker(t)
	reg := testenv.Registry(t)
	dir := exampleRepo(t)
	df := filepath.Join(dir, "app", "Dockerfile")
	data, _ := os.ReadFile(df)
	// The step is this run's own: BuildKit joins a concurrent build of the same step
	// (another test run on this engine), and the failure's output goes to that one.
	step := `RUN ["/app", "no-such-command", "` + randomHex(4) + `"]`
	writeFile(t, df, strings.Replace(string(data), "COPY app /app\n", "COPY app /app\n"+step+"\n", 1))
	git(t, dir, "commit", "-q", "-am", "a step that fails")

	r := run(t, dir, shipEnv(t, reg, false), "build")
	if r.code != 1 {
		t.Fatalf("a failing build must exit 1: %s", r)
	}
	for _, want := range []string{step, `unknown command "no-such-command"`} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("the error must show the failing step and its output (%q): %s", want, r)
		}
	}

	r = run(t, dir, shipEnv(t, reg, false), "build", "--json")
	if r.code != 1 {
		t.Fatalf("a failing build must exit 1: %s", r)
	}
	failed := eventsOf(events(t, r), "build_failed")
	if len(failed) != 1 || !strings.Contains(failed[0]["step"].(string), "no-such-command") ||
		!strings.Contains(strings.Join(toStrings(failed[0]["output"]), "\n"), "unknown command") {
		t.Errorf("want one build_failed event with the step and its output: %s", r)
	}
}

func toStrings(v any) []string {
	var out []string
	if a, ok := v.([]any); ok {
		for _, x := range a {
			s, _ := x.(string)
			out = append(out, s)
		}
	}
	return out
}

func TestBuildWithoutRegistryIsAConfigError(t *testing.T) {
	dir := exampleRepo(t)
	cfg, _ := os.ReadFile(filepath.Join(dir, "ship.yaml"))
	writeFile(t, filepath.Join(dir, "ship.yaml"), strings.Replace(string(cfg), "registry: 127.0.0.1:5000\n", "", 1))
	git(t, dir, "commit", "-q", "-am", "no registry")
	for _, cmd := range [][]string{{"build"}, {"push"}, {"ship", "demo"}} {
		r := run(t, dir, []string{"SHIP_REGISTRY="}, cmd...)
		if r.code != 2 || !strings.Contains(r.stderr, "registry: not set") {
			t.Errorf("shipctl %v without a registry must exit 2 and say so: %s", cmd, r)
		}
	}
}

func TestDirtyTreeTagAndRefusal(t *testing.T) {
	cli := testenv.Docker(t)
	reg := testenv.Registry(t)
	dir := exampleRepo(t)
	sha := git(t, dir, "rev-parse", "HEAD")
	writeFile(t, filepath.Join(dir, "NOTES"), "uncommitted\n")
	env := shipEnv(t, reg, false)

	r := run(t, dir, env, "build", "--json")
	if r.code != 0 {
		t.Fatalf("shipctl build of a dirty tree: %s", r)
	}
	done := eventsOf(events(t, r), "build_done")
	if len(done) != 1 {
		t.Fatalf("want one build_done event: %s", r)
	}
	version, _ := done[0]["version"].(string)
	if !strings.HasPrefix(version, sha+"-dirty-") || len(version) != len(sha)+len("-dirty-")+12 {
		t.Fatalf("a dirty tree's version is %q, want %s-dirty-<12 hex>", version, sha)
	}
	removeImages(t, cli, reg.Addr+"/example/web:"+version)
	if _, err := cli.ImageInspect(context.Background(), reg.Addr+"/example/web:"+version); err != nil {
		t.Errorf("the dirty build is not tagged %s: %v", version, err)
	}

	r = run(t, dir, env, "push", "--untested")
	if r.code != 1 || !strings.Contains(r.stderr, version) || !strings.Contains(r.stderr, "--allow-dirty") {
		t.Errorf("push of a dirty build must be refused, naming it and --allow-dirty: %s", r)
	}
	r = run(t, dir, env, "ship", "demo")
	if r.code != 1 || !strings.Contains(r.stderr, "--allow-dirty") || strings.Contains(r.stdout, "building") {
		t.Errorf("ship of a dirty tree must be refused before building: %s", r)
	}
	if reg.HasManifest(t, "example/web", version) {
		t.Error("a refused push pushed the image")
	}

	r = run(t, dir, env, "push", "--untested", "--allow-dirty")
	if r.code != 0 || !reg.HasManifest(t, "example/web", version) {
		t.Errorf("push --allow-dirty --untested: %s", r)
	}
}

func TestPushRefusesUntested(t *testing.T) {
	cli := testenv.Docker(t)
	reg := testenv.Registry(t)
	dir := exampleRepo(t)
	sha := git(t, dir, "rev-parse", "HEAD")
	removeImages(t, cli, reg.Addr+"/example/web:"+sha)
	env := shipEnv(t, reg, false)
	if r := run(t, dir, env, "build"); r.code != 0 {
		t.Fatalf("shipctl build: %s", r)
	}
	r := run(t, dir, env, "push")
	if r.code != 1 || !strings.Contains(r.stderr, sha) || !strings.Contains(r.stderr, "shipctl test") {
		t.Errorf("push of an untested sha must exit 1, naming it and shipctl test: %s", r)
	}
	if reg.HasManifest(t, "example/web", sha) {
		t.Error("push of an untested sha pushed it")
	}
}

// TestPushUntestedTwice pushes with --untested through an authenticated registry, then
// again: the second push sends no layer. The password appears nowhere.
func TestPushUntestedTwice(t *testing.T) {
	cli := testenv.Docker(t)
	reg := testenv.Registry(t, testenv.WithAuth("ship", sentinel))
	dir := exampleRepo(t)
	sha := git(t, dir, "rev-parse", "HEAD")
	web := reg.Addr + "/example/web:" + sha
	removeImages(t, cli, web, reg.Addr+"/example/web:latest")
	env := shipEnv(t, reg, true)

	build := run(t, dir, env, "build", "--json")
	if build.code != 0 {
		t.Fatalf("shipctl build: %s", build)
	}
	first := run(t, dir, env, "push", "--untested", "--latest", "--json")
	if first.code != 0 {
		t.Fatalf("shipctl push --untested: %s", first)
	}
	evs := events(t, first)
	warned := false
	for _, w := range eventsOf(evs, "warning") {
		if strings.Contains(w["msg"].(string), "UNTESTED") {
			warned = true
		}
	}
	if !warned || !strings.Contains(first.stderr, "UNTESTED") {
		t.Errorf("--untested must warn on stderr and in a warning event: %s", first)
	}
	if len(eventsOf(evs, "push_verified")) != 2 || !reg.HasManifest(t, "example/web", sha) || !reg.HasManifest(t, "example/web", "latest") {
		t.Errorf("want %s and :latest pushed and verified: %s", web, first)
	}

	second := run(t, dir, env, "push", "--untested", "--json")
	if second.code != 0 {
		t.Fatalf("second shipctl push: %s", second)
	}
	layers := eventsOf(events(t, second), "push_layer")
	if len(layers) == 0 {
		t.Fatalf("no push_layer events: %s", second)
	}
	for _, l := range layers {
		if l["status"] != "Layer already exists" || l["sent"] != false {
			t.Errorf("the second push of an unchanged image sent a layer: %v", l)
		}
	}

	text := run(t, dir, env, "push", "--untested")
	if text.code != 0 || !strings.Contains(text.stdout, "Layer already exists") || !strings.Contains(text.stderr, "warning: pushing "+sha+" UNTESTED") {
		t.Errorf("text output of push: %s", text)
	}
	noSecret(t, reg.Password, build, first, second, text)
}

func TestPushCredentialsFromDockerConfig(t *testing.T) {
	cli := testenv.Docker(t)
	reg := testenv.Registry(t, testenv.WithAuth("ship", sentinel))
	dir := exampleRepo(t)
	sha := git(t, dir, "rev-parse", "HEAD")
	removeImages(t, cli, reg.Addr+"/example/web:"+sha)
	cfgDir := t.TempDir()
	auth := base64.StdEncoding.EncodeToString([]byte("ship:" + sentinel))
	writeFile(t, filepath.Join(cfgDir, "config.json"), `{"auths": {"`+reg.Addr+`": {"auth": "`+auth+`"}}}`)
	env := append(shipEnv(t, reg, false), "DOCKER_CONFIG="+cfgDir)

	build := run(t, dir, env, "build")
	push := run(t, dir, env, "push", "--untested")
	if build.code != 0 || push.code != 0 || !reg.HasManifest(t, "example/web", sha) {
		t.Fatalf("build and push with docker login's credentials:\n%s\n%s", build, push)
	}
	if !strings.Contains(push.stdout, "config.json") {
		t.Errorf("the output should say where the credentials came from: %s", push)
	}
	noSecret(t, reg.Password, build, push)
}

func TestPushRegistryRefusesOrIsDown(t *testing.T) {
	cli := testenv.Docker(t)
	reg := testenv.Registry(t, testenv.WithAuth("ship", sentinel))
	dir := exampleRepo(t)
	sha := git(t, dir, "rev-parse", "HEAD")
	removeImages(t, cli, reg.Addr+"/example/web:"+sha)
	env := shipEnv(t, reg, true)
	if r := run(t, dir, env, "build"); r.code != 0 {
		t.Fatalf("shipctl build: %s", r)
	}

	const wrong = "wrong-PASSWORD-not-to-print"
	refused := run(t, dir, append(env, "SHIP_REGISTRY_PASSWORD="+wrong), "push", "--untested", "--json")
	if refused.code != 1 || !strings.Contains(refused.stderr, reg.Addr) || !strings.Contains(refused.stderr, "refused") ||
		!strings.Contains(refused.stderr, "docker login") {
		t.Errorf("refused credentials must exit 1 naming the registry and what to do: %s", refused)
	}
	if n := len(eventsOf(events(t, refused), "push_image_start")); n != 0 {
		t.Errorf("a push started although the registry refused the credentials: %s", refused)
	}
	if reg.HasManifest(t, "example/web", sha) {
		t.Error("pushed with refused credentials")
	}
	noSecret(t, wrong, refused)

	// A mistyped registry names images that were never built: the error says which
	// registry was asked, where it came from, and what it answered.
	typo := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	mistyped := run(t, dir, append(env, "SHIP_REGISTRY="+typo), "push", "--untested")
	if mistyped.code != 1 || !strings.Contains(mistyped.stderr, "image not built") ||
		!strings.Contains(mistyped.stderr, "the registry "+typo+" (from SHIP_REGISTRY) was asked; it answered: ") {
		t.Errorf("a mistyped registry must be named with its answer: %s", mistyped)
	}

	reg.Stop()
	down := run(t, dir, env, "push", "--untested")
	if down.code != 1 || !strings.Contains(down.stderr, reg.Addr) || !strings.Contains(down.stderr, "does not answer") ||
		strings.Contains(down.stdout, "pushing "+reg.Addr) {
		t.Errorf("a registry that is down must exit 1 naming it, before pushing: %s", down)
	}
	noSecret(t, reg.Password, refused, down)
}

func TestShipBuildsTestsPushes(t *testing.T) {
	cli := testenv.Docker(t)
	assertClean := cleanCheck(t, cli)
	reg := testenv.Registry(t)
	base := testenv.BaseImage(t, cli, reg, baseName, "ship")
	dir := baseRepo(t, base)
	sha := git(t, dir, "rev-parse", "HEAD")
	removeImages(t, cli, reg.Addr+"/example/web:"+sha, base)
	env := shipEnv(t, reg, false)

	// The demo environment's host (127.0.0.1:2222) is not there: ship stops at the
	// preflight, before it builds anything.
	r := run(t, dir, env, "ship", "demo", "--json")
	if r.code != 1 || !strings.Contains(r.stderr, "127.0.0.1:2222") || len(eventsOf(events(t, r), "build_done")) > 0 {
		t.Fatalf("shipctl ship demo, its host down: want exit 1 from the preflight, nothing built: %s", r)
	}
	if failed := eventsOf(events(t, r), "ship_failed"); len(failed) != 1 || failed[0]["step"] != "preflight" {
		t.Errorf("ship must say the preflight step failed: %s", r)
	}

	// With the host there and the web port taken, ship gets through build, test and
	// push and stops at the deploy step with its exit code (4: the release failed,
	// nothing to put back).
	_, _, hostEnv := reachableDemo(t, dir)
	sha = git(t, dir, "rev-parse", "HEAD")
	removeImages(t, cli, reg.Addr+"/example/web:"+sha)
	env = append(append(env, hostEnv...), fmt.Sprintf("WEB_PORT=%d", busyPort(t)))
	r = run(t, dir, env, "ship", "demo", "--json")
	if r.code != 4 {
		t.Fatalf("shipctl ship demo, its web port taken: want exit 4 from the deploy step: %s", r)
	}
	evs := events(t, r)
	order := []string{"ship_start", "preflight", "lock", "build_done", "test_passed", "push_done", "plan", "deploy_result", "ship_failed"}
	at := 0
	for _, ev := range evs {
		if at < len(order) && ev["event"] == order[at] {
			at++
		}
	}
	if at != len(order) {
		t.Errorf("want the events %v in that order: %s", order, r)
	}
	if failed := eventsOf(evs, "ship_failed"); len(failed) != 1 || failed[0]["step"] != "deploy" || failed[0]["exit_code"] != float64(4) {
		t.Errorf("ship must say the deploy step failed: %s", r)
	}
	if !reg.HasManifest(t, "example/web", sha) {
		t.Error("ship did not push the image")
	}
	assertClean()

	r = run(t, dir, env, "ship", "nowhere")
	if r.code != 2 || !strings.Contains(r.stderr, `no environment "nowhere"`) {
		t.Errorf("ship to an unknown environment must exit 2: %s", r)
	}
}

func TestShipFailingTestsPushNothing(t *testing.T) {
	cli := testenv.Docker(t)
	assertClean := cleanCheck(t, cli)
	reg := testenv.Registry(t)
	dir := exampleRepo(t)
	sha := git(t, dir, "rev-parse", "HEAD")
	removeImages(t, cli, reg.Addr+"/example/web:"+sha)

	_, path, hostEnv := reachableDemo(t, dir)
	sha = git(t, dir, "rev-parse", "HEAD")
	removeImages(t, cli, reg.Addr+"/example/web:"+sha)

	r := run(t, dir, append(append(shipEnv(t, reg, false), hostEnv...), "EXPECT_VERSION=nope", "CHECK_TIMEOUT=1s"), "ship", "demo")
	if r.code != 3 {
		t.Fatalf("ship with a failing suite must exit 3: %s", r)
	}
	// The lock the preflight took is released, and the app's folder it made removed.
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("the host keeps %s after a ship that stopped at its tests: %v", path, err)
	}
	if !strings.Contains(r.stdout, "the test step failed") || strings.Contains(r.stdout, "pushing") {
		t.Errorf("ship must stop at the test step: %s", r)
	}
	if reg.HasManifest(t, "example/web", sha) {
		t.Error("a failing suite pushed the image")
	}
	assertClean()
}
