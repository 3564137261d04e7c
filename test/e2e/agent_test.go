package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/shipdeploy/ship/pkg/agentapi"
	"github.com/shipdeploy/ship/test/loadgen"
	"github.com/shipdeploy/ship/test/testenv"
)

// The agent tests run shipctl against an environment with agent: true: shipd (the
// built binary) runs as a plain process on this machine, the "host", since there is no
// systemd here. The test plays systemd's part: it restarts shipd after a SIGKILL and
// keeps shipd's listening sockets in a file descriptor store meanwhile (NOTIFY_SOCKET,
// FDSTORE=1, LISTEN_FDS), as the unit's FileDescriptorStoreMax= makes systemd do.
// shipctl reaches shipd's socket through the sshd, at SHIP_AGENT_SOCKET.

var (
	shipdOnce sync.Once
	shipdPath string
	shipdErr  error
)

// shipdBinary builds cmd/shipd next to the shipctl under test, where `shipctl agent
// install` looks for it (as make build puts bin/shipd beside bin/shipctl).
func shipdBinary(t *testing.T) string {
	t.Helper()
	shipdOnce.Do(func() {
		shipdPath = filepath.Join(filepath.Dir(shipctl), "shipd")
		shipdErr = testenv.Build(shipdPath, "./cmd/shipd")
	})
	if shipdErr != nil {
		t.Fatal(shipdErr)
	}
	return shipdPath
}

// agentSite is a site whose environment has agent: true, with the example app made
// fit for a blue-green swap: web publishes no port (shipd serves it on listen).
type agentSite struct {
	*site
	listen string // shipd's route to web: 127.0.0.1:port
	setup  string // the commit before: web still publishes a port
}

func newAgentSite(t *testing.T) *agentSite {
	t.Helper()
	s := &agentSite{site: newSite(t, siteOptions{})}
	s.setup = git(t, s.dir, "rev-parse", "HEAD")
	s.listen = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	data, err := os.ReadFile(filepath.Join(s.dir, "ship.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := strings.Replace(string(data), "    known_hosts: known_hosts\n", "    known_hosts: known_hosts\n    agent: true\n", 1)
	s.write("ship.yaml", cfg)
	s.editCompose("blue-green through shipd", func(c string) string {
		c = strings.Replace(c, "    ports:\n      # So the demo can curl it on the host.\n      - \"127.0.0.1:${WEB_PORT:-18080}:8080\"\n", "", 1)
		c = strings.Replace(c, `listen: ":8080"`, fmt.Sprintf("listen: %q", s.listen), 1)
		return strings.Replace(c, "drain: 5s", "drain: 1s", 1)
	})
	return s
}

// version commits the compose file with web's VERSION set to v and the extra
// environment lines, and pushes the image of the commit.
func (s *agentSite) version(v string, env ...string) string {
	s.t.Helper()
	sha := s.editCompose("version "+v, func(c string) string {
		lines := strings.Split(c, "\n")
		var out []string
		inEnv := false
		for _, l := range lines {
			if strings.HasPrefix(l, "    environment:") {
				inEnv = true
				out = append(out, l, "      VERSION: "+v)
				for _, e := range env {
					out = append(out, "      "+e)
				}
				continue
			}
			if inEnv && strings.HasPrefix(l, "      ") {
				continue
			}
			inEnv = false
			out = append(out, l)
		}
		return strings.Join(out, "\n")
	})
	s.push(sha)
	return sha
}

// served is the VERSION that answers on shipd's route.
func (s *agentSite) served() string {
	s.t.Helper()
	c := &http.Client{Timeout: testenv.Scale(3 * time.Second)}
	resp, err := c.Get("http://" + s.listen + "/version")
	if err != nil {
		s.t.Fatalf("GET /version through shipd: %v", err)
	}
	defer resp.Body.Close()
	var v struct{ Version string }
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &v) != nil {
		s.t.Fatalf("GET /version through shipd: %s %s", resp.Status, body)
	}
	return v.Version
}

// shipd is shipd run as its own process, on this machine, as systemd would run it.
type shipd struct {
	t      *testing.T
	bin    string
	dir    string
	config string
	sock   string
	logs   string
	store  *testenv.Systemd
	cmd    *exec.Cmd
	exited chan struct{}
}

func startShipd(t *testing.T) *shipd {
	t.Helper()
	// A short folder: a unix socket's path is limited to about 100 bytes.
	dir, err := os.MkdirTemp("", "shipd-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	d := &shipd{
		t: t, bin: shipdBinary(t), dir: dir, config: filepath.Join(dir, "shipd.yaml"),
		sock: filepath.Join(dir, "shipd.sock"), logs: filepath.Join(dir, "shipd.log"),
	}
	cfg := fmt.Sprintf(`socket: %s
state: %s
log_level: debug
health:
  interval: 200ms
  timeout: 2s
  deadline: 4s
shutdown_timeout: 10s
`, d.sock, filepath.Join(dir, "state.json"))
	if err := os.WriteFile(d.config, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	d.store = testenv.FakeSystemd(t, filepath.Join(dir, "notify.sock"))
	t.Cleanup(func() {
		if d.cmd != nil {
			d.cmd.Process.Kill()
			<-d.exited
		}
		if t.Failed() {
			data, _ := os.ReadFile(d.logs)
			t.Logf("shipd's log:\n%s", data)
		}
	})
	d.start()
	return d
}

// start runs shipd with the sockets the store holds (none the first time) and waits
// until its API answers.
func (d *shipd) start() {
	d.t.Helper()
	out, err := os.OpenFile(d.logs, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		d.t.Fatal(err)
	}
	defer out.Close()
	cmd := exec.Command(d.bin, "run", "--config", d.config)
	cmd.Stdout, cmd.Stderr = out, out
	files, names := d.store.Files()
	cmd.ExtraFiles = files
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+d.store.Path)
	if len(files) > 0 {
		cmd.Env = append(cmd.Env, fmt.Sprintf("LISTEN_FDS=%d", len(files)), "LISTEN_FDNAMES="+strings.Join(names, ":"))
	}
	testenv.Tied(cmd)
	if err := cmd.Start(); err != nil {
		d.t.Fatal(err)
	}
	testenv.TrackProcess(d.t, cmd.Process.Pid)
	d.cmd, d.exited = cmd, make(chan struct{})
	go func() { _ = cmd.Wait(); close(d.exited) }()
	c := agentapi.NewClient(agentapi.UnixDialer(d.sock))
	defer c.Close()
	for deadline := time.Now().Add(testenv.Scale(30 * time.Second)); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		st, err := c.Status(ctx)
		cancel()
		if err == nil && st.PID == cmd.Process.Pid {
			return
		}
		select {
		case <-d.exited:
			d.t.Fatal("shipd exited before it answered")
		default:
		}
	}
	d.t.Fatalf("shipd did not answer on %s", d.sock)
}

// kill sends SIGKILL and waits for the process to end.
func (d *shipd) kill() {
	d.t.Helper()
	_ = d.cmd.Process.Signal(syscall.SIGKILL)
	<-d.exited
	d.cmd = nil
}

// loadTimeout bounds one request of the test's load: only a hang, never a slow answer
// on a busy machine, counts as a failed request (the swap must lose none; a starved
// machine may take seconds to answer any of them).
const loadTimeout = time.Minute

// load sends requests through shipd's route at a fixed rate until stop is called, and
// returns the report then: 150 requests a second over 4 keep-alive connections, 30% of
// them on a fresh connection each. Requests still running when stop is called are cut
// by the test itself, and reported apart (Cut).
func load(t *testing.T, addr string) (stop func() *loadgen.Report) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan *loadgen.Report, 1)
	go func() {
		rep, err := loadgen.Run(ctx, loadgen.Config{
			URL: "http://" + addr + "/version", Rate: 150, Duration: 5 * time.Minute, Conns: 4, Fresh: 0.3, Timeout: loadTimeout,
		})
		if err != nil {
			t.Error(err)
		}
		done <- rep
	}()
	time.Sleep(300 * time.Millisecond)
	return func() *loadgen.Report {
		t.Helper()
		time.Sleep(300 * time.Millisecond)
		cancel()
		rep := <-done
		if rep == nil {
			t.FailNow()
		}
		return rep
	}
}

func logLoad(t *testing.T, what string, rep *loadgen.Report) {
	t.Helper()
	var b bytes.Buffer
	_ = rep.WriteText(&b)
	t.Logf("%s: requests %d, non-2xx %d, connection errors %d, p50 %s, p99 %s (cut by the test at the end: %d)\n%s",
		what, rep.Requests, rep.Non2xx, rep.ConnErrors, rep.P50, rep.P99, rep.Cut, b.String())
}

// TestAgentDeploysWithoutFailedRequests: deploys through shipd under load. 20 deploys
// back to back and a rollback, 5 deploys of a release that fails its health check, and
// a deploy during which shipd is killed in the middle of the swap and restarted. It
// runs alone (not in parallel), so that the load has the machine to itself.
func TestAgentDeploysWithoutFailedRequests(t *testing.T) {
	began := time.Now()
	s := newAgentSite(t)
	shaA := s.version("v1")
	shaB := s.version("v2")
	shaBad := s.version("v3", `FAIL_HEALTH: "1"`)
	shaSlow := s.version("v4", `SLOW_START: "3s"`)

	// Without shipd: refused before anything is touched, saying what to do.
	r := s.deploy(1, "--sha", shaA, "--untested")
	if !strings.Contains(r.stderr, "shipd does not answer") || !strings.Contains(r.stderr, "shipctl agent install e2e") {
		t.Errorf("a deploy without shipd:\n%s", r)
	}
	// A routed service that publishes a port: refused before any upload, by file and service.
	r = s.deploy(2, "--sha", s.setup, "--untested")
	if !strings.Contains(r.stderr, `docker-compose.yml:10: service "web" publishes ports`) || !strings.Contains(r.stderr, "shipd cannot deploy blue-green") {
		t.Errorf("a release shipd cannot swap:\n%s", r)
	}
	s.assertUntouched()

	d := startShipd(t)
	s.env = append(s.env, "SHIP_AGENT_SOCKET="+d.sock)
	r = s.deploy(0, "--sha", shaA, "--untested")
	for _, want := range []string{"asking shipd to deploy " + s.short(shaA), "checking GET /up", "now routes to", "on " + s.short(shaA) + " (deployed)"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("the first deploy's output lacks %q:\n%s", want, r)
		}
	}
	if v := s.served(); v != "v1" || s.current() != shaA {
		t.Fatalf("after the first deploy: %s served, current %s", v, s.current())
	}
	r = s.run("agent", "status", "e2e")
	if r.code != 0 || !strings.Contains(r.stdout, s.project+"/web  "+s.listen+" -> ") || !strings.Contains(r.stdout, "live "+s.short(shaA)) || !strings.Contains(r.stdout, "release "+s.short(shaA)) {
		t.Errorf("agent status:\n%s", r)
	}
	r = s.run("status", "e2e")
	if r.code != 0 || !strings.Contains(r.stdout, "web  "+s.listen+" -> ") {
		t.Errorf("status:\n%s", r)
	}
	t.Logf("set up in %s", time.Since(began).Round(time.Second))

	t.Run("20 deploys and a rollback", func(t *testing.T) {
		begin := time.Now()
		stop := load(t, s.listen)
		for i := range 20 {
			sha := shaB
			if i%2 == 1 {
				sha = shaA
			}
			s.deploy(0, "--sha", sha, "--untested", "--json")
		}
		if r := s.run("rollback", "e2e"); r.code != 0 || s.current() != shaB {
			t.Errorf("rollback (current %s):\n%s", s.current(), r)
		}
		rep := stop()
		logLoad(t, fmt.Sprintf("20 deploys and a rollback in %s", time.Since(begin).Round(time.Second)), rep)
		if rep.Non2xx != 0 || rep.ConnErrors != 0 || rep.OK == 0 {
			t.Errorf("failed requests: %d non-2xx, %d connection errors %v", rep.Non2xx, rep.ConnErrors, rep.Errors)
		}
		if v := s.served(); v != "v2" {
			t.Errorf("served %s after the rollback, want v2", v)
		}
		a := s.audit()
		if len(a) != 22 || a[21].Event != "rollback" || a[21].Result != "deployed" {
			t.Errorf("audit.log has %d lines, the last %+v", len(a), a[len(a)-1])
		}
	})

	t.Run("5 deploys that fail their health check", func(t *testing.T) {
		begin := time.Now()
		stop := load(t, s.listen)
		for range 5 {
			r := s.deploy(4, "--sha", shaBad, "--untested")
			out := r.stdout + r.stderr
			for _, want := range []string{"failed its health check", "its last log lines:", "app v3 listening on :8080", "previous release kept"} {
				if !strings.Contains(out, want) {
					t.Errorf("a failed deploy's output lacks %q:\n%s", want, r)
				}
			}
		}
		rep := stop()
		logLoad(t, fmt.Sprintf("5 failed deploys in %s", time.Since(begin).Round(time.Second)), rep)
		if rep.Non2xx != 0 || rep.ConnErrors != 0 || rep.OK == 0 {
			t.Errorf("failed requests: %d non-2xx, %d connection errors %v", rep.Non2xx, rep.ConnErrors, rep.Errors)
		}
		if v := s.served(); v != "v2" || s.current() != shaB {
			t.Errorf("served %s, current %s: want v2 and %s", v, s.current(), short(shaB))
		}
	})

	// shipd is killed while it health-checks the new container, and restarted 100ms
	// later with its listening sockets (systemd: Restart=always, RestartSec=100ms, the
	// file descriptor store). shipctl asks the new shipd how the deploy ended: shipd
	// recorded it as failed and put the previous release back, so exit 4.
	t.Run("shipd killed in the middle of a swap", func(t *testing.T) {
		stop := load(t, s.listen)
		p := start(t, s.dir, s.env, "deploy", "e2e", "--sha", shaSlow, "--untested", "--json")
		p.waitFor(t, `"event":"health"`, 2*time.Minute)
		killed := time.Now()
		d.kill()
		time.Sleep(100 * time.Millisecond)
		d.start()
		t.Logf("shipd killed mid-swap and serving again %s later", time.Since(killed).Round(time.Millisecond))
		r := p.wait(t)
		rep := stop()
		logLoad(t, "shipd killed mid-swap and restarted", rep)
		if r.code != 4 {
			t.Errorf("the deploy cut by the kill: want exit 4\n%s", r)
		}
		for _, want := range []string{"shipd's answer was cut", "shipd answers again", "cut off by a shipd restart", s.short(shaB) + " was put back"} {
			if !strings.Contains(r.stdout+r.stderr, want) {
				t.Errorf("the output lacks %q:\n%s", want, r)
			}
		}
		// Asserted: no request refused and none answered other than 2xx. A request the
		// killed process was in the middle of is lost with it (reset or EOF): those are
		// reported, not asserted.
		if rep.Non2xx != 0 || rep.Errors["refused"] != 0 || rep.OK == 0 {
			t.Errorf("%d non-2xx, %d refused %v", rep.Non2xx, rep.Errors["refused"], rep.Errors)
		}
		if v := s.served(); v != "v2" || s.current() != shaB {
			t.Errorf("served %s, current %s after the kill: want v2 and %s", v, s.current(), short(shaB))
		}
		if cs := s.containers(); len(cs) != 1 || cs["web"].State != "running" {
			t.Errorf("containers after the restore: %v", cs)
		}
	})
	t.Logf("the whole test took %s", time.Since(began).Round(time.Second))
}

// TestAgentInstall: shipctl agent install against the test sshd, with the files under
// a prefix: they land in place, the missing systemd is said clearly (exit 0), and a
// second run changes nothing.
func TestAgentInstall(t *testing.T) {
	t.Parallel()
	s := newAgentSite(t)
	bin := shipdBinary(t)
	prefix := t.TempDir()
	r := s.run("agent", "install", "e2e", "--prefix", prefix)
	if r.code != 0 {
		t.Fatalf("agent install: %s", r)
	}
	if !strings.Contains(r.stderr, "does not run systemd") || !strings.Contains(r.stderr, "NOT started") ||
		!strings.Contains(r.stderr, prefix+"/usr/local/bin/shipd run --config "+prefix+"/etc/shipd/shipd.yaml") {
		t.Errorf("the missing systemd is not said clearly:\n%s", r)
	}
	want, _ := os.ReadFile(bin)
	got, err := os.ReadFile(filepath.Join(prefix, "usr/local/bin/shipd"))
	if err != nil || !bytes.Equal(got, want) {
		t.Errorf("the binary: %v (%d bytes, want %d)", err, len(got), len(want))
	}
	if st, err := os.Stat(filepath.Join(prefix, "usr/local/bin/shipd")); err != nil || st.Mode().Perm() != 0o755 {
		t.Errorf("the binary's mode: %v %v", st, err)
	}
	unit, _ := os.ReadFile(filepath.Join(prefix, "etc/systemd/system/shipd.service"))
	for _, want := range []string{"ExecStart=" + prefix + "/usr/local/bin/shipd run --config " + prefix + "/etc/shipd/shipd.yaml\n", "User=" + s.sshd.User + "\n", "Type=notify\n"} {
		if !strings.Contains(string(unit), want) {
			t.Errorf("the unit lacks %q:\n%s", want, unit)
		}
	}
	cfg := filepath.Join(prefix, "etc/shipd/shipd.yaml")
	if data, _ := os.ReadFile(cfg); !strings.Contains(string(data), "\nsocket_group: ") {
		t.Errorf("shipd.yaml:\n%s", data)
	}

	r = s.run("agent", "install", "e2e", "--prefix", prefix)
	if r.code != 0 || !strings.Contains(r.stdout, "files: 3 unchanged; no systemd: shipd NOT started") {
		t.Errorf("a second install changed something:\n%s", r)
	}
	os.WriteFile(cfg, []byte("log_level: debug\n"), 0o644)
	r = s.run("agent", "install", "e2e", "--prefix", prefix)
	if data, _ := os.ReadFile(cfg); r.code != 0 || string(data) != "log_level: debug\n" || !strings.Contains(r.stderr, "--force replaces it") {
		t.Errorf("an edited shipd.yaml was not kept:\n%s", r)
	}
	r = s.run("agent", "install", "e2e", "--prefix", prefix, "--force", "--json")
	if data, _ := os.ReadFile(cfg); r.code != 0 || !strings.Contains(string(data), "socket_group") || !strings.Contains(r.stdout, `"action":"replaced"`) {
		t.Errorf("--force did not replace shipd.yaml:\n%s", r)
	}
}
