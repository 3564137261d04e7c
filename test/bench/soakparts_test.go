package bench

// The soak run's parts: shipd as a process under a stand-in for systemd (its listening
// sockets kept in a file descriptor store across a SIGKILL), the constant load through
// shipd with the time of every failed request, and shipctl run as a subprocess that
// may get a SIGINT.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"

	"github.com/shipdeploy/ship/pkg/agentapi"
	"github.com/shipdeploy/ship/test/testenv"
)

// soakShipd is shipd run as systemd runs it: Restart= after a kill, with the sockets of
// its routes handed back from the store (FileDescriptorStoreMax=).
type soakShipd struct {
	b      *testing.B
	bin    string
	config string
	sock   string
	logs   string
	store  *testenv.Systemd
	client *agentapi.Client

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
	down   [][2]time.Time // from each kill until shipd answered again
}

func startSoakShipd(b *testing.B, bin string) *soakShipd {
	b.Helper()
	// A short folder: a unix socket's path is limited to about 100 bytes.
	dir, err := os.MkdirTemp("", "soak-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	d := &soakShipd{b: b, bin: bin, config: filepath.Join(dir, "shipd.yaml"), sock: filepath.Join(dir, "shipd.sock"), logs: filepath.Join(dir, "shipd.log")}
	cfg := fmt.Sprintf("socket: %s\nstate: %s\nhealth: {interval: 200ms, timeout: 2s, deadline: 20s}\nshutdown_timeout: 10s\n", d.sock, filepath.Join(dir, "state.json"))
	if err := os.WriteFile(d.config, []byte(cfg), 0o644); err != nil {
		b.Fatal(err)
	}
	d.store = testenv.FakeSystemd(b, filepath.Join(dir, "notify.sock"))
	d.client = agentapi.NewClient(agentapi.UnixDialer(d.sock))
	b.Cleanup(func() {
		d.client.Close()
		d.mu.Lock()
		defer d.mu.Unlock()
		if d.cmd != nil {
			_ = d.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-d.exited:
			case <-time.After(20 * time.Second):
				_ = d.cmd.Process.Kill()
				<-d.exited
			}
		}
		if b.Failed() {
			// Kept whole for a look: the soak's problems name times in it.
			keep := filepath.Join(os.TempDir(), fmt.Sprintf("soak-shipd-%d.log", time.Now().Unix()))
			if data, err := os.ReadFile(d.logs); err == nil && os.WriteFile(keep, data, 0o644) == nil {
				b.Logf("shipd's log: %s", keep)
			}
		}
	})
	d.start()
	return d
}

// start runs shipd with the sockets the store holds and waits until it answers.
func (d *soakShipd) start() {
	d.b.Helper()
	out, err := os.OpenFile(d.logs, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		d.b.Fatal(err)
	}
	defer out.Close()
	readies := d.store.Count("READY=1")
	cmd := exec.Command(d.bin, "run", "--config", d.config)
	cmd.Stdout, cmd.Stderr = out, out
	files, names := d.store.Files()
	cmd.ExtraFiles = files
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+d.store.Path)
	if len(files) > 0 {
		cmd.Env = append(cmd.Env, fmt.Sprintf("LISTEN_FDS=%d", len(files)), "LISTEN_FDNAMES="+strings.Join(names, ":"))
	}
	if err := cmd.Start(); err != nil {
		d.b.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	d.mu.Lock()
	d.cmd, d.exited = cmd, exited
	d.mu.Unlock()
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		st, err := d.client.Status(ctx)
		cancel()
		// Up is when it tells systemd so (READY=1), a moment after its API answers.
		if err == nil && st.PID == cmd.Process.Pid && d.store.Count("READY=1") > readies {
			return
		}
		select {
		case <-exited:
			d.b.Fatalf("shipd exited before it answered:\n%s", tail(d.logs, 4<<10))
		default:
		}
	}
	d.b.Fatalf("shipd did not answer on %s", d.sock)
}

// killRestart sends SIGKILL, and starts shipd again 100ms after it died (systemd's
// RestartSec=100ms), with its sockets; the window is kept for the load's verdict.
func (d *soakShipd) killRestart() {
	d.b.Helper()
	killed := time.Now()
	d.mu.Lock()
	cmd, exited := d.cmd, d.exited
	d.mu.Unlock()
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-exited
	time.Sleep(100 * time.Millisecond)
	d.start()
	d.mu.Lock()
	d.down = append(d.down, [2]time.Time{killed, time.Now()})
	d.mu.Unlock()
}

// idle waits until shipd runs no deploy of app (its project app or app-<env>; one
// shipctl left when cancelled).
func (d *soakShipd) idle(app string) error {
	deadline := time.Now().Add(3 * time.Minute)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		st, err := d.client.Status(ctx)
		cancel()
		busy := err != nil
		if st != nil {
			for _, a := range st.Apps {
				busy = busy || (a.App == app || strings.HasPrefix(a.App, app+"-")) && a.Deploying != ""
			}
		}
		if !busy {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("shipd still busy with %s after 3 minutes (%v)", app, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (d *soakShipd) downs() [][2]time.Time {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([][2]time.Time(nil), d.down...)
}

// soakFail is a request through shipd that failed: when it ran, and why.
type soakFail struct {
	start, end time.Time
	err        string
}

// soakLoad sends GET /version through shipd's route without pause: workers-1 workers
// over keep-alive connections and one opening a new connection each time, a request
// every 100ms each. Only a hang (a minute) or an answer other than 200 fails.
type soakLoad struct {
	mu       sync.Mutex
	requests int
	fails    []soakFail
	stop     chan struct{}
	wg       sync.WaitGroup
}

func startSoakLoad(url string, workers int) *soakLoad {
	l := &soakLoad{stop: make(chan struct{})}
	for i := range workers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			c := &http.Client{Timeout: time.Minute, Transport: &http.Transport{DisableKeepAlives: i == 0, MaxIdleConnsPerHost: 1}}
			defer c.CloseIdleConnections()
			tick := time.NewTicker(100 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-l.stop:
					return
				case <-tick.C:
				}
				start := time.Now()
				err := get(c, url)
				l.mu.Lock()
				l.requests++
				if err != nil {
					l.fails = append(l.fails, soakFail{start, time.Now(), err.Error()})
				}
				l.mu.Unlock()
			}
		}()
	}
	return l
}

func get(c *http.Client, url string) error {
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var body bytes.Buffer
	_, _ = body.ReadFrom(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(body.String()))
	}
	return nil
}

// end stops the load and splits its failures: those while shipd was down (a request
// that overlapped a window from a kill until shipd answered again, and half a second
// after, for a keep-alive connection of the killed process found dead on its next
// use), and the others.
func (l *soakLoad) end(down [][2]time.Time) (requests int, excused, failed []soakFail) {
	close(l.stop)
	l.wg.Wait()
	for _, f := range l.fails {
		in := false
		for _, w := range down {
			in = in || f.start.Before(w[1].Add(500*time.Millisecond)) && f.end.After(w[0])
		}
		if in {
			excused = append(excused, f)
		} else {
			failed = append(failed, f)
		}
	}
	return l.requests, excused, failed
}

// soakResult is one shipctl run.
type soakResult struct {
	code int
	out  string
	took time.Duration
}

// shipctl runs bin in dir with env and args; after interrupt (when > 0) it gets a
// SIGINT, as from Ctrl-C; during, when set, runs meanwhile after its own delay.
func soakShipctl(b *testing.B, bin, dir string, env []string, interrupt time.Duration, during func(), args ...string) soakResult {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir, cmd.Env = dir, append(os.Environ(), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	began := time.Now()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	if interrupt > 0 {
		t := time.AfterFunc(interrupt, func() { _ = cmd.Process.Signal(syscall.SIGINT) })
		defer t.Stop()
	}
	var wg sync.WaitGroup
	if during != nil {
		wg.Add(1)
		go func() { defer wg.Done(); during() }()
	}
	err := cmd.Wait()
	wg.Wait()
	r := soakResult{out: out.String(), took: time.Since(began)}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		b.Fatalf("shipctl %v: %v", args, err)
	}
	return r
}

func (s *soak) git(args ...string) string {
	cmd := exec.Command("git", args...)
	cmd.Dir = s.dir
	cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=ship", "GIT_AUTHOR_EMAIL=ship@example.com",
		"GIT_COMMITTER_NAME=ship", "GIT_COMMITTER_EMAIL=ship@example.com")
	out, err := cmd.CombinedOutput()
	if err != nil {
		s.b.Fatalf("git %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

// served is the VERSION that answers on shipd's route ("" and why, when none does).
func served(listen string) string {
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get("http://" + listen + "/version")
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	var v struct{ Version string }
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil || resp.StatusCode != http.StatusOK {
		return fmt.Sprintf("%s (%v)", resp.Status, err)
	}
	return v.Version
}

func freeTCPPort(b *testing.B) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func loadavgNow() string {
	data, _ := os.ReadFile("/proc/loadavg")
	return loadavg(data)
}

func names(cs []container.Summary) []string {
	var out []string
	for _, c := range cs {
		out = append(out, strings.Join(c.Names, ",")+" "+string(c.State))
	}
	return out
}

func (s *soak) write(name, content string) {
	if err := os.WriteFile(filepath.Join(s.dir, name), []byte(content), 0o644); err != nil {
		s.b.Fatal(err)
	}
}

func (s *soak) commit(msg string) string {
	s.git("add", "-A")
	s.git("commit", "-q", "--allow-empty", "-m", msg)
	return s.git("rev-parse", "HEAD")
}

// tail is the end of a file, at most n bytes.
func tail(file string, n int) string {
	data, _ := os.ReadFile(file)
	if len(data) > n {
		data = data[len(data)-n:]
	}
	return string(data)
}
