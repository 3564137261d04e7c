package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/shipdeploy/ship/pkg/engine"
	"github.com/shipdeploy/ship/pkg/release"
	"github.com/shipdeploy/ship/test/testenv"
)

// The deploy tests run shipctl against a real sshd on 127.0.0.1 (whose "host" is this
// machine: its files, and the engine through the SSH-forwarded Docker socket) and a
// real registry that wants credentials. Each test has its own app name, host path,
// published port and registry, so that they can run side by side on one engine.

const (
	regUser = "ship"
	regPass = "registry-pass-e2e"
	// secretValue is the secret of the env_file: it must never be shown.
	secretValue = "s3ntinel-Secret-Value-4242"
)

// site is one test's app, its host and its registry.
type site struct {
	t    *testing.T
	cli  *client.Client
	reg  *testenv.RegistryServer
	sshd *testenv.SSHServer
	dir  string // the app's git checkout
	app  string
	// project is the environment's compose project on the host: <app>-e2e.
	project string
	path    string // the app's folder on the host
	env     []string
	dest    string // the host as ship.yaml names it
	addr    string // where ship.yaml's host points (the sshd, or a proxy in front of it)
}

type siteOptions struct {
	grace   string
	keep    int
	webhook string
	// via, when set, is the address (in front of the sshd) ship.yaml's host points to.
	via func(s *testenv.SSHServer) string
}

func newSite(t *testing.T, o siteOptions) *site {
	t.Helper()
	cli := testenv.Docker(t)
	s := &site{t: t, cli: cli}
	s.reg = testenv.Registry(t, testenv.WithAuth(regUser, regPass))
	s.sshd = testenv.SSHD(t)
	testenv.AppImage(t, cli)
	s.dir = exampleRepo(t)
	s.app = "e2e-" + strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name()))
	if len(s.app) > 40 {
		s.app = s.app[:40]
	}
	s.app += "-" + randomHex(3)
	s.project = s.app + "-e2e"
	testenv.Track(t, "project", s.app) // swept after a killed run (<app> and <app>-*)
	s.path = filepath.Join(t.TempDir(), "srv", s.app)
	s.addr = s.sshd.Addr
	if o.via != nil {
		s.addr = o.via(s.sshd)
	}
	s.dest = s.sshd.User + "@" + s.addr

	var env strings.Builder
	fmt.Fprintf(&env, "hosts: [%s]\n    path: %s\n    known_hosts: known_hosts\n    env_file: .env.e2e\n", s.dest, s.path)
	if o.grace != "" {
		fmt.Fprintf(&env, "    grace: %s\n", o.grace)
	}
	if o.keep > 0 {
		fmt.Fprintf(&env, "    keep: %d\n", o.keep)
	}
	cfg := fmt.Sprintf("app: %s\nregistry: %s\nenvironments:\n  e2e:\n    %s", s.app, s.reg.Addr, env.String())
	if o.webhook != "" {
		cfg += fmt.Sprintf("notify:\n  webhook: %s\n", o.webhook)
	}
	s.write("ship.yaml", cfg)
	s.trust()
	s.write(".env.e2e", fmt.Sprintf("SECRET_TOKEN=%s\nWEB_PORT=%d\n", secretValue, freePort(t)))
	s.write(".gitignore", "app/app\n.env.e2e\n")
	s.commit("e2e setup")

	home := t.TempDir()
	key, err := os.ReadFile(s.sshd.UserKeyFile)
	if err != nil {
		t.Fatal(err)
	}
	s.env = []string{
		"HOME=" + home, "SSH_AUTH_SOCK=", "DOCKER_CONFIG=" + filepath.Join(home, ".docker"),
		"SHIP_SSH_KEY=" + string(key), "SHIP_REGISTRY_USER=" + regUser, "SHIP_REGISTRY_PASSWORD=" + regPass,
	}
	t.Cleanup(s.cleanup)
	return s
}

// trust writes the app's known_hosts file with the sshd's host key, for the address
// ship.yaml names.
func (s *site) trust() {
	s.t.Helper()
	s.write("known_hosts", knownhosts.Line([]string{knownhosts.Normalize(s.addr)}, s.sshd.HostKey)+"\n")
}

func (s *site) write(name, content string) {
	s.t.Helper()
	if err := os.WriteFile(filepath.Join(s.dir, name), []byte(content), 0o644); err != nil {
		s.t.Fatal(err)
	}
}

func (s *site) commit(msg string) string {
	s.t.Helper()
	git(s.t, s.dir, "add", "-A")
	git(s.t, s.dir, "commit", "-q", "--allow-empty", "-m", msg)
	return git(s.t, s.dir, "rev-parse", "HEAD")
}

// editCompose changes the compose file and commits it; it returns the new sha.
func (s *site) editCompose(msg string, edit func(string) string) string {
	s.t.Helper()
	file := filepath.Join(s.dir, "docker-compose.yml")
	data, err := os.ReadFile(file)
	if err != nil {
		s.t.Fatal(err)
	}
	changed := edit(string(data))
	if changed == string(data) {
		s.t.Fatalf("edit %q changed nothing", msg)
	}
	s.write("docker-compose.yml", changed)
	return s.commit(msg)
}

// push puts the example app's image in the registry as the image of sha, and removes
// the engine's copy of that tag, so that the deploy has to pull it, with credentials.
func (s *site) push(sha string) string {
	s.t.Helper()
	ref := s.reg.Addr + "/example/web:" + sha
	ctx := context.Background()
	if _, err := s.cli.ImageTag(ctx, client.ImageTagOptions{Source: testenv.AppImageRef, Target: ref}); err != nil {
		s.t.Fatal(err)
	}
	s.reg.Push(s.t, s.cli, ref)
	// Force: the image may have no other tag left while another run's container uses
	// it; this untags only this run's reference (a running container keeps its image).
	if _, err := s.cli.ImageRemove(ctx, ref, client.ImageRemoveOptions{Force: true}); err != nil {
		s.t.Fatal(err)
	}
	return ref
}

func (s *site) run(args ...string) result {
	s.t.Helper()
	return run(s.t, s.dir, s.env, args...)
}

// deploy runs shipctl deploy e2e and checks its exit code.
func (s *site) deploy(want int, args ...string) result {
	s.t.Helper()
	r := s.run(append([]string{"deploy", "e2e"}, args...)...)
	if r.code != want {
		s.t.Fatalf("shipctl deploy %v: want exit %d\n%s", args, want, r)
	}
	return r
}

// containers are the app's containers by service.
func (s *site) containers() map[string]container.Summary {
	s.t.Helper()
	cs, err := s.cli.ContainerList(context.Background(), client.ContainerListOptions{All: true,
		Filters: make(client.Filters).Add("label", "com.docker.compose.project="+s.project)})
	if err != nil {
		s.t.Fatal(err)
	}
	out := map[string]container.Summary{}
	for _, c := range cs.Items {
		out[c.Labels["com.docker.compose.service"]] = c
	}
	return out
}

func (s *site) inspect(id string) container.InspectResponse {
	s.t.Helper()
	res, err := s.cli.ContainerInspect(context.Background(), id, client.ContainerInspectOptions{})
	if err != nil {
		s.t.Fatal(err)
	}
	return res.Container
}

// current is the commit of the release the host's current symlink points at: its
// name without the compose file's hash.
func (s *site) current() string {
	s.t.Helper()
	name := s.currentName()
	if i := strings.LastIndex(name, "-"); i > 0 && len(name)-i-1 == release.HashLen {
		return name[:i]
	}
	return name
}

// name is the one release of sha on the host (<sha>-<hash>).
func (s *site) name(sha string) string {
	s.t.Helper()
	entries, _ := os.ReadDir(filepath.Join(s.path, "releases"))
	var found []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), sha+"-") {
			found = append(found, e.Name())
		}
	}
	if len(found) != 1 {
		s.t.Fatalf("releases of %s on the host: %v, want one", sha, found)
	}
	return found[0]
}

// short is the release of sha as shipctl shows it.
func (s *site) short(sha string) string { return release.Short(s.name(sha)) }

// currentName is the release the host's current symlink points at.
func (s *site) currentName() string {
	s.t.Helper()
	target, err := os.Readlink(filepath.Join(s.path, "current"))
	if os.IsNotExist(err) {
		return ""
	}
	if err != nil {
		s.t.Fatal(err)
	}
	return strings.TrimPrefix(target, "releases/")
}

// releases lists releases/ on the host, hidden entries too.
func (s *site) releases() []string {
	s.t.Helper()
	entries, err := os.ReadDir(filepath.Join(s.path, "releases"))
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		s.t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
		if e.IsDir() {
			files, _ := os.ReadDir(filepath.Join(s.path, "releases", e.Name()))
			for _, f := range files {
				out = append(out, e.Name()+"/"+f.Name())
			}
		}
	}
	return out
}

type auditLine struct {
	Event, SHA, Prev, Result, Current, Error, Who string
}

func (s *site) audit() []auditLine {
	s.t.Helper()
	data, err := os.ReadFile(filepath.Join(s.path, "audit.log"))
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		s.t.Fatal(err)
	}
	var out []auditLine
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		var a auditLine
		if err := json.Unmarshal([]byte(line), &a); err != nil {
			s.t.Fatalf("audit.log line %q: %v", line, err)
		}
		out = append(out, a)
	}
	return out
}

// assertUntouched fails when the host's folder for the app exists.
func (s *site) assertUntouched() {
	s.t.Helper()
	if _, err := os.Stat(s.path); !os.IsNotExist(err) {
		var found []string
		filepath.WalkDir(s.path, func(p string, _ os.DirEntry, _ error) error {
			found = append(found, p)
			return nil
		})
		s.t.Errorf("the host was touched: %v", found)
	}
	if cs := s.containers(); len(cs) > 0 {
		s.t.Errorf("the app has containers: %v", cs)
	}
}

func (s *site) cleanup() {
	ctx, cancel := context.WithTimeout(context.Background(), testenv.Scale(time.Minute))
	defer cancel()
	if err := engine.New(s.cli).Down(ctx, s.project, engine.DownOptions{Volumes: true}); err != nil {
		s.t.Logf("clean up %s: %v", s.project, err)
	}
	// And the app's projects of other names (<app>-<env>): whatever the deploy named them.
	testenv.RemoveProjects(ctx, s.cli, s.app)
	imgs, err := s.cli.ImageList(ctx, client.ImageListOptions{Filters: make(client.Filters).Add("reference", s.reg.Addr+"/*/*")})
	if err == nil {
		for _, img := range imgs.Items {
			for _, tag := range img.RepoTags {
				_, _ = s.cli.ImageRemove(ctx, tag, client.ImageRemoveOptions{Force: true})
			}
		}
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func short(sha string) string { return sha[:12] }

// TestDeployLifecycle: the whole flow through the real parts. ship (build, test,
// push) and a first deploy; a redeploy of the same sha restarts nothing; a new sha
// replaces the container; status, history, logs, rollback.
func TestDeployLifecycle(t *testing.T) {
	t.Parallel()
	hook := newWebhook(t)
	s := newSite(t, siteOptions{keep: 2, webhook: hook.url})
	shaA := git(t, s.dir, "rev-parse", "HEAD")

	// Not pushed yet: refused before any host is touched.
	r := s.deploy(1)
	if !strings.Contains(r.stderr, "no passing test run") {
		t.Errorf("an untested deploy was not refused for it:\n%s", r)
	}
	r = s.deploy(1, "--untested")
	if !strings.Contains(r.stderr, "not in the registry") || !strings.Contains(r.stderr, "shipctl push") {
		t.Errorf("a deploy of unpushed images was not refused for it:\n%s", r)
	}
	s.assertUntouched()

	for _, step := range []string{"build", "test", "push"} {
		if r := s.run(step); r.code != 0 {
			t.Fatalf("shipctl %s: %s", step, r)
		}
	}
	// build made the image on this engine; the host must pull it.
	// Force: another run's container may use the same image (the same build) under
	// its own registry's tag; this untags only this run's reference.
	if _, err := s.cli.ImageRemove(context.Background(), s.reg.Addr+"/example/web:"+shaA, client.ImageRemoveOptions{Force: true}); err != nil {
		t.Fatal(err)
	}

	// The first deploy.
	r = s.deploy(0)
	for _, want := range []string{"pulled " + s.reg.Addr + "/example/web:" + shaA, "on " + s.short(shaA) + " (deployed)", "current -> releases/" + s.name(shaA)} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("the output lacks %q:\n%s", want, r)
		}
	}
	web := s.containers()["web"]
	if web.ID == "" || web.State != "running" || web.Image != s.reg.Addr+"/example/web:"+shaA {
		t.Fatalf("web = %+v", web)
	}
	if h := s.inspect(web.ID).State.Health; h == nil || h.Status != "healthy" {
		t.Errorf("web is not healthy: %+v", h)
	}
	if s.current() != shaA {
		t.Errorf("current = %q", s.current())
	}
	composeFile := filepath.Join(s.path, "releases", s.name(shaA), "docker-compose.yml")
	if st, err := os.Stat(composeFile); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("the release's compose file: %v, %v", st, err)
	}
	var info struct {
		SHA, Version, Env, Result, Who, From string
		Time                                 time.Time
	}
	data, _ := os.ReadFile(filepath.Join(s.path, "releases", s.name(shaA), "release.json"))
	if err := json.Unmarshal(data, &info); err != nil || info.SHA != s.name(shaA) || info.Version != shaA || info.Env != "e2e" || info.Result != "deployed" || info.Who == "" || info.Time.IsZero() {
		t.Errorf("release.json = %s (%v)", data, err)
	}
	if a := s.audit(); len(a) != 1 || a[0].Event != "deploy" || a[0].Result != "deployed" || a[0].SHA != s.name(shaA) {
		t.Errorf("audit.log = %+v", a)
	}

	// The same sha again: no container restarts.
	startedAt := s.inspect(web.ID).State.StartedAt
	r = s.deploy(0)
	if again := s.containers()["web"]; again.ID != web.ID || s.inspect(again.ID).State.StartedAt != startedAt {
		t.Errorf("the redeploy restarted web: %s -> %s", web.ID, again.ID)
	}
	if !strings.Contains(r.stdout, "unchanged") {
		t.Errorf("the plan does not say unchanged:\n%s", r)
	}
	if a := s.audit(); len(a) != 2 {
		t.Errorf("audit.log has %d lines after two deploys", len(a))
	}

	// A new sha.
	shaB := s.editCompose("version 2", func(c string) string { return strings.Replace(c, "${VERSION:-v1}", "v2", 1) })
	s.push(shaB)
	r = s.deploy(0, "--untested", "--json")
	webB := s.containers()["web"]
	if webB.ID == web.ID || webB.Image != s.reg.Addr+"/example/web:"+shaB || !contains(s.inspect(webB.ID).Config.Env, "VERSION=v2") {
		t.Errorf("web after the new sha: %+v", webB)
	}
	if s.current() != shaB {
		t.Errorf("current = %q", s.current())
	}
	ev := lastEvent(t, r.stdout, "deploy_result")
	if hosts, _ := ev["hosts"].([]any); len(hosts) != 1 || hosts[0].(map[string]any)["current"] != s.name(shaB) {
		t.Errorf("deploy_result = %v", ev)
	}

	// status, history, logs.
	r = s.run("status", "e2e")
	if r.code != 0 || !strings.Contains(r.stdout, s.short(shaB)) || !strings.Contains(r.stdout, "running (healthy)") || strings.Contains(r.stdout, "drift") {
		t.Errorf("status:\n%s", r)
	}
	r = s.run("history", "e2e")
	if r.code != 0 || !strings.Contains(r.stdout, "* "+s.short(shaB)) || !strings.Contains(r.stdout, s.short(shaA)) || strings.Count(r.stdout, "deploy ") < 3 {
		t.Errorf("history:\n%s", r)
	}
	r = s.run("logs", "e2e", "web")
	if r.code != 0 || !strings.Contains(r.stdout, "web | app v2 listening on :8080") {
		t.Errorf("logs:\n%s", r)
	}

	// rollback goes back to the previous release without pulling.
	r = s.run("rollback", "e2e")
	if r.code != 0 || s.current() != shaA || strings.Contains(r.stdout, "pulling") {
		t.Fatalf("rollback (current %s):\n%s", s.current(), r)
	}
	if web := s.containers()["web"]; web.Image != s.reg.Addr+"/example/web:"+shaA {
		t.Errorf("web after the rollback: %s", web.Image)
	}
	if a := s.audit(); len(a) != 4 || a[3].Event != "rollback" || a[3].SHA != s.name(shaA) || a[3].Prev != s.name(shaB) {
		t.Errorf("audit.log = %+v", a)
	}

	// --sha deploys a commit that is not HEAD with that commit's compose file: A's
	// runs already, so nothing changes.
	webA := s.containers()["web"]
	r = s.deploy(0, "--sha", shaA[:9], "--untested")
	if s.current() != shaA || s.containers()["web"].ID != webA.ID {
		t.Errorf("deploy --sha of the running release changed it:\n%s", r)
	}

	got := hook.events()
	want := "start,success,start,success,start,success,rollback,start,success"
	if strings.Join(got, ",") != want {
		t.Errorf("the webhook got %v, want %s", got, want)
	}
}

// webhook records the notifications shipctl POSTs to it.
// TestShipDeploys takes a commit through every step of ship: build, test, push, deploy.
func TestShipDeploys(t *testing.T) {
	t.Parallel()
	s := newSite(t, siteOptions{})
	sha := git(t, s.dir, "rev-parse", "HEAD")
	logFrom := len(s.sshd.Log())
	r := s.run("ship", "e2e", "--json")
	if r.code != 0 {
		t.Fatalf("shipctl ship e2e: %s", r)
	}
	// The preflight (hosts, lock) comes before the build; the plan after the push; one
	// SSH connection carries the preflight and the deploy.
	order := []string{"ship_start", "preflight", "lock", "build_done", "test_passed", "push_done", "plan", "deploy_result", "ship_done"}
	if n := strings.Count(s.sshd.Log()[logFrom:], "Accepted publickey"); n != 1 {
		t.Errorf("ship logged in to the host %d times, want once:\n%s", n, s.sshd.Log()[logFrom:])
	}
	at := 0
	for _, ev := range events(t, r) {
		if at < len(order) && ev["event"] == order[at] {
			if ev["event"] == "ship_done" && ev["deployed"] != true {
				t.Errorf("ship_done does not say deployed: %v", ev)
			}
			at++
		}
	}
	if at != len(order) {
		t.Errorf("want the events %v in that order: %s", order, r)
	}
	if s.current() != sha {
		t.Errorf("current = %q, want %s", s.current(), sha)
	}
	if web := s.containers()["web"]; web.State != "running" || web.Image != s.reg.Addr+"/example/web:"+sha {
		t.Errorf("web after ship = %+v", web)
	}
	// The shell completion of rollback's SHA offers the releases the host keeps.
	if c := s.run("__complete", "rollback", "e2e", ""); c.code != 0 || !strings.HasPrefix(c.stdout, short(sha)+"-") {
		t.Errorf("completion of rollback e2e: %s", c)
	}
}

type webhook struct {
	url string
	mu  sync.Mutex
	got []string
}

func newWebhook(t *testing.T) *webhook {
	t.Helper()
	w := &webhook{}
	srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		var n struct{ Event string }
		if err := json.NewDecoder(r.Body).Decode(&n); err != nil {
			http.Error(rw, err.Error(), http.StatusBadRequest)
			return
		}
		w.mu.Lock()
		w.got = append(w.got, n.Event)
		w.mu.Unlock()
	}))
	t.Cleanup(srv.Close)
	w.url = srv.URL + "/deploys"
	return w
}

func (w *webhook) events() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.got...)
}

// TestDeployFailingHealthRestores: a release that never becomes healthy puts the
// previous one back, and the deploy exits 4.
func TestDeployFailingHealthRestores(t *testing.T) {
	t.Parallel()
	s := newSite(t, siteOptions{})
	shaA := git(t, s.dir, "rev-parse", "HEAD")
	s.push(shaA)
	s.deploy(0, "--untested")
	before := s.containers()["web"]

	shaB := s.editCompose("unhealthy", func(c string) string {
		c = strings.Replace(c, "VERSION: ${VERSION:-v1}", "VERSION: ${VERSION:-v1}\n      FAIL_HEALTH: \"1\"", 1)
		c = strings.Replace(c, "retries: 3", "retries: 2", 1)
		return strings.Replace(c, "start_period: 10s", "start_period: 1s", 1)
	})
	s.push(shaB)
	r := s.deploy(4, "--untested", "--json")
	if s.current() != shaA {
		t.Errorf("current = %q, want the previous release", s.current())
	}
	web := s.containers()["web"]
	if web.Image != s.reg.Addr+"/example/web:"+shaA || web.State != "running" || web.ID == before.ID {
		t.Errorf("web = %s %s (before: %s)", web.Image, web.State, before.ID)
	}
	if h := s.inspect(web.ID).State.Health; h == nil || h.Status != "healthy" {
		t.Errorf("the restored web is not healthy: %+v", h)
	}
	ev := lastEvent(t, r.stdout, "deploy_result")
	host := ev["hosts"].([]any)[0].(map[string]any)
	if host["current"] != s.name(shaA) || host["result"] != "failed" {
		t.Errorf("deploy_result = %v", ev)
	}
	if !strings.Contains(r.stdout, "on "+s.short(shaA)+" (deploy of "+s.short(shaB)+" failed; previous release restored)") {
		t.Errorf("the output does not say which release the host is on:\n%s", r)
	}
	a := s.audit()
	if len(a) != 2 || a[1].Result != "failed" || a[1].Current != s.name(shaA) || !strings.Contains(a[1].Error, "unhealthy") {
		t.Errorf("audit.log = %+v", a)
	}
	data, _ := os.ReadFile(filepath.Join(s.path, "releases", s.name(shaB), "release.json"))
	if !strings.Contains(string(data), `"result": "failed"`) {
		t.Errorf("release.json of the failed release: %s", data)
	}

	// As text, the host's error is printed once (its FAILED line); the last line names
	// the host and points above.
	shaC := s.editCompose("unhealthy again", func(c string) string { return strings.Replace(c, "retries: 2", "retries: 1", 1) })
	s.push(shaC)
	r = s.deploy(4, "--untested")
	a = s.audit()
	if len(a) != 3 || a[2].Error == "" {
		t.Fatalf("audit.log = %+v", a)
	}
	if n := strings.Count(r.stdout+r.stderr, a[2].Error); n != 1 {
		t.Errorf("the host's error %q is printed %d times, want once:\n%s", a[2].Error, n, r)
	}
	if want := "error: deploy failed: deploy of " + s.short(shaC) + " failed on 1 of 1 host(s): " + s.dest + " (see above)"; !strings.Contains(r.stderr, want) {
		t.Errorf("the last line is not %q:\n%s", want, r)
	}
}

// TestDeployPreDeployJob: a pre-deploy job runs to completion with the new image
// (after what it depends on) before the switch; one that fails stops the deploy with
// its logs, and the previous release runs again.
func TestDeployPreDeployJob(t *testing.T) {
	t.Parallel()
	s := newSite(t, siteOptions{})
	job := func(url string) func(string) string {
		return func(c string) string {
			return c + `  migrate:
    image: example/web
    command: ["check", "-timeout=2s", "` + url + `"]
    depends_on:
      web:
        condition: service_healthy
    x-ship:
      job: pre-deploy
`
		}
	}
	shaA := s.editCompose("a job", job("http://web:8080/up"))
	s.push(shaA)
	r := s.deploy(0, "--untested")
	if !strings.Contains(r.stdout, "pre-deploy job migrate succeeded") {
		t.Errorf("the job did not run:\n%s", r)
	}
	// Its output is shown as it runs, prefixed with the host and the job, before it ends.
	out := s.dest + " migrate | ok   http://web:8080/up"
	if at := strings.Index(r.stdout, out); at < 0 || at > strings.Index(r.stdout, "pre-deploy job migrate succeeded") {
		t.Errorf("the job's output %q is not shown before its end:\n%s", out, r)
	}
	// Its container is gone; logs shows its last run from release.json.
	if l := s.run("logs", "e2e", "migrate"); l.code != 0 || !strings.Contains(l.stdout, "last run of pre-deploy job migrate: release "+short(shaA)+"-") ||
		!strings.Contains(l.stdout, ", exit code 0") || !strings.Contains(l.stdout, "migrate | ok   http://web:8080/up") {
		t.Errorf("shipctl logs e2e migrate does not show the job's last run:\n%s", l)
	}
	cs := s.containers()
	if _, ok := cs["migrate"]; ok || cs["web"].State != "running" {
		t.Errorf("containers after the job: %v", cs)
	}

	shaB := s.editCompose("a failing job", func(c string) string {
		return strings.Replace(c, `"http://web:8080/up"`, `"-expect", "v9", "http://web:8080/version"`, 1)
	})
	s.push(shaB)
	r = s.deploy(4, "--untested")
	// Said once: in the host's FAILED line (the last line points there).
	if all := r.stdout + r.stderr; strings.Count(all, "pre-deploy job migrate exited with code 1") != 1 || !strings.Contains(all, "FAIL http://web:8080/version") {
		t.Errorf("the failure does not show the job's exit and logs:\n%s", r)
	}
	if s.current() != shaA {
		t.Errorf("current = %s", s.current())
	}
	if web := s.containers()["web"]; web.Image != s.reg.Addr+"/example/web:"+shaA || web.State != "running" {
		t.Errorf("web = %s %s", web.Image, web.State)
	}
}

// TestDeployLocking: a deploy that finds the lock held exits 6 with nothing changed;
// one with --lock-wait waits for it and goes on.
func TestDeployLocking(t *testing.T) {
	t.Parallel()
	s := newSite(t, siteOptions{})
	// web takes a few seconds to become healthy, so that the first deploy holds the
	// lock long enough for the others to find it.
	sha := s.editCompose("slow start", func(c string) string {
		return strings.Replace(c, "VERSION: ${VERSION:-v1}", "VERSION: ${VERSION:-v1}\n      SLOW_START: 6s", 1)
	})
	s.push(sha)

	first := start(t, s.dir, s.env, "deploy", "e2e", "--untested", "--json")
	first.waitFor(t, `"msg":"locked `, 60*time.Second)

	locked := s.run("deploy", "e2e", "--untested")
	if locked.code != 6 || !strings.Contains(locked.stderr, "is locked by") || !strings.Contains(locked.stderr, "deploy of "+short(sha)) {
		t.Errorf("the second deploy: want exit 6 naming the holder\n%s", locked)
	}
	waiter := start(t, s.dir, s.env, "deploy", "e2e", "--untested", "--lock-wait", "2m")

	if r := first.wait(t); r.code != 0 {
		t.Fatalf("the first deploy: %s", r)
	}
	r := waiter.wait(t)
	if r.code != 0 || !strings.Contains(r.stdout, "waiting up to 2m0s for the lock held by") {
		t.Errorf("the deploy with --lock-wait:\n%s", r)
	}
	if a := s.audit(); len(a) != 2 {
		t.Errorf("audit.log has %d lines, want one per deploy that ran: %+v", len(a), a)
	}
	if s.current() != sha {
		t.Errorf("current = %q", s.current())
	}

	t.Run("shipctl lock", func(t *testing.T) {
		if r := s.run("lock", "e2e", "--reason", "maintenance"); r.code != 0 {
			t.Fatalf("lock: %s", r)
		}
		if r := s.run("deploy", "e2e", "--untested"); r.code != 6 || !strings.Contains(r.stderr, `"maintenance"`) {
			t.Errorf("deploy while locked:\n%s", r)
		}
		if r := s.run("status", "e2e"); !strings.Contains(r.stdout, "locked by") {
			t.Errorf("status does not show the lock:\n%s", r)
		}
		if r := s.run("unlock", "e2e"); r.code != 0 {
			t.Errorf("unlock: %s", r)
		}
		if _, err := os.Stat(filepath.Join(s.path, ".lock")); !os.IsNotExist(err) {
			t.Errorf("still locked: %v", err)
		}
	})
}

// TestDeployRefusesHosts: an unknown host and a changed host key abort before
// anything is sent to the host.
func TestDeployRefusesHosts(t *testing.T) {
	t.Parallel()
	s := newSite(t, siteOptions{})

	t.Run("unknown host", func(t *testing.T) {
		s.write("known_hosts", "")
		s.push(s.commit("no known hosts"))
		r := s.deploy(1, "--untested")
		if !strings.Contains(r.stderr, "unknown host") || !strings.Contains(r.stderr, knownhosts.Normalize(s.addr)+" ssh-ed25519") {
			t.Errorf("the refusal does not say why or give the line to add:\n%s", r)
		}
		s.assertUntouched()
	})
	t.Run("changed host key", func(t *testing.T) {
		s.trust()
		s.push(s.commit("trust the host"))
		s.sshd.RotateHostKey(t)
		r := s.deploy(1, "--untested")
		if !strings.Contains(r.stderr, "REMOTE HOST IDENTIFICATION HAS CHANGED") || !strings.Contains(r.stderr, "aborted before authentication") {
			t.Errorf("the refusal does not say why:\n%s", r)
		}
		s.assertUntouched()
	})
}

// TestDeployCtrlCDuringGrace: Ctrl-C during the grace countdown cancels with nothing
// touched.
func TestDeployCtrlCDuringGrace(t *testing.T) {
	t.Parallel()
	s := newSite(t, siteOptions{grace: "30s"})
	sha := git(t, s.dir, "rev-parse", "HEAD")
	s.push(sha)
	p := start(t, s.dir, s.env, "deploy", "e2e", "--untested", "--yes")
	p.waitFor(t, "starting in 30s; Ctrl-C cancels", 60*time.Second)
	if err := p.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	r := p.wait(t)
	if r.code != 130 || !strings.Contains(r.stderr, "cancelled") {
		t.Errorf("want exit 130:\n%s", r)
	}
	s.assertUntouched()
}

// TestDeployConnectionCut: the connection to the host is cut in the middle of the
// upload of the compose file. The host stays on its previous release with nothing
// partial under releases/, and a retry succeeds.
func TestDeployConnectionCut(t *testing.T) {
	t.Parallel()
	var proxy *cutProxy
	s := newSite(t, siteOptions{via: func(srv *testenv.SSHServer) string {
		proxy = newCutProxy(t, srv.Addr)
		return proxy.addr()
	}})
	shaA := git(t, s.dir, "rev-parse", "HEAD")
	s.push(shaA)
	s.deploy(0, "--untested")
	webA := s.containers()["web"]

	// A release whose compose file is a few MB, so that the cut falls inside it.
	shaB := s.editCompose("big", func(c string) string {
		return "x-padding: " + strings.Repeat("0123456789abcdef", 3<<20/16) + "\n" + c
	})
	s.push(shaB)
	proxy.cutAfter(1 << 20)
	r := s.deploy(4, "--untested")
	if proxy.cuts.Load() == 0 {
		t.Fatalf("the proxy cut nothing:\n%s", r)
	}
	if s.current() != shaA {
		t.Errorf("current = %q, want the previous release", s.current())
	}
	for _, e := range s.releases() {
		if strings.HasPrefix(e, shaB) || strings.HasPrefix(e, ".") || strings.Contains(e, "tmp") {
			t.Errorf("releases/ holds a part of the cut upload: %s", e)
		}
	}
	if web := s.containers()["web"]; web.ID != webA.ID || web.State != "running" {
		t.Errorf("web changed: %+v", web)
	}
	// The deploy connected again to release the lock and record the failure.
	if !strings.Contains(r.stderr, "the connection broke") {
		t.Errorf("the output does not say the connection broke:\n%s", r)
	}
	// Nothing of the cut deploy is left: not the lock, nothing staged. The staging
	// folder itself may remain, but empty.
	if left, _ := filepath.Glob(filepath.Join(s.path, ".lock*")); len(left) > 0 {
		t.Errorf("the lock was left behind: %v", left)
	}
	staged, err := os.ReadDir(filepath.Join(s.path, ".tmp"))
	if err != nil && !os.IsNotExist(err) {
		t.Errorf("read .tmp: %v", err)
	}
	for _, e := range staged {
		t.Errorf(".tmp holds a part of the upload: %s", e.Name())
	}

	proxy.cutAfter(0)
	r = s.deploy(0, "--untested")
	if s.current() != shaB {
		t.Errorf("the retry (current %s):\n%s", s.current(), r)
	}
	if a := s.audit(); len(a) != 3 || a[1].Result != "failed" || a[2].Result != "deployed" {
		t.Errorf("audit.log = %+v", a)
	}
}

// TestDeploySecrets: the env_file's values reach the containers and appear nowhere in
// what shipctl shows or leaves on the host besides the compose file (mode 0600): not
// in the output, the JSON events, an error that echoes a container's logs, audit.log
// or release.json.
func TestDeploySecrets(t *testing.T) {
	t.Parallel()
	s := newSite(t, siteOptions{})
	shaA := s.editCompose("a secret", func(c string) string {
		return strings.Replace(c, "VERSION: ${VERSION:-v1}", "VERSION: ${VERSION:-v1}\n      TOKEN: ${SECRET_TOKEN}", 1)
	})
	s.push(shaA)
	var shown []result
	shown = append(shown, s.deploy(0, "--untested"), s.deploy(0, "--untested", "--json"))
	web := s.containers()["web"]
	if !contains(s.inspect(web.ID).Config.Env, "TOKEN="+secretValue) {
		t.Fatal("the container did not get the secret")
	}

	// A release whose container prints the secret as it fails: the error has its logs.
	shaB := s.editCompose("echo the secret", func(c string) string {
		c = strings.Replace(c, "    image: example/web\n", "    image: example/web\n    command: [\"${SECRET_TOKEN}\"]\n", 1)
		return strings.Replace(c, "start_period: 10s", "start_period: 1s", 1)
	})
	s.push(shaB)
	failed := s.deploy(4, "--untested")
	if !strings.Contains(failed.stderr+failed.stdout, "[redacted]") {
		t.Errorf("the failure does not show the container's (redacted) logs:\n%s", failed)
	}
	shown = append(shown, failed, s.run("status", "e2e", "--json"), s.run("history", "e2e", "--json"), s.run("logs", "e2e"))
	for _, r := range shown {
		if strings.Contains(r.stdout+r.stderr, secretValue) {
			t.Errorf("the secret is shown:\n%s", r)
		}
	}
	for _, f := range []string{"audit.log", filepath.Join("releases", s.name(shaA), "release.json"), filepath.Join("releases", s.name(shaB), "release.json")} {
		data, err := os.ReadFile(filepath.Join(s.path, f))
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(data), secretValue) {
			t.Errorf("%s holds the secret", f)
		}
	}
	file := filepath.Join(s.path, "releases", s.name(shaA), "docker-compose.yml")
	data, _ := os.ReadFile(file)
	st, _ := os.Stat(file)
	if !strings.Contains(string(data), secretValue) || st.Mode().Perm() != 0o600 {
		t.Errorf("the compose file on the host: mode %v, holds the value: %v", st.Mode(), strings.Contains(string(data), secretValue))
	}
	if a := s.audit(); len(a) != 3 {
		t.Errorf("audit.log has %d lines after 3 deploys", len(a))
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// lastEvent is the last NDJSON event named kind in out.
func lastEvent(t *testing.T, out, kind string) map[string]any {
	t.Helper()
	var found map[string]any
	for _, line := range strings.Split(out, "\n") {
		var ev map[string]any
		if json.Unmarshal([]byte(line), &ev) == nil && ev["event"] == kind {
			found = ev
		}
	}
	if found == nil {
		t.Fatalf("no %s event in:\n%s", kind, out)
	}
	return found
}

// proc is a shipctl running in the background.
type proc struct {
	cmd    *exec.Cmd
	mu     sync.Mutex
	stdout bytes.Buffer
	stderr bytes.Buffer
	done   chan struct{}
	err    error
}

type lockedWriter struct {
	mu  *sync.Mutex
	buf *bytes.Buffer
}

func (w lockedWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(b)
}

func start(t *testing.T, dir string, env []string, args ...string) *proc {
	t.Helper()
	return startCmd(t, dir, env, shipctl, args...)
}

// startCmd starts name (shipctl, or a command that runs it) with args.
func startCmd(t *testing.T, dir string, env []string, name string, args ...string) *proc {
	t.Helper()
	return startWith(t, dir, env, nil, name, args...)
}

// startWith is startCmd with attr, when given, changing the process's attributes.
func startWith(t *testing.T, dir string, env []string, attr func(*syscall.SysProcAttr), name string, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(name, args...), done: make(chan struct{})}
	p.cmd.Dir = dir
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout = lockedWriter{&p.mu, &p.stdout}
	p.cmd.Stderr = lockedWriter{&p.mu, &p.stderr}
	testenv.Tied(p.cmd) // not left running by a test binary killed at its -timeout
	if attr != nil {
		attr(p.cmd.SysProcAttr)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

func (p *proc) output() (string, string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stdout.String(), p.stderr.String()
}

// waitFor waits until stdout holds s.
func (p *proc) waitFor(t *testing.T, s string, timeout time.Duration) {
	t.Helper()
	timeout = testenv.Scale(timeout)
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		out, _ := p.output()
		if strings.Contains(out, s) {
			return
		}
		select {
		case <-p.done:
			out, errOut := p.output()
			t.Fatalf("shipctl ended before writing %q\nstdout:\n%s\nstderr:\n%s", s, out, errOut)
		case <-time.After(20 * time.Millisecond):
		}
	}
	out, errOut := p.output()
	t.Fatalf("no %q after %s\nstdout:\n%s\nstderr:\n%s", s, timeout, out, errOut)
}

func (p *proc) wait(t *testing.T) result {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(testenv.Scale(3 * time.Minute)):
		t.Fatalf("shipctl did not finish in %s", testenv.Scale(3*time.Minute))
	}
	code := 0
	if ee, ok := p.err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if p.err != nil {
		t.Fatal(p.err)
	}
	out, errOut := p.output()
	return result{code: code, stdout: out, stderr: errOut}
}

// cutProxy forwards TCP connections to target. Armed with cutAfter(n), it cuts the
// first connection that has sent more than n bytes towards target, both ways at once:
// what a dropped network does in the middle of a transfer.
type cutProxy struct {
	ln     net.Listener
	target string
	limit  atomic.Int64
	cuts   atomic.Int32
	wg     sync.WaitGroup
}

func newCutProxy(t *testing.T, target string) *cutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln, target: target}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(func() {
		ln.Close()
		p.wg.Wait()
	})
	return p
}

func (p *cutProxy) addr() string     { return p.ln.Addr().String() }
func (p *cutProxy) cutAfter(n int64) { p.limit.Store(n) }

func (p *cutProxy) serve() {
	defer p.wg.Done()
	var conns sync.WaitGroup
	defer conns.Wait()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		conns.Add(1)
		go func() {
			defer conns.Done()
			p.handle(c)
		}()
	}
}

func (p *cutProxy) handle(c net.Conn) {
	defer c.Close()
	up, err := net.Dial("tcp", p.target)
	if err != nil {
		return
	}
	defer up.Close()
	done := make(chan struct{}, 2)
	go func() {
		io.Copy(c, up)
		done <- struct{}{}
	}()
	go func() {
		var sent int64
		r := bufio.NewReaderSize(c, 32<<10)
		buf := make([]byte, 32<<10)
		for {
			n, err := r.Read(buf)
			if n > 0 {
				sent += int64(n)
				if limit := p.limit.Load(); limit > 0 && sent > limit {
					p.cuts.Add(1)
					c.Close()
					up.Close()
					break
				}
				if _, werr := up.Write(buf[:n]); werr != nil {
					break
				}
			}
			if err != nil {
				break
			}
		}
		done <- struct{}{}
	}()
	<-done
}
