package bench

// The agent rows of BenchmarkWAN: the same host behind the same relays, with shipd
// running for it, and an environment with agent: true (its own ship.yaml per delay and
// its own compose file: web publishes no port, shipd serves it on a route of its own).
//
// shipd runs as a process of the benchmark in a mount namespace like the sshd's, so
// that both see the host's folder at the same path: the releases shipctl uploads, the
// socket shipctl reaches through the SSH connection (SHIP_AGENT_SOCKET) and the engine
// proxy shipd talks to. That proxy is one of its own: shipd's Docker API requests stay
// on the host and cross no link, so they are counted apart from shipctl's.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/shipdeploy/ship/pkg/agentapi"
	"github.com/shipdeploy/ship/test/testenv"
)

// wanAgentEnv is the agent environment: its project on the engine is qzwan7-wanagent.
const wanAgentEnv = "wanagent"

// wanAgentCompose is its compose file in the app's checkout.
const wanAgentCompose = "docker-compose.agent.yml"

// wanShipd is shipd on the WAN benchmark's host.
type wanShipd struct {
	cmd    *exec.Cmd
	logs   string
	client *agentapi.Client
	proxy  *engineProxy // shipd's engine, counted apart from shipctl's
	socket string       // its API socket, as the host sees it
	listen string       // its route to web
}

func (s *wanShipd) log() string {
	data, _ := os.ReadFile(s.logs)
	return string(data)
}

// startWanShipd starts shipd for host h, in a mount namespace where h's folder is at
// d.mnt, and waits until it answers.
func startWanShipd(b *testing.B, d *deployBench, h *benchHost, bin string) *wanShipd {
	b.Helper()
	proxy, err := startEngineProxy(filepath.Join(h.dir, "shipd-docker.sock"), engineSocket(),
		[][2]string{{appWan, h.project(appWan)}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(proxy.Close)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	s := &wanShipd{proxy: proxy, logs: filepath.Join(h.dir, "shipd.log"), socket: filepath.Join(d.mnt, "shipd.sock"), listen: ln.Addr().String()}
	ln.Close()
	cfg := fmt.Sprintf("socket: %s\nstate: %s\ndocker: %s\nhealth: {interval: 200ms, timeout: 2s, deadline: 30s}\nshutdown_timeout: 10s\n",
		s.socket, filepath.Join(d.mnt, "shipd-state.json"), filepath.Join(d.mnt, "shipd-docker.sock"))
	if err := os.WriteFile(filepath.Join(h.dir, "shipd.yaml"), []byte(cfg), 0o644); err != nil {
		b.Fatal(err)
	}
	logf, err := os.Create(s.logs)
	if err != nil {
		b.Fatal(err)
	}
	defer logf.Close()
	s.cmd = exec.Command("unshare", "--mount", "--propagation", "private", "--",
		"sh", "-c", `mount --bind "$1" "$2" && shift 2 && exec "$@"`,
		"sh", h.dir, d.mnt, bin, "run", "--config", filepath.Join(d.mnt, "shipd.yaml"))
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	if err := s.cmd.Start(); err != nil {
		b.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = s.cmd.Wait(); close(exited) }()
	s.client = agentapi.NewClient(agentapi.UnixDialer(filepath.Join(h.dir, "shipd.sock")))
	b.Cleanup(func() {
		s.client.Close()
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			_ = s.cmd.Process.Kill()
			<-exited
		}
	})
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := s.client.Status(ctx)
		cancel()
		if err == nil {
			return s
		}
		select {
		case <-exited:
			b.Fatalf("shipd exited: %v\n%s", s.cmd.ProcessState, s.log())
		default:
		}
		if time.Now().After(deadline) {
			b.Fatalf("shipd does not answer: %v\n%s", err, s.log())
		}
	}
}

// writeAgentCompose writes the agent environment's compose file: the app's, with web
// publishing no port (a routed service must not: shipd swaps it behind its route) and
// routed on s.listen, drained for a second.
func (d *deployBench) writeAgentCompose(s *wanShipd) {
	data, err := os.ReadFile(filepath.Join(d.repo, "docker-compose.yml"))
	if err != nil {
		d.b.Fatal(err)
	}
	c := string(data)
	ports := regexp.MustCompile(`(?m)^    ports:\n(?:      #.*\n)*      - "127\.0\.0\.1::8080"\n`)
	if !ports.MatchString(c) || !strings.Contains(c, `listen: ":8080"`) || !strings.Contains(c, "drain: 5s") {
		d.b.Fatalf("docker-compose.yml: no published port, listen \":8080\" or drain 5s to change:\n%s", c)
	}
	c = ports.ReplaceAllString(c, "")
	c = strings.Replace(c, `listen: ":8080"`, fmt.Sprintf("listen: %q", s.listen), 1)
	c = strings.Replace(c, "drain: 5s", "drain: 1s", 1)
	d.write(wanAgentCompose, c)
}

// agentShipYAML is the agent environment's ship.yaml through l's relay.
func (d *deployBench) agentShipYAML(l *wanLink, s *wanShipd) string {
	return fmt.Sprintf("app: %s\ncompose: %s\nregistry: %s\nenvironments:\n  %s:\n    hosts: [%s]\n    path: %s\n    known_hosts: known_hosts\n    docker_socket: %s\n    agent: true\n",
		appWan, wanAgentCompose, d.reg, wanAgentEnv, l.host.dest(), filepath.Join(d.mnt, wanAgentEnv), filepath.Join(d.mnt, "docker.sock"))
}

// agentCommit is newCommit for the agent environment: a new VERSION in both compose
// files (so that web's container is replaced), committed, and the image of the commit
// in the registry.
func (d *deployBench) agentCommit() {
	d.commits++
	version := fmt.Sprintf("bench%d", d.commits)
	re := regexp.MustCompile(`VERSION: \$\{VERSION:-[^}]*\}`)
	for _, name := range []string{"docker-compose.yml", wanAgentCompose} {
		data, err := os.ReadFile(filepath.Join(d.repo, name))
		if err != nil {
			d.b.Fatal(err)
		}
		if !re.Match(data) {
			d.b.Fatalf("%s: no VERSION: ${VERSION:-...} to change", name)
		}
		d.write(name, string(re.ReplaceAll(data, []byte("VERSION: ${VERSION:-"+version+"}"))))
	}
	d.git("commit", "-q", "-am", version)
	ref := d.reg + "/example/web:" + d.git("rev-parse", "HEAD")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := d.cli.ImageTag(ctx, client.ImageTagOptions{Source: testenv.AppImageRef, Target: ref}); err != nil {
		d.b.Fatal(err)
	}
	if err := testenv.PushImage(ctx, d.cli, ref, ""); err != nil {
		d.b.Fatal(err)
	}
	if _, err := d.cli.ImageRemove(ctx, ref, client.ImageRemoveOptions{}); err != nil {
		d.b.Fatal(err)
	}
}

// shipAgent runs shipctl deploy of the agent environment through l's relay (a new
// commit first when fresh) and measures it as shipWith does; its timeline has shipd's
// part as one phase, since shipd's events are not the engine steps of shipctl's.
func (d *deployBench) shipAgent(l *wanLink, s *wanShipd, fresh bool) wanRun {
	b := d.b
	if fresh {
		d.agentCommit()
	}
	hosts := []*benchHost{l.host}
	before, relayBefore, local := d.snapshot(hosts), lines(b, l.relay), s.proxy.requests.Load()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, d.shipctl, "-c", "ship-wanagent-"+l.env+".yaml", "--json", "--debug", "deploy", wanAgentEnv, "--untested")
	cmd.Dir = d.repo
	cmd.Env = append(slices.Clip(d.env), "SHIP_AGENT_SOCKET="+s.socket)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	end := time.Now()
	if err != nil {
		b.Fatalf("shipctl deploy %s: %v\n%s\n%s\nshipd:\n%s", wanAgentEnv, err, stdout.String(), stderr.String(), s.log())
	}
	run := deployRun{wall: end.Sub(start), phases: agentPhases(b, stdout.Bytes(), stderr.Bytes(), start, end)}
	run.counts = d.counts(hosts, before)
	r := wanRun{deployRun: run, turns: relayTurns(b, l.relay, relayBefore, run.counts[0].conns), conns: run.counts[0].conns}
	r.local = int(s.proxy.requests.Load() - local)
	return r
}

// agentPhases is the timeline of an agent deploy from shipctl's events: up to the
// upload as shipWith's, then shipd's part (from the request to its last event) and
// what shipctl does after it (unlock, prune) until the host's "done".
func agentPhases(b *testing.B, out, debug []byte, start, end time.Time) []phase {
	var connecting, ready, locked, uploaded, asked, shipdLast, done time.Time
	var first time.Time
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	if os.Getenv("BENCH_EVENTS") != "" {
		fmt.Fprintf(os.Stderr, "\nshipctl's events, agent (ms since its start):\n")
	}
	for sc.Scan() {
		var e event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			b.Fatalf("shipctl --json: %q: %v", sc.Text(), err)
		}
		if first.IsZero() {
			first = e.Time
		}
		if os.Getenv("BENCH_EVENTS") != "" {
			fmt.Fprintf(os.Stderr, "  %6d %-10s %-22s %s %s\n", e.Time.Sub(start).Milliseconds(), e.Event, e.Host, e.Service, e.Msg)
		}
		switch {
		case e.Host == "" && e.Event == "preflight" && strings.HasPrefix(e.Msg, "connecting to"):
			connecting = e.Time
		case e.Host == "":
		case e.Event == "preflight" && strings.HasPrefix(e.Msg, "ready:"):
			ready = e.Time
		case e.Event == "lock" && strings.HasPrefix(e.Msg, "locked"):
			locked = e.Time
		case e.Event == "upload" && strings.HasPrefix(e.Msg, "uploaded"):
			uploaded = e.Time
		case e.Event == "apply" && strings.HasPrefix(e.Msg, "asking shipd"):
			asked = e.Time
		case e.Event == "done":
			done = e.Time
		case !asked.IsZero() && done.IsZero() && e.Event != "lock" && e.Event != "prune":
			shipdLast = e.Time
		}
	}
	if os.Getenv("BENCH_EVENTS") != "" {
		fmt.Fprintf(os.Stderr, "  %6d exit\n", end.Sub(start).Milliseconds())
	}
	var connected time.Time
	for _, m := range reConnected.FindAllSubmatch(debug, -1) {
		if t, err := time.Parse(time.RFC3339Nano, string(m[1])); err == nil {
			connected = latest(connected, t)
		}
	}
	// A step without its event (its words changed) takes no time of its own.
	if locked.IsZero() {
		locked = ready
	}
	if uploaded.IsZero() {
		uploaded = locked
	}
	for what, t := range map[string]time.Time{"connecting": connecting, "ssh: connected": connected, "ready": ready,
		"asking shipd": asked, "shipd's events": shipdLast, "done": done} {
		if t.IsZero() {
			b.Fatalf("no %q in shipctl's output:\n%s\n%s", what, out, debug)
		}
	}
	return []phase{
		{"start-up", first.Sub(start)},
		{"registry", connecting.Sub(first)},
		{"ssh", connected.Sub(connecting)},
		{"preflight+lock", latest(ready, locked).Sub(connected)},
		{"upload", uploaded.Sub(latest(ready, locked))},
		{"ask", asked.Sub(uploaded)},
		{"shipd", shipdLast.Sub(asked)},
		{"unlock+prune", done.Sub(shipdLast)},
		{"exit", end.Sub(done)},
	}
}
