package agent_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"
	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/client"

	"github.com/shipdeploy/ship/pkg/agent"
	"github.com/shipdeploy/ship/pkg/agentapi"
	"github.com/shipdeploy/ship/pkg/engine"
	"github.com/shipdeploy/ship/test/loadgen"
	"github.com/shipdeploy/ship/test/testenv"
)

// shipdBinary builds cmd/shipd once per test process.
var (
	binOnce sync.Once
	binPath string
	binErr  error
)

func shipdBinary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "shipd-bin-")
		if err != nil {
			binErr = err
			return
		}
		binPath = filepath.Join(dir, "shipd")
		binErr = testenv.Build(binPath, "./cmd/shipd")
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// daemon is shipd run as its own process, as systemd runs it.
type daemon struct {
	t      *testing.T
	bin    string
	dir    string
	config string
	sock   string
	state  string
	logs   string // its stdout and stderr, appended across restarts
	cwd    string // its working directory (empty at the start)
	cmd    *exec.Cmd
	exited chan struct{}
	client *agentapi.Client
	sd     *testenv.Systemd
}

func newDaemon(t *testing.T) *daemon {
	t.Helper()
	// A short folder: a unix socket's path is limited to about 100 bytes.
	dir, err := os.MkdirTemp("", "shipd-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	d := &daemon{
		t: t, bin: shipdBinary(t), dir: dir, cwd: filepath.Join(dir, "cwd"),
		config: filepath.Join(dir, "shipd.yaml"), sock: filepath.Join(dir, "run", "shipd.sock"),
		state: filepath.Join(dir, "lib", "state.json"), logs: filepath.Join(dir, "shipd.log"),
	}
	cfg := fmt.Sprintf("socket: %s\nstate: %s\nlog_level: debug\nshutdown_timeout: 10s\nhandover_timeout: 20s\n", d.sock, d.state)
	if err := os.WriteFile(d.config, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(d.cwd, 0o755); err != nil {
		t.Fatal(err)
	}
	d.client = agentapi.NewClient(agentapi.UnixDialer(d.sock))
	t.Cleanup(d.client.Close)
	d.sd = testenv.FakeSystemd(t, filepath.Join(dir, "notify.sock"))
	t.Cleanup(func() {
		if d.cmd != nil {
			d.signal(syscall.SIGKILL)
			<-d.exited
		}
		if t.Failed() {
			data, _ := os.ReadFile(d.logs)
			t.Logf("shipd's log:\n%s", data)
		}
	})
	return d
}

// start runs shipd as systemd would, and waits until its API answers. With fromStore
// it passes the sockets shipd kept in the (fake) systemd's file descriptor store, as
// systemd does on a restart; without, the store is flushed first, as `systemctl stop`
// does.
func (d *daemon) start(fromStore bool) {
	d.t.Helper()
	out, err := os.OpenFile(d.logs, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		d.t.Fatal(err)
	}
	defer out.Close()
	cmd := exec.Command(d.bin, "run", "--config", d.config)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Dir = d.cwd
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+d.sd.Path, "WATCHDOG_USEC=400000")
	if fromStore {
		files, names := d.sd.Files()
		cmd.ExtraFiles = files
		cmd.Env = append(cmd.Env, fmt.Sprintf("LISTEN_FDS=%d", len(files)), "LISTEN_FDNAMES="+strings.Join(names, ":"))
	} else {
		d.sd.Flush()
	}
	testenv.Tied(cmd) // not left running by a test binary killed at its -timeout
	if err := cmd.Start(); err != nil {
		d.t.Fatal(err)
	}
	testenv.TrackProcess(d.t, cmd.Process.Pid)
	d.cmd, d.exited = cmd, make(chan struct{})
	go func() { _ = cmd.Wait(); close(d.exited) }()
	d.waitReady(cmd.Process.Pid)
}

// waitReady waits until the shipd with pid answers on the socket.
func (d *daemon) waitReady(pid int) {
	d.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		st, err := d.client.Status(ctx)
		cancel()
		if err == nil && st.PID == pid {
			return
		}
		select {
		case <-d.exited:
			d.t.Fatalf("shipd exited before it was ready")
		default:
		}
		time.Sleep(10 * time.Millisecond)
	}
	d.t.Fatalf("shipd %d did not answer on %s", pid, d.sock)
}

func (d *daemon) signal(sig syscall.Signal) {
	if d.cmd != nil && d.cmd.Process != nil {
		_ = d.cmd.Process.Signal(sig)
	}
}

// stop sends sig and waits for the process to end.
func (d *daemon) stop(sig syscall.Signal) {
	d.t.Helper()
	d.signal(sig)
	select {
	case <-d.exited:
	case <-time.After(30 * time.Second):
		d.t.Fatalf("shipd did not exit after %s", sig)
	}
	d.cmd = nil
}

func (d *daemon) status() *agentapi.Status {
	d.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := d.client.Status(ctx)
	if err != nil {
		d.t.Fatalf("status: %v", err)
	}
	return st
}

// stateFile reads and parses the state file: it must always be valid JSON.
func (d *daemon) stateFile() agent.State {
	d.t.Helper()
	data, err := os.ReadFile(d.state)
	if err != nil {
		d.t.Fatalf("read the state: %v", err)
	}
	var s agent.State
	if err := json.Unmarshal(data, &s); err != nil {
		d.t.Fatalf("the state file is not valid JSON: %v\n%s", err, data)
	}
	return s
}

func (d *daemon) logText() string {
	data, _ := os.ReadFile(d.logs)
	return string(data)
}

// app is the test's compose project and its folder on the "host".
type app struct {
	t      *testing.T
	name   string
	path   string
	listen string
	cli    *client.Client
	eng    *engine.Engine
	// image is the services' image; pull is their pull_policy line, if any.
	image, pull string
	// auth is the deploy requests' RegistryAuth.
	auth map[string]string
}

func newApp(t *testing.T) *app {
	t.Helper()
	cli := testenv.Docker(t)
	testenv.AppImage(t, cli)
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	a := &app{t: t, name: "shipdtest-" + hex.EncodeToString(b), path: t.TempDir(), listen: freeAddr(t), cli: cli, eng: engine.New(cli),
		image: testenv.AppImageRef, pull: "    pull_policy: never\n",
	}
	testenv.Track(t, "project", a.name) // swept after a killed run
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), testenv.Scale(time.Minute))
		defer cancel()
		if err := a.eng.Down(ctx, a.name, engine.DownOptions{Volumes: true}); err != nil {
			t.Errorf("down: %v", err)
		}
	})
	return a
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// release writes releases/<sha>/docker-compose.yml: a routed web service, a worker
// (stateless, replaced start-first) and a store (a named volume: stop-first), all of
// a.image.
// webEnv adds to web's environment; extra is YAML appended to the services.
func (a *app) release(sha string, webEnv map[string]string, extra string) {
	a.t.Helper()
	var env strings.Builder
	for k, v := range webEnv {
		fmt.Fprintf(&env, "      %s: %q\n", k, v)
	}
	yaml := fmt.Sprintf(`services:
  web:
    image: %[1]s
%[6]s    environment:
      VERSION: %[2]s
%[3]s    stop_grace_period: 2s
    x-ship:
      port: 8080
      listen: "%[4]s"
      health: /up
      drain: 2s
  worker:
    image: %[1]s
%[6]s    environment:
      VERSION: %[2]s
    stop_grace_period: 2s
    healthcheck: {interval: 300ms, timeout: 2s, retries: 3}
  store:
    image: %[1]s
%[6]s    environment:
      VERSION: %[2]s
    volumes: ["data:/data"]
    stop_grace_period: 2s
    healthcheck: {interval: 300ms, timeout: 2s, retries: 3}
%[5]svolumes:
  data: {}
`, a.image, sha, env.String(), a.listen, extra, a.pull)
	dir := filepath.Join(a.path, "releases", sha)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		a.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "docker-compose.yml"), []byte(yaml), 0o600); err != nil {
		a.t.Fatal(err)
	}
}

func (a *app) request(sha string, deadline time.Duration) agentapi.DeployRequest {
	return agentapi.DeployRequest{
		App: a.name, Path: a.path, SHA: sha, RegistryAuth: a.auth,
		Health: &agentapi.HealthCheck{
			Interval: agentapi.Duration(200 * time.Millisecond), Timeout: agentapi.Duration(2 * time.Second),
			Deadline: agentapi.Duration(deadline),
		},
		WaitTimeout: agentapi.Duration(30 * time.Second),
		Origin:      agentapi.Origin{Env: "test", Host: "localhost", Who: "tester@test"},
	}
}

// events records a deploy's events.
type events struct {
	mu   sync.Mutex
	list []agentapi.Event
}

func (e *events) add(ev agentapi.Event) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.list = append(e.list, ev)
}

func (e *events) String() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var b strings.Builder
	for _, ev := range e.list {
		fmt.Fprintf(&b, "  %-5s %-9s %-7s %s\n", ev.Level, ev.Step, ev.Service, ev.Msg)
		for _, l := range ev.Logs {
			fmt.Fprintf(&b, "        | %s\n", l)
		}
	}
	return b.String()
}

func (a *app) deploy(d *daemon, req agentapi.DeployRequest) (*agentapi.Result, *events, error) {
	a.t.Helper()
	ev := &events{}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := d.client.Deploy(ctx, req, ev.add)
	return res, ev, err
}

func (a *app) mustDeploy(d *daemon, sha string) {
	a.t.Helper()
	start := time.Now()
	res, ev, err := a.deploy(d, a.request(sha, 10*time.Second))
	if err != nil {
		a.t.Fatalf("deploy %s: %v\nevents:\n%s", sha, err, ev)
	}
	if res.Result != agentapi.ResultDeployed || res.Current != sha {
		a.t.Fatalf("deploy %s: result %+v", sha, res)
	}
	a.t.Logf("deployed %s in %s", sha, time.Since(start).Round(time.Millisecond))
}

// version GETs /version through shipd's route.
func (a *app) version() string {
	a.t.Helper()
	c := &http.Client{Timeout: 3 * time.Second}
	resp, err := c.Get("http://" + a.listen + "/version")
	if err != nil {
		a.t.Fatalf("GET /version: %v", err)
	}
	defer resp.Body.Close()
	var v struct{ Version string }
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &v) != nil {
		a.t.Fatalf("GET /version: %s %s", resp.Status, body)
	}
	return v.Version
}

// containers lists the project's containers by service: name -> VERSION env.
func (a *app) containers() map[string][]string {
	a.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cs, err := a.cli.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: make(client.Filters).Add("label", "com.docker.compose.project="+a.name)})
	if err != nil {
		a.t.Fatal(err)
	}
	out := map[string][]string{}
	for _, c := range cs.Items {
		res, err := a.cli.ContainerInspect(ctx, c.ID, client.ContainerInspectOptions{})
		if err != nil {
			continue
		}
		ins := res.Container
		ver := ""
		for _, e := range ins.Config.Env {
			if v, ok := strings.CutPrefix(e, "VERSION="); ok {
				ver = v
			}
		}
		svc := c.Labels["com.docker.compose.service"]
		out[svc] = append(out[svc], fmt.Sprintf("%s:%s:%s", strings.TrimPrefix(ins.Name, "/"), ver, ins.State.Status))
	}
	return out
}

// onlyVersion checks that each service has one running container, of version v.
func (a *app) onlyVersion(v string) error {
	cs := a.containers()
	for _, svc := range []string{"web", "worker", "store"} {
		list := cs[svc]
		if len(list) != 1 || !strings.HasSuffix(list[0], ":"+v+":running") {
			return fmt.Errorf("service %s: containers %v, want one running %s", svc, list, v)
		}
	}
	return nil
}

func waitUntil(t *testing.T, what string, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		if err = cond(); err == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s: %v", what, err)
}

// load runs the load generator through the route in the background, at 200 requests
// a second over 4 keep-alive connections with 30%% of the requests on fresh ones.
func (a *app) load(d time.Duration) func() *loadgen.Report {
	a.t.Helper()
	done := make(chan *loadgen.Report, 1)
	go func() {
		rep, err := loadgen.Run(context.Background(), loadgen.Config{
			URL: "http://" + a.listen + "/version", Rate: 200, Duration: d, Conns: 4, Fresh: 0.3, Timeout: loadTimeout,
		})
		if err != nil {
			a.t.Error(err)
		}
		done <- rep
	}()
	return func() *loadgen.Report {
		a.t.Helper()
		rep := <-done
		if rep == nil {
			a.t.FailNow()
		}
		var text bytes.Buffer
		_ = rep.WriteText(&text)
		a.t.Logf("load:\n%s", text.String())
		return rep
	}
}

// loadTimeout bounds one request of the test's load: only a hang, never a slow answer
// on a busy machine, counts as a failed request (the swap must lose none; a starved
// machine may take seconds to answer any of them).
const loadTimeout = time.Minute

func noFailures(t *testing.T, what string, rep *loadgen.Report) {
	t.Helper()
	if rep.Failed() != 0 || rep.OK != rep.Requests || rep.Requests == 0 {
		t.Errorf("%s: %d requests, %d 2xx, %d non-2xx, %d connection errors %v, %d cut: want every request answered 2xx",
			what, rep.Requests, rep.OK, rep.Non2xx, rep.ConnErrors, rep.Errors, rep.Cut)
	}
}

// TestBlueGreen runs shipd (the built binary) through a release's life: deploys under
// load, a release that fails its health check, shipd killed in the middle of a swap,
// a plain restart and a handover.
func TestBlueGreen(t *testing.T) {
	a := newApp(t)
	// The services' image is only in a registry that demands credentials: the first
	// deploy pulls it with the request's, which must never show up in shipd's log.
	reg := testenv.Registry(t, testenv.WithAuth("shipper", "secret-token-1234"))
	a.image, a.pull = a.registryImage(reg, "bluegreen"), ""
	a.auth = map[string]string{reg.Addr: reg.RegistryAuth()}
	d := newDaemon(t)
	d.start(false)

	// shipd answers on its API a moment before it tells systemd READY=1.
	waitUntil(t, "READY=1 to systemd", time.Minute, func() error {
		if !d.sd.Has("READY=1") {
			return errors.New("no READY=1 to systemd")
		}
		return nil
	})
	waitUntil(t, "watchdog pings", time.Minute, func() error {
		if n := d.sd.Count("WATCHDOG=1"); n < 2 {
			return fmt.Errorf("%d WATCHDOG=1", n)
		}
		return nil
	})
	fi, err := os.Stat(d.sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o660 {
		t.Errorf("socket %s: mode %s, want a socket with 0660", d.sock, fi.Mode())
	}

	steps := []struct {
		name string
		fn   func(t *testing.T)
	}{
		{"refusals", func(t *testing.T) {
			a.release("bad", nil, "  published:\n    image: "+testenv.AppImageRef+"\n    x-ship: {port: 8080, listen: \"127.0.0.1:1\"}\n    ports: [\"127.0.0.1::8080\"]\n")
			_, _, err := a.deploy(d, a.request("bad", time.Second))
			if !errors.Is(err, agentapi.ErrBadRequest) || !strings.Contains(err.Error(), `service "published" publishes ports`) {
				t.Errorf("deploy of a routed service with ports: %v", err)
			}
			_, _, err = a.deploy(d, a.request("missing", time.Second))
			if !errors.Is(err, agentapi.ErrNotFound) {
				t.Errorf("deploy of a release not uploaded: %v", err)
			}
		}},
		{"first deploy", func(t *testing.T) {
			a.release("v1", nil, "")
			if a.hasImage(a.image) {
				t.Fatalf("%s is on the engine before the first deploy, which would not pull it", a.image)
			}
			a.mustDeploy(d, "v1")
			if !a.hasImage(a.image) {
				t.Errorf("the first deploy did not pull %s", a.image)
			}
			if v := a.version(); v != "v1" {
				t.Errorf("version %q, want v1", v)
			}
			if err := a.onlyVersion("v1"); err != nil {
				t.Error(err)
			}
			st := d.stateFile()
			if r := st.Apps[a.name].Routes["web"]; st.Apps[a.name].Release != "v1" || r == nil || r.Listen != a.listen || r.Release != "v1" {
				t.Errorf("state after v1: %+v", st.Apps[a.name])
			}
			if cur, _ := os.Readlink(filepath.Join(a.path, "current")); cur != "releases/v1" {
				t.Errorf("current -> %q", cur)
			}
			waitUntil(t, "STATUS= counts the route", time.Minute, func() error {
				if !d.sd.Has("STATUS=serving 1 route(s)") {
					return errors.New("systemd was not told STATUS=serving 1 route(s) after the first deploy")
				}
				return nil
			})
		}},
		{"blue-green under load", func(t *testing.T) {
			a.release("v2", nil, "")
			wait := a.load(6 * time.Second)
			time.Sleep(time.Second)
			a.mustDeploy(d, "v2")
			noFailures(t, "deploy of v2", wait())
			if v := a.version(); v != "v2" {
				t.Errorf("version %q, want v2", v)
			}
			// The old containers drain and stop after the result.
			waitUntil(t, "only v2", time.Minute, func() error { return a.onlyVersion("v2") })
			st := d.stateFile()
			if app := st.Apps[a.name]; app.Release != "v2" || app.Previous != "v1" || app.Routes["web"].Release != "v2" || app.Deploying != nil {
				t.Errorf("state after v2: %+v", app)
			}
			// An agentless Up of the same release leaves shipd's containers alone.
			before := a.containers()
			a.upAgentless("v2")
			if after := a.containers(); fmt.Sprint(after["web"]) != fmt.Sprint(before["web"]) || fmt.Sprint(after["worker"]) != fmt.Sprint(before["worker"]) {
				t.Errorf("an agentless Up changed shipd's containers:\nbefore %v\nafter  %v", before, after)
			}
		}},
		{"unhealthy release keeps the old one", func(t *testing.T) {
			a.release("v3", map[string]string{"FAIL_HEALTH": "1"}, "")
			wait := a.load(5 * time.Second)
			time.Sleep(500 * time.Millisecond)
			res, ev, err := a.deploy(d, a.request("v3", 2*time.Second))
			noFailures(t, "failed deploy of v3", wait())
			if !errors.Is(err, agentapi.ErrDeployFailed) || errors.Is(err, agentapi.ErrRestoreFailed) {
				t.Fatalf("deploy of v3: %v, want ErrDeployFailed\n%s", err, ev)
			}
			if res.Current != "v2" || len(res.Logs) == 0 || !strings.Contains(res.Error, "failed its health check") {
				t.Errorf("result: %+v", res)
			}
			var logged bool
			for _, e := range ev.list {
				if e.Step == agentapi.StepHealth && e.Level == agentapi.LevelError && len(e.Logs) > 0 && strings.Contains(strings.Join(e.Logs, "\n"), "app v3 listening") {
					logged = true
				}
			}
			if !logged {
				t.Errorf("no event with the new container's last log lines:\n%s", ev)
			}
			if v := a.version(); v != "v2" {
				t.Errorf("version %q after the failed deploy, want v2", v)
			}
			// store is replaced stop-first before web: the failure puts v2 back.
			waitUntil(t, "v2 everywhere", 20*time.Second, func() error { return a.onlyVersion("v2") })
			if app := d.stateFile().Apps[a.name]; app.Release != "v2" || app.LastResult != agentapi.ResultFailed {
				t.Errorf("state after v3: %+v", app)
			}
			audit, _ := os.ReadFile(filepath.Join(a.path, "audit.log"))
			if lines := strings.Split(strings.TrimSpace(string(audit)), "\n"); len(lines) != 3 || !strings.Contains(lines[2], `"result":"failed"`) {
				t.Errorf("audit.log:\n%s", audit)
			}
		}},
		{"SIGKILL in the middle of a swap", func(t *testing.T) {
			a.release("v4", map[string]string{"SLOW_START": "3s"}, "")
			ev := &events{}
			killed := make(chan struct{})
			var once sync.Once
			var second error
			done := make(chan error, 1)
			go func() {
				_, err := d.client.Deploy(context.Background(), a.request("v4", 20*time.Second), func(e agentapi.Event) {
					ev.add(e)
					if e.Step == agentapi.StepHealth && e.Service == "web" {
						once.Do(func() {
							// One deploy per app at a time.
							_, _, second = a.deploy(d, a.request("v4", time.Second))
							d.signal(syscall.SIGKILL)
							close(killed)
						})
					}
				})
				done <- err
			}()
			select {
			case <-killed:
			case <-time.After(time.Minute):
				t.Fatalf("no health event from the deploy of v4:\n%s", ev)
			}
			if !errors.Is(second, agentapi.ErrLocked) || !strings.Contains(second.Error(), "is locked: shipd is running its deploy of v4") {
				t.Errorf("a second deploy meanwhile: %v, want ErrLocked", second)
			}
			if err := <-done; !errors.Is(err, agentapi.ErrNoResult) {
				t.Errorf("deploy cut by SIGKILL: %v, want ErrNoResult", err)
			}
			<-d.exited
			d.cmd = nil
			st := d.stateFile()
			if dep := st.Apps[a.name].Deploying; dep == nil || dep.Release != "v4" || len(dep.Created) == 0 {
				t.Fatalf("state after SIGKILL: deploying %+v", dep)
			}
			t.Logf("containers after SIGKILL: %v", a.containers())

			restart := time.Now()
			d.start(true)
			t.Logf("shipd serves again %s after its start", time.Since(restart).Round(time.Millisecond))
			if v := a.version(); v != "v2" {
				t.Errorf("version %q after the restart, want v2", v)
			}
			// The stray v4 container goes, and v2 is put back where v4 had started.
			waitUntil(t, "v2 everywhere after the restart", 30*time.Second, func() error { return a.onlyVersion("v2") })
			waitUntil(t, "the restore after the restart", 30*time.Second, func() error {
				st := d.status()
				for _, app := range st.Apps {
					if app.App == a.name && app.Deploying == "" && strings.Contains(app.LastError, "put back") {
						return nil
					}
				}
				return fmt.Errorf("apps: %+v", st.Apps)
			})
			logs := d.logText()
			for _, want := range []string{"reconcile: a deploy was cut off by the restart", "reconcile: route", "reconcile: removed stray container"} {
				if !strings.Contains(logs, want) {
					t.Errorf("shipd's log lacks %q", want)
				}
			}
			if app := d.stateFile().Apps[a.name]; app.Deploying != nil || app.Release != "v2" || app.Routes["web"].Release != "v2" {
				t.Errorf("state after the restart: %+v", app)
			}
			wait := a.load(2 * time.Second)
			noFailures(t, "after the restart", wait())
		}},
		{"SIGKILL right after the switch", func(t *testing.T) {
			a.release("v4b", nil, "")
			wait := a.load(6 * time.Second)
			time.Sleep(500 * time.Millisecond)
			killed := make(chan struct{})
			var once sync.Once
			ev := &events{}
			done := make(chan error, 1)
			go func() {
				_, err := d.client.Deploy(context.Background(), a.request("v4b", 20*time.Second), func(e agentapi.Event) {
					ev.add(e)
					if e.Step == agentapi.StepSwitch && e.Service == "web" && strings.Contains(e.Msg, "now routes to") {
						once.Do(func() {
							d.signal(syscall.SIGKILL)
							close(killed)
						})
					}
				})
				done <- err
			}()
			select {
			case <-killed:
			case <-time.After(time.Minute):
				t.Fatalf("no switch event from the deploy of v4b:\n%s", ev)
			}
			<-done
			<-d.exited
			d.cmd = nil
			if r := d.stateFile().Apps[a.name].Routes["web"]; r.Release != "v4b" {
				t.Errorf("the state does not have the switch: %+v", r)
			}
			time.Sleep(100 * time.Millisecond)
			d.start(true)
			// The cut-off deploy did not happen: v2 everywhere again, blue-green.
			waitUntil(t, "v2 everywhere after the restart", 30*time.Second, func() error { return a.onlyVersion("v2") })
			rep := wait()
			if rep.Errors["refused"] != 0 || rep.Non2xx != 0 {
				t.Errorf("%d refused, %d non-2xx", rep.Errors["refused"], rep.Non2xx)
			}
			t.Logf("SIGKILL after the switch, restart and restore: %d of %d requests failed %v", rep.Failed(), rep.Requests, rep.Errors)
			if v := a.version(); v != "v2" {
				t.Errorf("version %q", v)
			}
		}},
		{"SIGTERM leaves the app running; plain restart gap", func(t *testing.T) {
			wait := a.load(5 * time.Second)
			time.Sleep(time.Second)
			stop := time.Now()
			d.stop(syscall.SIGTERM)
			stopped := time.Since(stop)
			if !d.sd.Has("STOPPING=1") {
				t.Errorf("no STOPPING=1 to systemd")
			}
			if err := a.onlyVersion("v2"); err != nil {
				t.Errorf("after SIGTERM: %v", err)
			}
			// systemd's RestartSec (100ms by default) between the two.
			time.Sleep(100 * time.Millisecond)
			restart := time.Now()
			d.start(false) // no fd store: the listening socket closed with the process
			t.Logf("plain restart: SIGTERM to exit %s, 100ms, exec to serving %s", stopped.Round(time.Millisecond), time.Since(restart).Round(time.Millisecond))
			rep := wait()
			t.Logf("plain restart gap: %d of %d requests failed %v; longest gap without a 2xx %s",
				rep.Failed(), rep.Requests, rep.Errors, rep.LongestGap.Round(time.Millisecond))
			if rep.Non2xx != 0 {
				t.Errorf("%d non-2xx answers: a route served before it had its target", rep.Non2xx)
			}
		}},
		{"restart with systemd's fd store refuses nothing", func(t *testing.T) {
			wait := a.load(5 * time.Second)
			time.Sleep(time.Second)
			d.stop(syscall.SIGTERM)
			// systemd's RestartSec (100ms by default) between the two.
			time.Sleep(100 * time.Millisecond)
			d.start(true)
			rep := wait()
			noFailures(t, "restart with the fd store", rep)
			t.Logf("restart with the fd store: longest gap without a 2xx %s", rep.LongestGap.Round(time.Millisecond))
		}},
		{"SIGKILL with systemd's fd store refuses nothing", func(t *testing.T) {
			wait := a.load(5 * time.Second)
			time.Sleep(time.Second)
			d.stop(syscall.SIGKILL)
			time.Sleep(100 * time.Millisecond)
			d.start(true)
			rep := wait()
			// Requests the killed process had accepted are lost with it; none is refused.
			if rep.Errors["refused"] != 0 || rep.Non2xx != 0 {
				t.Errorf("SIGKILL and restart: %d refused, %d non-2xx", rep.Errors["refused"], rep.Non2xx)
			}
			t.Logf("SIGKILL and restart with the fd store: %d of %d requests failed %v (in flight in the killed process); longest gap without a 2xx %s",
				rep.Failed(), rep.Requests, rep.Errors, rep.LongestGap.Round(time.Millisecond))
			if v := a.version(); v != "v2" {
				t.Errorf("version %q", v)
			}
		}},
		{"handover on SIGHUP", func(t *testing.T) {
			old := d.cmd.Process.Pid
			wait := a.load(5 * time.Second)
			time.Sleep(time.Second)
			start := time.Now()
			d.signal(syscall.SIGHUP)
			select {
			case <-d.exited:
			case <-time.After(30 * time.Second):
				t.Fatal("the old shipd did not exit after the handover")
			}
			took := time.Since(start)
			st := d.status()
			if st.PID == old {
				t.Fatalf("still pid %d after the handover", old)
			}
			successor := st.PID
			testenv.TrackProcess(t, successor) // swept after a killed run
			t.Cleanup(func() { killPid(t, successor) })
			t.Logf("handover to %d took %s", successor, took.Round(time.Millisecond))
			waitUntil(t, "MAINPID= of the successor", time.Minute, func() error {
				if !d.sd.Has(fmt.Sprintf("MAINPID=%d", successor)) {
					return fmt.Errorf("systemd was not told MAINPID=%d", successor)
				}
				return nil
			})
			noFailures(t, "handover", wait())
			if v := a.version(); v != "v2" {
				t.Errorf("version %q after the handover", v)
			}
			a.release("v5", nil, "")
			a.mustDeploy(d, "v5")
			killPid(t, successor)
			d.cmd = nil
			// The old containers drain and stop after the result.
			waitUntil(t, "only v5", time.Minute, func() error { return a.onlyVersion("v5") })
		}},
	}
	for _, s := range steps {
		if !t.Run(s.name, s.fn) {
			break
		}
	}
	for _, secret := range []string{reg.RegistryAuth(), reg.Password} {
		if strings.Contains(d.logText(), secret) {
			t.Errorf("the registry credential shows in shipd's log")
		}
	}
}

// registryImage pushes the app's image to reg as <reg>/<app>/web:<tag> and takes that
// name off the engine, so that a deploy must pull it, with reg's credentials.
func (a *app) registryImage(reg *testenv.RegistryServer, tag string) string {
	a.t.Helper()
	ref := reg.Addr + "/" + a.name + "/web:" + tag
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := a.cli.ImageTag(ctx, client.ImageTagOptions{Source: testenv.AppImageRef, Target: ref}); err != nil {
		a.t.Fatal(err)
	}
	reg.Push(a.t, a.cli, ref)
	if _, err := a.cli.ImageRemove(ctx, ref, client.ImageRemoveOptions{}); err != nil {
		a.t.Fatal(err)
	}
	a.t.Cleanup(func() { a.cli.ImageRemove(context.Background(), ref, client.ImageRemoveOptions{}) })
	return ref
}

// hasImage says whether the engine has an image by the name ref.
func (a *app) hasImage(ref string) bool {
	a.t.Helper()
	_, err := a.cli.ImageInspect(context.Background(), ref)
	if err != nil && !cerrdefs.IsNotFound(err) {
		a.t.Fatalf("inspect %s: %v", ref, err)
	}
	return err == nil
}

// upAgentless applies a release as the agentless deploy does (pkg/deploy's loadRelease
// and Up of the services but the jobs).
func (a *app) upAgentless(sha string) {
	a.t.Helper()
	dir := filepath.Join(a.path, "releases", sha)
	file := filepath.Join(dir, "docker-compose.yml")
	data, err := os.ReadFile(file)
	if err != nil {
		a.t.Fatal(err)
	}
	p, err := loader.LoadWithContext(context.Background(), types.ConfigDetails{
		WorkingDir: dir, ConfigFiles: []types.ConfigFile{{Filename: file, Content: data}}, Environment: types.Mapping{},
	}, func(o *loader.Options) {
		o.SkipInterpolation = true
		o.SetProjectName(a.name, true)
	})
	if err != nil {
		a.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := a.eng.Up(ctx, p, engine.UpOptions{Wait: true, RemoveOrphans: true}); err != nil {
		a.t.Fatalf("agentless up: %v", err)
	}
}

// killPid stops a shipd this test did not start itself (a handover's successor).
func killPid(t *testing.T, pid int) {
	t.Helper()
	if syscall.Kill(pid, syscall.SIGTERM) != nil {
		return
	}
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		// Gone, or a zombie nobody reaps here: either way it has exited.
		if err != nil || strings.Contains(string(data), ") Z ") {
			return
		}
	}
	t.Errorf("shipd %d did not stop", pid)
}

// A release whose image is only in a registry that demands credentials: shipd pulls it
// with the request's RegistryAuth, and without them fails before anything is switched.
func TestDeployPullsWithRegistryAuth(t *testing.T) {
	a := newApp(t)
	reg := testenv.Registry(t, testenv.WithAuth("shipper", "s3cret-pass"))
	ref := a.registryImage(reg, "r1")

	d := newDaemon(t)
	d.start(false)
	yaml := fmt.Sprintf("services:\n  web:\n    image: %s\n    x-ship: {port: 8080, listen: %q, health: /up}\n", ref, a.listen)
	dir := filepath.Join(a.path, "releases", "r1")
	os.MkdirAll(dir, 0o755)
	if err := os.WriteFile(filepath.Join(dir, "docker-compose.yml"), []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}

	req := a.request("r1", 10*time.Second)
	req.RegistryAuth = nil
	res, ev, err := a.deploy(d, req)
	if !errors.Is(err, agentapi.ErrDeployFailed) || !strings.Contains(res.Error, "pull") || !strings.Contains(res.Error, "nothing was switched") {
		t.Fatalf("deploy without credentials: %v\n%+v\n%s", err, res, ev)
	}

	req.RegistryAuth = map[string]string{reg.Addr: reg.RegistryAuth()}
	if res, ev, err = a.deploy(d, req); err != nil {
		t.Fatalf("deploy with credentials: %v\n%s", err, ev)
	}
	if v := a.version(); res.Current != "r1" || v != "dev" {
		t.Errorf("result %+v, version %q", res, v)
	}
	for _, secret := range []string{reg.RegistryAuth(), "s3cret-pass"} {
		if strings.Contains(d.logText(), secret) || strings.Contains(ev.String(), secret) {
			t.Errorf("a credential shows in the log or the events")
		}
	}
}
