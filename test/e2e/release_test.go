package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/moby/moby/client"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/shipdeploy/ship/pkg/engine"
	"github.com/shipdeploy/ship/pkg/release"
)

// The tests of issue 9 items 1, 2 and 7: a release on the host is never rewritten,
// each environment has its own compose project, and status shows drift.

// releaseNames lists the release folders on the host, sorted.
func (s *site) releaseNames() []string {
	s.t.Helper()
	entries, _ := os.ReadDir(filepath.Join(s.path, "releases"))
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	sort.Strings(out)
	return out
}

// switchCurrent points the host's current at name directly, as a deploy cut off
// between starting its containers and switching current leaves the host.
func (s *site) switchCurrent(name string) {
	s.t.Helper()
	tmp := filepath.Join(s.path, "current.test")
	if err := os.Symlink("releases/"+name, tmp); err != nil {
		s.t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(s.path, "current")); err != nil {
		s.t.Fatal(err)
	}
}

// TestRedeploySameCommitIsANewRelease: the same commit deployed with a changed
// env_file is a new release beside the first, never a rewrite of it; when the new one
// fails its health check the restore brings back exactly what ran (exit 4, healthy,
// the first file untouched), and history and rollback see both. An identical
// redeploy reuses the release.
func TestRedeploySameCommitIsANewRelease(t *testing.T) {
	t.Parallel()
	s := newSite(t, siteOptions{})
	sha := s.editCompose("health from the env_file", func(c string) string {
		c = strings.Replace(c, "VERSION: ${VERSION:-v1}", "VERSION: ${VERSION:-v1}\n      FAIL_HEALTH: ${FAIL_HEALTH:-0}", 1)
		c = strings.Replace(c, "retries: 3", "retries: 2", 1)
		return strings.Replace(c, "start_period: 10s", "start_period: 1s", 1)
	})
	s.push(sha)
	s.deploy(0, "--untested")
	first := s.currentName()
	fileA := filepath.Join(s.path, "releases", first, "docker-compose.yml")
	before, err := os.ReadFile(fileA)
	if err != nil {
		t.Fatal(err)
	}
	web := s.containers()["web"]

	// The same commit, the same environment: the same release, nothing restarted.
	s.deploy(0, "--untested")
	if got := s.releaseNames(); len(got) != 1 || got[0] != first {
		t.Errorf("an identical redeploy made releases %v, want only %s", got, first)
	}
	if again := s.containers()["web"]; again.ID != web.ID {
		t.Errorf("an identical redeploy replaced web")
	}

	// The same commit with an env_file that makes web unhealthy.
	env, err := os.ReadFile(filepath.Join(s.dir, ".env.e2e"))
	if err != nil {
		t.Fatal(err)
	}
	s.write(".env.e2e", string(env)+"FAIL_HEALTH=1\n")
	r := s.deploy(4, "--untested")
	if !strings.HasPrefix(first, sha+"-") || len(first) != len(sha)+9 {
		t.Errorf("the release is named %q, want %s-<8 hex digits>", first, sha)
	}
	names := s.releaseNames()
	if len(names) != 2 {
		t.Fatalf("releases after the failed redeploy: %v, want two of %s", names, sha)
	}
	second := names[0]
	if second == first {
		second = names[1]
	}
	if !strings.HasPrefix(second, sha+"-") {
		t.Errorf("the second release is named %q", second)
	}
	if s.currentName() != first {
		t.Errorf("current = %s, want %s", s.currentName(), first)
	}
	if after, _ := os.ReadFile(fileA); string(after) != string(before) {
		t.Errorf("the first release's compose file was rewritten")
	}
	web = s.containers()["web"]
	ins := s.inspect(web.ID)
	if h := ins.State.Health; web.State != "running" || h == nil || h.Status != "healthy" || contains(ins.Config.Env, "FAIL_HEALTH=1") {
		t.Errorf("after the restore web is %s %+v, env %v: want the first release, healthy", web.State, h, ins.Config.Env)
	}
	want := fmt.Sprintf("on %s (deploy of %s failed; previous release restored)", short(sha)+first[len(sha):], short(sha)+second[len(sha):])
	if !strings.Contains(r.stdout, want) {
		t.Errorf("the output lacks %q:\n%s", want, r)
	}

	// history lists both; rollback takes a release by its short name.
	r = s.run("history", "e2e")
	if r.code != 0 || !strings.Contains(r.stdout, "* "+short(sha)+first[len(sha):]) || !strings.Contains(r.stdout, short(sha)+second[len(sha):]) {
		t.Errorf("history does not list both releases:\n%s", r)
	}
	r = s.run("rollback", "e2e", sha[:8])
	if r.code != 1 || !strings.Contains(r.stderr, "names 2 releases") {
		t.Errorf("a rollback to the commit of two releases: want exit 1 naming both\n%s", r)
	}
	if r := s.run("status", "e2e"); r.code != 0 || strings.Contains(r.stdout, "drift") {
		t.Errorf("status after the restore:\n%s", r)
	}
}

// TestStatusShowsDrift: when current points at A while the containers run B (a deploy
// cut off before it switched current), status says so, in text and JSON, with the
// command that fixes it; that command fixes it.
func TestStatusShowsDrift(t *testing.T) {
	t.Parallel()
	s := newSite(t, siteOptions{})
	shaA := git(t, s.dir, "rev-parse", "HEAD")
	s.push(shaA)
	s.deploy(0, "--untested")
	nameA := s.currentName()
	shaB := s.editCompose("version 2", func(c string) string { return strings.Replace(c, "${VERSION:-v1}", "v2", 1) })
	s.push(shaB)
	s.deploy(0, "--untested")
	nameB := s.currentName()
	if r := s.run("status", "e2e"); r.code != 0 || strings.Contains(r.stdout, "drift") {
		t.Fatalf("status before the drift:\n%s", r)
	}

	s.switchCurrent(nameA)
	r := s.run("status", "e2e")
	fix := "shipctl rollback e2e " + s.short(shaA)
	for _, want := range []string{
		"drift: the containers do not run the current release",
		fmt.Sprintf("runs another configuration of web than current release %s (created by release %s)", s.short(shaA), s.short(shaB)),
		"to fix it: " + fix,
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("status lacks %q:\n%s", want, r)
		}
	}
	if r.code != 1 || !strings.Contains(r.stderr, "do not run the current release") {
		t.Errorf("status with drift: want exit 1\n%s", r)
	}
	r = s.run("status", "e2e", "--json")
	ev := lastEvent(t, r.stdout, "status")
	drift, _ := ev["drift"].([]any)
	if len(drift) != 1 || ev["current"] != nameA || !strings.HasPrefix(fmt.Sprint(ev["fix"]), fix) {
		t.Fatalf("status --json = %v", ev)
	}
	if d := drift[0].(map[string]any); d["service"] != "web" || d["release"] != nameB {
		t.Errorf("drift = %v, want web of %s", d, nameB)
	}

	if r := s.run(strings.Fields(fix)[1:]...); r.code != 0 {
		t.Fatalf("the fix: %s", r)
	}
	if r := s.run("status", "e2e"); r.code != 0 || strings.Contains(r.stdout, "drift") {
		t.Errorf("status after the fix:\n%s", r)
	}
	if web := s.containers()["web"]; !contains(s.inspect(web.ID).Config.Env, "VERSION=v1") {
		t.Errorf("after the fix web runs %v", s.inspect(web.ID).Config.Env)
	}
}

// TestEnvironmentsOnOneHost: two environments on one host run apart (a compose
// project each); a folder or project shared in ship.yaml is refused at its line with
// nothing changed (ship.yaml is edited in the working tree: the deploys name the
// commit with --sha); a folder that holds another environment's releases under another
// name of the host is refused at deploy time, naming it; a host that runs the
// environment under the project name of before is refused with the override to write.
func TestEnvironmentsOnOneHost(t *testing.T) {
	t.Parallel()
	s := newSite(t, siteOptions{})
	sha := git(t, s.dir, "rev-parse", "HEAD")
	s.push(sha)
	base, err := os.ReadFile(filepath.Join(s.dir, "ship.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	pathB := s.path + "-b"
	s.write(".env.b", fmt.Sprintf("SECRET_TOKEN=%s\nWEB_PORT=%d\n", secretValue, freePort(t)))
	envB := func(host, path, extra string) string {
		return fmt.Sprintf("  b:\n    hosts: [%s]\n    path: %s\n    known_hosts: known_hosts\n    env_file: .env.b\n%s", host, path, extra)
	}
	projectB := s.app + "-b"
	t.Cleanup(func() { downProject(s, projectB) })

	s.write("ship.yaml", string(base)+envB(s.dest, pathB, ""))
	s.deploy(0, "--sha", sha, "--untested")
	if r := s.run("deploy", "b", "--sha", sha, "--untested"); r.code != 0 {
		t.Fatalf("deploy b: %s", r)
	}
	if web := s.containers()["web"]; web.State != "running" {
		t.Errorf("e2e's web after b's deploy: %+v", web)
	}
	if n := countProject(s, projectB); n != 1 {
		t.Errorf("project %s has %d containers, want 1", projectB, n)
	}

	// A shared folder or project in ship.yaml: refused at its line, nothing changed.
	audit := len(s.audit())
	s.write("ship.yaml", string(base)+envB(s.dest, s.path, "    project: "+s.project+"\n"))
	r := s.run("deploy", "b", "--sha", sha, "--untested")
	for _, want := range []string{
		"environments.b.path: " + s.path + " on " + s.dest + " is also environment e2e's",
		"environments.b: the compose project " + s.project + " on " + s.dest + " is also environment e2e's",
	} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("a shared place: the error lacks %q\n%s", want, r)
		}
	}
	if r.code == 0 || len(s.audit()) != audit {
		t.Errorf("a shared place was not refused before anything changed:\n%s", r)
	}

	// The same folder under another name of the host: refused at deploy time.
	other := strings.Replace(s.dest, "127.0.0.1", "localhost", 1)
	if other == s.dest {
		t.Fatalf("the host %s is not on 127.0.0.1", s.dest)
	}
	s.write("known_hosts", knownhosts.Line([]string{knownhosts.Normalize(s.addr), knownhosts.Normalize(strings.Replace(s.addr, "127.0.0.1", "localhost", 1))}, s.sshd.HostKey)+"\n")
	s.write("ship.yaml", string(base)+envB(other, s.path, ""))
	r = s.run("deploy", "b", "--sha", sha, "--untested")
	if r.code == 0 || !strings.Contains(r.stderr, "holds environment e2e's releases") || len(s.audit()) != audit {
		t.Errorf("a folder of another environment: want a refusal naming e2e, nothing changed\n%s", r)
	}

	// The host runs e2e as project <app> (before projects were per environment).
	s.write("ship.yaml", strings.Replace(string(base), "    env_file: .env.e2e\n", "    env_file: .env.e2e\n    project: "+s.app+"\n", 1))
	t.Cleanup(func() { downProject(s, s.app) })
	downProject(s, s.project)
	if r := s.run("deploy", "e2e", "--sha", sha, "--untested"); r.code != 0 {
		t.Fatalf("deploy with project: %s: %s", s.app, r)
	}
	s.write("ship.yaml", string(base))
	r = s.run("deploy", "e2e", "--sha", sha, "--untested")
	if r.code == 0 || !strings.Contains(r.stderr, `add "project: `+s.app+`" to environments.e2e`) {
		t.Errorf("a host that runs the environment as %s: want the override named\n%s", s.app, r)
	}
	if n := countProject(s, s.project); n != 0 {
		t.Errorf("project %s got %d containers", s.project, n)
	}
	if r := s.run("status", "e2e"); r.code != 1 || !strings.Contains(r.stdout, `to fix it: add "project: `+s.app+`" to environments.e2e`) {
		t.Errorf("status of a host that runs the environment as %s: want the override named\n%s", s.app, r)
	}
	var raw map[string]any
	data, _ := os.ReadFile(filepath.Join(s.path, "releases", s.currentName(), "release.json"))
	if json.Unmarshal(data, &raw) != nil || raw["env"] != "e2e" {
		t.Errorf("release.json does not record the environment: %s", data)
	}
}

// downProject removes a compose project's containers (a test's own).
func downProject(s *site, project string) {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := engine.New(s.cli).Down(ctx, project, engine.DownOptions{Volumes: true}); err != nil {
		s.t.Logf("clean up %s: %v", project, err)
	}
}

// countProject is the number of a compose project's containers.
func countProject(s *site, project string) int {
	s.t.Helper()
	cs, err := s.cli.ContainerList(context.Background(), client.ContainerListOptions{All: true,
		Filters: make(client.Filters).Add("label", "com.docker.compose.project="+project)})
	if err != nil {
		s.t.Fatal(err)
	}
	return len(cs.Items)
}

// TestStatusShowsDriftAfterAKilledDeploy: shipctl killed while it waits for the new
// container to become healthy leaves the host running release B's container with
// current on A; status says so and names the fix.
func TestStatusShowsDriftAfterAKilledDeploy(t *testing.T) {
	t.Parallel()
	s := newSite(t, siteOptions{})
	shaA := git(t, s.dir, "rev-parse", "HEAD")
	s.push(shaA)
	s.deploy(0, "--untested")
	nameA := s.currentName()
	shaB := s.editCompose("slow start", func(c string) string {
		return strings.Replace(c, "VERSION: ${VERSION:-v1}", "VERSION: v2\n      SLOW_START: 20s", 1)
	})
	s.push(shaB)

	p := start(t, s.dir, s.env, "deploy", "e2e", "--untested", "--json")
	p.waitFor(t, `"msg":"started"`, 2*time.Minute)
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	p.wait(t)
	if s.currentName() != nameA {
		t.Fatalf("current = %s after the kill, want %s", s.currentName(), nameA)
	}
	r := s.run("status", "e2e")
	want := fmt.Sprintf("runs another configuration of web than current release %s (created by release %s)", release.Short(nameA), s.short(shaB))
	if r.code != 1 || !strings.Contains(r.stdout, want) || !strings.Contains(r.stdout, "to fix it: shipctl rollback e2e "+release.Short(nameA)) {
		t.Errorf("status after the killed deploy: want exit 1 and %q\n%s", want, r)
	}
}

// TestReleasesNamedBySHAStillWork: a host deployed before names had a hash has its
// releases as releases/<sha> with a release.json that has no version or environment;
// status reads it, a new deploy beside it gets the new name, history lists both and a
// rollback to the old one by a prefix of its sha brings it back.
func TestReleasesNamedBySHAStillWork(t *testing.T) {
	t.Parallel()
	s := newSite(t, siteOptions{})
	shaA := git(t, s.dir, "rev-parse", "HEAD")
	s.push(shaA)
	s.deploy(0, "--untested")
	// Make it a release of before: named by its sha, release.json without version or env.
	rels := filepath.Join(s.path, "releases")
	if err := os.Rename(filepath.Join(rels, s.currentName()), filepath.Join(rels, shaA)); err != nil {
		t.Fatal(err)
	}
	infoFile := filepath.Join(rels, shaA, "release.json")
	data, err := os.ReadFile(infoFile)
	if err != nil {
		t.Fatal(err)
	}
	var info map[string]any
	if err := json.Unmarshal(data, &info); err != nil {
		t.Fatal(err)
	}
	info["sha"] = shaA
	delete(info, "version")
	delete(info, "env")
	data, _ = json.Marshal(info)
	if err := os.WriteFile(infoFile, data, 0o644); err != nil {
		t.Fatal(err)
	}
	s.switchCurrent(shaA)
	if r := s.run("status", "e2e"); r.code != 0 || !strings.Contains(r.stdout, short(shaA)) || strings.Contains(r.stdout, "drift") {
		t.Errorf("status of a release named by its sha:\n%s", r)
	}

	shaB := s.editCompose("version 2", func(c string) string { return strings.Replace(c, "${VERSION:-v1}", "v2", 1) })
	s.push(shaB)
	s.deploy(0, "--untested")
	if !strings.HasPrefix(s.currentName(), shaB+"-") {
		t.Errorf("the new release is named %s", s.currentName())
	}
	if r := s.run("history", "e2e"); r.code != 0 || !strings.Contains(r.stdout, "  "+short(shaA)+" ") || !strings.Contains(r.stdout, "* "+s.short(shaB)) {
		t.Errorf("history:\n%s", r)
	}
	if r := s.run("rollback", "e2e", shaA[:10]); r.code != 0 || s.currentName() != shaA {
		t.Fatalf("rollback to the release named by its sha (current %s):\n%s", s.currentName(), r)
	}
	if web := s.containers()["web"]; !contains(s.inspect(web.ID).Config.Env, "VERSION=v1") {
		t.Errorf("after the rollback web runs %v", s.inspect(web.ID).Config.Env)
	}
}
