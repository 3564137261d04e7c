package bench

// BenchmarkWAN measures `shipctl deploy` to one host far away: an sshd behind
// test/cmd/latency, a relay that adds a delay each way (this kernel has no netem),
// at 0, 25 and 75 ms each way, next to the plain script (scp, then ssh docker-compose
// pull && up -d) through the same relays, in one run, rows interleaved. `make
// bench-wan` runs it:
//
//	go test -run '^$' -bench '^BenchmarkWAN$' -benchtime 1x ./test/bench
//
// Knobs: BENCH_RUNS, deploys per row (default 3); BENCH_WAN_DELAYS, the delays each
// way (default "0,25ms,75ms"); BENCH_EVENTS=1 as in BenchmarkDeploy.
//
// The host is set up as BenchmarkDeploy's are (deploy_test.go): an sshd on 127.0.0.7
// in a mount namespace of its own, sftp-server behind test/cmd/sftpcount, the engine
// behind a proxy that counts its requests. Each delay has its relay and its
// ship.yaml for the one environment (the same folder on the host); the script has an
// ssh_config per delay.
//
// Per deploy: wall time; the relay's round trips (turns of the conversation as the
// client sees them, all connections of the deploy; the handshake's, measured with a
// bare SSH connection through the relay, taken away in "after hs"); SFTP requests;
// Docker API requests over the connection (the script's docker-compose runs on the
// host and its requests cross no link, but are counted the same way). The round
// trips a deploy waits for one after the other are also implied by the wall times:
// (wall at the longest delay - wall at 0) / (2 x the longest delay).
//
// The agent rows deploy an environment with agent: true to the same host, through
// shipd running there (wanagent_test.go); their "api" is shipctl's requests over the
// link, and shipd's own (on the host, crossing no link) are listed below the table.

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
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/shipdeploy/ship/pkg/engine"
	"github.com/shipdeploy/ship/test/testenv"
)

// appWan is the WAN benchmark's app: the engine proxy renames it qzwan7.
const appWan = "qzwan0"

// wanEnv is its one environment: its project on the engine is qzwan7-wan.
const wanEnv = "wan"

// Targets of issue 13: round trips after the SSH handshake.
const (
	targetWanUnchanged = 15
	targetWanChanged   = 20
)

// wanLink is one delay: its relay and the host as seen through it.
type wanLink struct {
	delay  time.Duration
	env    string // its name: d<ms>
	file   string // its ship.yaml: the environment wanEnv through its relay
	relay  string // the relay's log
	host   *benchHost
	cfg    string        // the script's ssh_config
	hs     int           // round trips of a bare SSH handshake through the relay
	hsWall time.Duration // the wall time of a bare SSH handshake through it, the fastest of three
}

type wanRun struct {
	deployRun
	turns, conns int
	local        int // shipd's Docker API requests on the host (agent rows)
}

func BenchmarkWAN(b *testing.B) {
	runs := envInt(b, "BENCH_RUNS", 3)
	delays := wanDelays(b)
	if os.Geteuid() != 0 {
		testenv.Missing(b, "root", "the benchmark's sshd gets folders of its own in a mount namespace (unshare, mount --bind): run it as root")
	}
	for _, tool := range []string{"unshare", "docker-compose", "ssh", "scp"} {
		if _, err := exec.LookPath(tool); err != nil {
			testenv.Missing(b, tool, "make bench-wan installs what is missing (openssh-server, docker-compose)")
		}
	}
	sftpServer := findSFTPServer(b)
	loadStart, _ := os.ReadFile("/proc/loadavg")

	d := &deployBench{b: b, cli: testenv.Docker(b), enginePIDs: pidsOf("dockerd", "containerd")}
	testenv.AppImage(b, d.cli)
	bins := buildBins(b, "shipctl", "./cmd/shipctl", "registry", "./test/cmd/registry",
		"sftpcount", "./test/cmd/sftpcount", "latency", "./test/cmd/latency", "shipd", "./cmd/shipd")
	d.shipctl = bins["shipctl"]
	d.reg = startProc(b, bins["registry"], "-dir", b.TempDir(), "-listen", "127.0.0.1:0", "-max-life", "1h").addr

	base, err := os.MkdirTemp("", "ship-bench-wan-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(base) })
	d.mnt = filepath.Join(base, "srv")
	h := &benchHost{n: 7, dir: filepath.Join(base, "h7")}
	for _, dir := range []string{d.mnt, filepath.Join(h.dir, appScript)} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			b.Fatal(err)
		}
	}
	h.sftp = filepath.Join(h.dir, "sftp.jsonl")
	h.proxy, err = startEngineProxy(filepath.Join(h.dir, "docker.sock"), engineSocket(),
		[][2]string{{appWan, h.project(appWan)}, {appScript, h.project(appScript)}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(h.proxy.Close)
	stockBashrc := filepath.Join(base, "bashrc")
	if err := os.WriteFile(stockBashrc, []byte("case $- in\n    *i*) ;;\n      *) return;;\nesac\n"), 0o644); err != nil {
		b.Fatal(err)
	}
	bashrc := ""
	if home, err := os.UserHomeDir(); err == nil {
		if _, err := os.Stat(filepath.Join(home, ".bashrc")); err == nil {
			bashrc = filepath.Join(home, ".bashrc")
		}
	}
	h.sshd = testenv.SSHDOn(b, "127.0.0.7",
		testenv.SSHDWrapper("unshare", "--mount", "--propagation", "private", "--",
			"sh", "-c", `mount --bind "$1" "$2" && { [ -z "$4" ] || mount --bind "$3" "$4"; } && shift 4 && exec "$@"`,
			"sh", h.dir, d.mnt, stockBashrc, bashrc),
		testenv.SSHDSetting("LogLevel", "DEBUG1"),
		testenv.SSHDSetting("PermitUserRC", "no"),
		testenv.SSHDSetting("Subsystem", fmt.Sprintf("sftp %s -out %s %s", bins["sftpcount"], h.sftp, sftpServer)),
	)
	d.hosts = []*benchHost{h}
	b.Cleanup(func() { d.downWan() })
	b.Cleanup(d.cleanup)
	d.downWan()
	shipd := startWanShipd(b, d, h, bins["shipd"])

	// A relay per delay, and the host as seen through it.
	var links []*wanLink
	var known strings.Builder
	for _, delay := range delays {
		l := &wanLink{delay: delay, env: fmt.Sprintf("d%d", delay.Milliseconds()), relay: filepath.Join(base, fmt.Sprintf("relay-%d.jsonl", delay.Milliseconds()))}
		l.file = "ship-wan-" + l.env + ".yaml"
		addr := startProc(b, bins["latency"], "-to", h.sshd.Addr, "-delay", delay.String(), "-out", l.relay).addr
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			b.Fatal(err)
		}
		view := *h
		sshd := *h.sshd
		sshd.Addr, sshd.Host = addr, host
		fmt.Sscan(port, &sshd.Port)
		view.sshd = &sshd
		l.host = &view
		known.WriteString(knownhosts.Line([]string{knownhosts.Normalize(addr)}, h.sshd.HostKey) + "\n")
		links = append(links, l)
	}

	d.setupRepo()
	d.writeAgentCompose(shipd)
	d.write("known_hosts", known.String())
	// One environment (a folder and a project are one environment's), seen through
	// each relay by a ship.yaml of its own.
	for _, l := range links {
		d.write(l.file, fmt.Sprintf("app: %s\nregistry: %s\nenvironments:\n  %s:\n    hosts: [%s]\n    path: %s\n    known_hosts: known_hosts\n    docker_socket: %s\n",
			appWan, d.reg, wanEnv, l.host.dest(), filepath.Join(d.mnt, "wan"), filepath.Join(d.mnt, "docker.sock")))
		d.write("ship-wanagent-"+l.env+".yaml", d.agentShipYAML(l, shipd))
	}
	d.git("add", "-A")
	d.git("commit", "-q", "-m", "wan setup")
	keyText, err := os.ReadFile(h.sshd.UserKeyFile)
	if err != nil {
		b.Fatal(err)
	}
	home := b.TempDir()
	d.env = append(os.Environ(), "HOME="+home, "SSH_AUTH_SOCK=", "DOCKER_CONFIG="+filepath.Join(home, ".docker"),
		"SHIP_SSH_KEY="+string(keyText), "SHIP_REGISTRY="+d.reg, "SHIP_REGISTRY_USER=", "SHIP_REGISTRY_PASSWORD=")
	d.setupScript(h.sshd.UserKeyFile)
	for _, l := range links {
		l.cfg = filepath.Join(filepath.Dir(d.sshCfg), "ssh_config-"+l.env)
		c := fmt.Sprintf("Host h%d\n  HostName %s\n  Port %d\n  User %s\n  IdentityFile %s\n  IdentitiesOnly yes\n  IdentityAgent none\n"+
			"  UserKnownHostsFile %s\n  GlobalKnownHostsFile /dev/null\n  StrictHostKeyChecking yes\n  BatchMode yes\n",
			h.n, l.host.sshd.Host, l.host.sshd.Port, h.sshd.User, h.sshd.UserKeyFile, filepath.Join(d.repo, "known_hosts"))
		if err := os.WriteFile(l.cfg, []byte(c), 0o600); err != nil {
			b.Fatal(err)
		}
		l.hs, l.hsWall = handshake(b, l, h.sshd)
	}

	ship := func(l *wanLink, fresh bool) wanRun {
		before := lines(b, l.relay)
		r := d.shipWith(d.shipctl, l.file, wanEnv, []*benchHost{l.host}, fresh)
		return wanRun{deployRun: r, turns: relayTurns(b, l.relay, before, r.counts[0].conns), conns: r.counts[0].conns}
	}
	script := func(l *wanLink, fresh bool) wanRun {
		before := lines(b, l.relay)
		d.sshCfg = l.cfg
		r := d.plain([]*benchHost{l.host}, fresh)
		return wanRun{deployRun: r, turns: relayTurns(b, l.relay, before, r.counts[0].conns), conns: r.counts[0].conns}
	}
	kinds := []struct {
		name string
		run  func(*wanLink) wanRun
	}{
		{"shipctl, changed", func(l *wanLink) wanRun { return ship(l, true) }},
		{"shipctl, unchanged", func(l *wanLink) wanRun { return ship(l, false) }},
		{"script, changed", func(l *wanLink) wanRun { return script(l, true) }},
		{"script, unchanged", func(l *wanLink) wanRun { return script(l, false) }},
		{"agent, changed", func(l *wanLink) wanRun { return d.shipAgent(l, shipd, true) }},
		{"agent, unchanged", func(l *wanLink) wanRun { return d.shipAgent(l, shipd, false) }},
	}
	// The first deploys create what later ones only change: not measured.
	ship(links[0], true)
	script(links[0], true)
	d.shipAgent(links[0], shipd, true)

	results := make([][][]wanRun, len(links)) // [link][kind][run]
	for i := range results {
		results[i] = make([][]wanRun, len(kinds))
	}
	b.ResetTimer()
	for range runs {
		for i, l := range links {
			for k, kind := range kinds {
				results[i][k] = append(results[i][k], kind.run(l))
			}
		}
	}
	b.StopTimer()
	loadEnd, _ := os.ReadFile("/proc/loadavg")
	d.reportWan(links, results, runs, loadStart, loadEnd, func(k int) string { return kinds[k].name })
}

// reportWan prints the table and the targets.
func (d *deployBench) reportWan(links []*wanLink, results [][][]wanRun, runs int, loadStart, loadEnd []byte, kind func(int) string) {
	w := func(format string, args ...any) { fmt.Fprintf(os.Stdout, format, args...) }
	w("\nWAN benchmark: shipctl deploy vs scp + ssh docker-compose pull && up -d, one host behind a relay that delays each way\n")
	w("host: sshd on 127.0.0.7 behind test/cmd/latency; one Docker engine (%s); app: examples/ (health check every 1s)\n", engineVersion(d.cli))
	w("machine: %d CPU cores; load average %s at the start, %s at the end\n", runtime.NumCPU(), loadavg(loadStart), loadavg(loadEnd))
	w("%d runs per row, rows interleaved; the median run shown, [min-max] of the wall time\n\n", runs)
	w("%-6s %-20s %22s | %6s %6s %9s %6s %6s\n", "delay", "", "wall", "conns", "RTs", "after hs", "sftp", "api")
	med := make([][]wanRun, len(links))
	for i, l := range links {
		med[i] = make([]wanRun, len(results[i]))
		for k, rs := range results[i] {
			m := medianWan(rs)
			med[i][k] = m
			wall := fmt.Sprintf("%s [%s-%s]", sec(m.wall), sec(minWan(rs)), sec(maxWan(rs)))
			w("%-6s %-20s %22s | %6d %6d %9d %6d %6d\n", ms0(l.delay), kind(k), wall,
				m.conns, m.turns, m.turns-m.conns*l.hs, m.counts[0].sftp, m.counts[0].api)
		}
	}
	w("  RTs: the relay's round trips (turns as the client sees them, all connections); after hs: less %d per connection,\n", links[0].hs)
	w("  a bare SSH handshake's through the relay (x/crypto/ssh); sftp: SFTP requests; api: Docker API requests\n")

	last := len(links) - 1
	implied := impliedAfterHandshake(links, med)
	if implied != nil {
		rtt := 2 * (links[last].delay - links[0].delay)
		w("\nround trips implied by the wall times, (wall at %s - wall at %s) / %s; after hs: less the bare handshake's the same way (%.1f per connection):\n",
			ms0(links[last].delay), ms0(links[0].delay), ms0(rtt), float64(links[last].hsWall-links[0].hsWall)/float64(rtt))
		for k := range med[0] {
			extra := med[last][k].wall - med[0][k].wall
			w("  %-20s %6.1f  after hs %6.1f  (+%s)\n", kind(k), float64(extra)/float64(rtt), implied[k], sec(extra))
		}
	}
	w("\nshipctl's timeline at %s each way, the median run:\n", ms0(links[last].delay))
	for k := range med[last] {
		if len(med[last][k].phases) == 0 {
			continue // the script's
		}
		var parts []string
		for _, p := range med[last][k].phases {
			parts = append(parts, fmt.Sprintf("%s %s", p.name, ms0(p.d)))
		}
		w("  %-20s %s\n", kind(k), strings.Join(parts, " | "))
		w("  %-20s SFTP: %s\n", "", sftpTypes(med[last][k].counts[0].sftpTypes))
	}

	w("\nshipd's own Docker API requests on the host (they cross no link), the median run:")
	for i, l := range links {
		for k, m := range med[i] {
			if strings.HasPrefix(kind(k), "agent") {
				w(" %s %s %d;", ms0(l.delay), kind(k), m.local)
			}
		}
	}
	w("\n")

	// The targets are judged on the round trips waited for, as the wall times imply
	// them: the relay's turns count a reply on one channel and a reply on another that
	// arrived while both were awaited as two, so they are an upper bound. Without a
	// delay of 0 to compare with, the turns are all there is.
	w("\n%-58s %9s %9s %8s\n", "target (round trips after the SSH handshake)", "implied", "turns", "")
	for i, l := range links {
		for k, m := range med[i] {
			target := targetWanUnchanged
			switch {
			case strings.HasPrefix(kind(k), "script"):
				continue
			case strings.HasSuffix(kind(k), ", changed"):
				target = targetWanChanged
			}
			n := m.turns - m.conns*l.hs
			if i == last && implied != nil {
				w("%-58s %9.1f %9d %8s\n", fmt.Sprintf("%s at %s <= %d", kind(k), ms0(l.delay), target), implied[k], n, verdict(implied[k] <= float64(target)))
				continue
			}
			if implied != nil {
				continue // judged at the longest delay
			}
			w("%-58s %9s %9d %8s\n", fmt.Sprintf("%s at %s <= %d", kind(k), ms0(l.delay), target), "-", n, verdict(n <= target))
		}
	}
	w("\n")
}

// impliedAfterHandshake is, per kind of run, the round trips its median run waited
// for after the SSH handshake: its wall time at the longest delay less that at the
// shortest, less its connections' handshakes the same way, over the difference in
// round-trip time. nil without two delays to compare.
func impliedAfterHandshake(links []*wanLink, med [][]wanRun) []float64 {
	last := len(links) - 1
	if last == 0 || links[last].delay <= links[0].delay {
		return nil
	}
	rtt := float64(2 * (links[last].delay - links[0].delay))
	hs := float64(links[last].hsWall - links[0].hsWall)
	out := make([]float64, len(med[0]))
	for k := range med[0] {
		extra := float64(med[last][k].wall - med[0][k].wall)
		out[k] = (extra - float64(med[last][k].conns)*hs) / rtt
	}
	return out
}

func medianWan(rs []wanRun) wanRun {
	runs := make([]deployRun, len(rs))
	for i, r := range rs {
		runs[i] = r.deployRun
	}
	m := median(runs)
	for _, r := range rs {
		if r.wall == m.wall && r.healthy == m.healthy {
			return r
		}
	}
	return rs[0]
}

func minWan(rs []wanRun) time.Duration {
	m := rs[0].wall
	for _, r := range rs {
		m = min(m, r.wall)
	}
	return m
}

func maxWan(rs []wanRun) time.Duration {
	m := rs[0].wall
	for _, r := range rs {
		m = max(m, r.wall)
	}
	return m
}

// wanDelays reads BENCH_WAN_DELAYS ("0,25ms,75ms"), shortest first.
func wanDelays(b *testing.B) []time.Duration {
	v := os.Getenv("BENCH_WAN_DELAYS")
	if v == "" {
		v = "0,25ms,75ms"
	}
	var out []time.Duration
	for _, f := range strings.Split(v, ",") {
		d, err := time.ParseDuration(strings.TrimSpace(f))
		if err != nil || d < 0 || d > 5*time.Second || (len(out) > 0 && d <= out[len(out)-1]) {
			b.Fatalf("BENCH_WAN_DELAYS=%q: want durations up to 5s, shortest first", v)
		}
		out = append(out, d)
	}
	return out
}

func findSFTPServer(b *testing.B) string {
	for _, p := range []string{"/usr/lib/openssh/sftp-server", "/usr/libexec/openssh/sftp-server", "/usr/libexec/sftp-server"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	testenv.Missing(b, "OpenSSH's sftp-server", "apt-get install openssh-server")
	return ""
}

// handshakeTurns is the round trips of an SSH connection that only logs in, through
// l's relay.
func handshake(b *testing.B, l *wanLink, sshd *testenv.SSHServer) (int, time.Duration) {
	turns, fastest := 0, time.Duration(0)
	for i := range 3 {
		before := lines(b, l.relay)
		start := time.Now()
		c, err := ssh.Dial("tcp", l.host.sshd.Addr, &ssh.ClientConfig{
			User: sshd.User, Auth: []ssh.AuthMethod{ssh.PublicKeys(sshd.UserSigner)},
			HostKeyCallback: ssh.FixedHostKey(sshd.HostKey), Timeout: time.Minute,
		})
		if err != nil {
			b.Fatalf("ssh through the relay %s: %v", l.host.sshd.Addr, err)
		}
		wall := time.Since(start)
		c.Close()
		turns = relayTurns(b, l.relay, before, 1)
		if i == 0 || wall < fastest {
			fastest = wall
		}
	}
	return turns, fastest
}

// relayConn is a line of test/cmd/latency's log.
type relayConn struct {
	Turns int `json:"turns"`
}

func readRelay(b *testing.B, file string) []relayConn {
	data, err := os.ReadFile(file)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		b.Fatal(err)
	}
	var out []relayConn
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		var c relayConn
		if json.Unmarshal(sc.Bytes(), &c) != nil {
			break // a line being written
		}
		out = append(out, c)
	}
	return out
}

func lines(b *testing.B, file string) int { return len(readRelay(b, file)) }

// relayTurns waits for the n connections after the first before of the relay's log
// to end, and adds up their round trips.
func relayTurns(b *testing.B, file string, before, n int) int {
	deadline := time.Now().Add(30 * time.Second)
	for {
		cs := readRelay(b, file)
		if len(cs) >= before+n {
			t := 0
			for _, c := range cs[before:] {
				t += c.Turns
			}
			return t
		}
		if time.Now().After(deadline) {
			b.Fatalf("the relay logged %d connections in 30s, want %d", len(cs)-before, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// downWan removes the benchmark's projects.
func (d *deployBench) downWan() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	eng := engine.New(d.cli)
	for _, h := range d.hosts {
		for _, project := range []string{h.project(appWan) + "-" + wanEnv, h.project(appWan) + "-" + wanAgentEnv, h.project(appWan), h.project(appScript)} {
			if err := eng.Down(ctx, project, engine.DownOptions{Volumes: true}); err != nil {
				d.b.Logf("clean up %s: %v", project, err)
			}
		}
	}
}
