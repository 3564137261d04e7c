package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/shipdeploy/ship/test/testenv"
)

// leftovers lists what `shipctl test` runs of t's example app (appName) left on the
// engine; other tests' and other runs' objects are theirs.
func leftovers(t *testing.T, cli *client.Client) []string {
	t.Helper()
	ctx := context.Background()
	var left []string
	prefix := appName(t) + "-test-"
	isTest := func(project string) bool { return strings.HasPrefix(project, prefix) }
	cs, err := cli.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: make(client.Filters).Add("label", "com.docker.compose.project")})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cs.Items {
		if isTest(c.Labels["com.docker.compose.project"]) {
			left = append(left, "container "+strings.Join(c.Names, ","))
		}
	}
	ns, err := cli.NetworkList(ctx, client.NetworkListOptions{Filters: make(client.Filters).Add("label", "com.docker.compose.project")})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range ns.Items {
		if isTest(n.Labels["com.docker.compose.project"]) {
			left = append(left, "network "+n.Name)
		}
	}
	vs, err := cli.VolumeList(ctx, client.VolumeListOptions{Filters: make(client.Filters).Add("label", "com.docker.compose.project")})
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range vs.Items {
		if isTest(v.Labels["com.docker.compose.project"]) {
			left = append(left, "volume "+v.Name)
		}
	}
	imgs, err := cli.ImageList(ctx, client.ImageListOptions{All: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, img := range imgs.Items {
		for _, tag := range img.RepoTags {
			if isTest(tag) {
				left = append(left, "image "+tag)
			}
		}
	}
	return left
}

// newLeftovers snapshots what test runs left before a test and returns what was left
// since: an earlier, interrupted run's leftovers don't count against the test.
func newLeftovers(t *testing.T, cli *client.Client) func() []string {
	t.Helper()
	before := map[string]bool{}
	for _, l := range leftovers(t, cli) {
		before[l] = true
	}
	return func() []string {
		t.Helper()
		var left []string
		for _, l := range leftovers(t, cli) {
			if !before[l] {
				left = append(left, l)
			}
		}
		return left
	}
}

// cleanCheck returns a check that the test's own runs left nothing behind.
func cleanCheck(t *testing.T, cli *client.Client) func() {
	t.Helper()
	left := newLeftovers(t, cli)
	return func() {
		t.Helper()
		if l := left(); len(l) > 0 {
			t.Errorf("the test run left behind: %s", strings.Join(l, "; "))
		}
	}
}

func TestShipctlTestPasses(t *testing.T) {
	cli := testenv.Docker(t)
	assertClean := cleanCheck(t, cli)
	dir := exampleRepo(t)
	sha := git(t, dir, "rev-parse", "HEAD")

	r := run(t, dir, nil, "test")
	if r.code != 0 {
		t.Fatalf("shipctl test on the example app: %s", r)
	}
	for _, want := range []string{"test | ok   http://web:8080/version", "tests passed for " + sha[:12]} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("output lacks %q:\n%s", want, r)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, ".git", "ship", "tests", sha+".json")); err != nil {
		t.Errorf("the passing run was not recorded for %s: %v", sha, err)
	}
	if st := git(t, dir, "status", "--porcelain"); st != "" {
		t.Errorf("shipctl test dirtied the tree:\n%s", st)
	}
	assertClean()
}

func TestShipctlTestFailsWithExit3(t *testing.T) {
	cli := testenv.Docker(t)
	assertClean := cleanCheck(t, cli)
	dir := exampleRepo(t)
	sha := git(t, dir, "rev-parse", "HEAD")

	r := run(t, dir, []string{"EXPECT_VERSION=nope", "CHECK_TIMEOUT=1s"}, "test", "--json")
	if r.code != 3 {
		t.Fatalf("a failing suite must exit 3: %s", r)
	}
	var failed bool
	sc := bufio.NewScanner(strings.NewReader(r.stdout))
	for sc.Scan() {
		var ev map[string]any
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("--json output has a line that is not JSON: %q", sc.Text())
		}
		if ev["event"] == "test_failed" && ev["exit_code"] == float64(1) {
			failed = true
		}
	}
	if !failed {
		t.Errorf("no test_failed event with exit_code 1:\n%s", r)
	}
	if _, err := os.Stat(filepath.Join(dir, ".git", "ship", "tests", sha+".json")); err == nil {
		t.Errorf("a failing run was recorded as passed")
	}
	assertClean()
}

func TestShipctlTestInterruptCleansUp(t *testing.T) {
	cli := testenv.Docker(t)
	assertClean := cleanCheck(t, cli)
	started := newLeftovers(t, cli)
	dir := exampleRepo(t)
	// The web service starts slowly, so the run is still waiting for it when interrupted.
	os.WriteFile(filepath.Join(dir, ".env"), []byte("SLOW_START=30s\n"), 0o644)
	compose, _ := os.ReadFile(filepath.Join(dir, "docker-compose.test.yml"))
	slow := strings.Replace(string(compose), "VERSION: test", "VERSION: test\n      SLOW_START: ${SLOW_START:-0s}", 1)
	if slow == string(compose) {
		t.Fatal("fixture: could not add SLOW_START to the test compose file")
	}
	os.WriteFile(filepath.Join(dir, "docker-compose.test.yml"), []byte(slow), 0o644)

	cmd := exec.Command(shipctl, "test")
	cmd.Dir = dir
	out, _ := cmd.StdoutPipe()
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Wait until the engine has created the stack, then press Ctrl-C.
	sc := bufio.NewScanner(out)
	var seen []string
	for sc.Scan() {
		seen = append(seen, sc.Text())
		if strings.Contains(sc.Text(), "web: start") {
			break
		}
	}
	if len(started()) == 0 {
		t.Fatalf("fixture: nothing was started before the interrupt:\n%s", strings.Join(seen, "\n"))
	}
	cmd.Process.Signal(syscall.SIGINT)
	go func() {
		for sc.Scan() {
		}
	}()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(testenv.Scale(2 * time.Minute)):
		cmd.Process.Kill()
		t.Fatal("shipctl test did not stop within 2 minutes of Ctrl-C")
	}
	if code := cmd.ProcessState.ExitCode(); code != 130 {
		t.Errorf("exit code after Ctrl-C = %d, want 130; stderr:\n%s", code, stderr.String())
	}
	assertClean()
}

func TestShipctlTestTimeout(t *testing.T) {
	cli := testenv.Docker(t)
	assertClean := cleanCheck(t, cli)
	dir := exampleRepo(t)
	r := run(t, dir, []string{"EXPECT_VERSION=never-there"}, "test", "--timeout", "3s")
	if r.code != 3 || !strings.Contains(r.stderr, "timeout") {
		t.Errorf("a suite over its timeout must exit 3 and say so: %s", r)
	}
	assertClean()
}

func TestShipctlTestRefusesUnsupportedKey(t *testing.T) {
	cli := testenv.Docker(t)
	assertClean := cleanCheck(t, cli)
	dir := exampleRepo(t)
	compose, _ := os.ReadFile(filepath.Join(dir, "docker-compose.test.yml"))
	bad := strings.Replace(string(compose), "services:\n", "services:\n  extra:\n    image: ship-test/app:dev\n    devices: [\"/dev/fuse\"]\n", 1)
	os.WriteFile(filepath.Join(dir, "docker-compose.test.yml"), []byte(bad), 0o644)

	r := run(t, dir, nil, "test")
	if r.code != 2 {
		t.Fatalf("an unsupported key must exit 2: %s", r)
	}
	line := 1 + strings.Count(bad[:strings.Index(bad, "devices:")], "\n")
	if want := fmt.Sprintf(`docker-compose.test.yml:%d: service "extra": key "devices" is not supported`, line); !strings.Contains(r.stderr, want) {
		t.Errorf("the error must name the file, line, service and key: %s", r)
	}
	assertClean()
}

func TestShipctlConfigProblemsAllAtOnce(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "ship.yaml"), []byte(`app: Bad_Name
registry: https://registry.example.com
environments:
  prod:
    hsots: [deploy@web1]
    path: /srv/x
`), 0o644)
	r := run(t, dir, nil, "test")
	if r.code != 2 {
		t.Fatalf("an invalid ship.yaml must exit 2: %s", r)
	}
	for _, want := range []string{"ship.yaml:1:", "ship.yaml:2:", "ship.yaml:5:"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr lacks %q: %s", want, r)
		}
	}
}

func TestVersionAndCompletion(t *testing.T) {
	r := run(t, t.TempDir(), nil, "version")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "shipctl ") {
		t.Errorf("shipctl version: %s", r)
	}
	r = run(t, t.TempDir(), nil, "completion", "bash")
	if r.code != 0 || !strings.Contains(r.stdout, "__start_shipctl") {
		t.Errorf("shipctl completion bash: %s", r)
	}
	r = run(t, t.TempDir(), nil, "completion", "tcsh")
	if r.code != 2 {
		t.Errorf("an unknown shell must exit 2: %s", r)
	}
}

// TestLeftoversAreTheTestsOwn: the check that `shipctl test` left nothing counts only
// the test's own app's objects: another run's example-test-* volume, made while the
// test runs, is not the test's failure, and one of its own app is seen.
func TestLeftoversAreTheTestsOwn(t *testing.T) {
	cli := testenv.Docker(t)
	left := newLeftovers(t, cli)
	ctx := context.Background()
	volume := func(project string) string {
		t.Helper()
		labels := testenv.Labels(t, "e2e")
		labels["com.docker.compose.project"] = project
		v, err := cli.VolumeCreate(ctx, client.VolumeCreateOptions{Name: project + "_data", Labels: labels})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cli.VolumeRemove(context.Background(), v.Volume.Name, client.VolumeRemoveOptions{Force: true}) })
		return v.Volume.Name
	}
	volume("example-test-" + randomHex(4)) // another run's
	if l := left(); len(l) > 0 {
		t.Errorf("another run's object counts as the test's leftover: %v", l)
	}
	own := volume(appName(t) + "-test-" + randomHex(4))
	if l := left(); len(l) != 1 || l[0] != "volume "+own {
		t.Errorf("leftovers = %v, want the test's own volume %s", l, own)
	}
}
