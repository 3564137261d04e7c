package bench

// BenchmarkDeploy measures `shipctl deploy` with the real binaries against real sshds,
// a registry process (test/cmd/registry) and this machine's Docker engine, next to the
// plain script it replaces, in one run. `make bench-deploy` runs it:
//
//	go test -run '^$' -bench '^BenchmarkDeploy$' -benchtime 1x ./test/bench
//
// Knobs: BENCH_RUNS, deploys per row (default 5); BENCH_EVENTS=1 writes the events of
// every shipctl run to stderr, with their times.
//
// The rows, each deployed BENCH_RUNS times (the median is shown), rows alternating so
// that the machine's noise spreads over all of them:
//
//   - shipctl deploy of a new commit to 1 host, and to 4 hosts;
//   - shipctl deploy again of the same commit (a no-op redeploy), 1 and 4 hosts;
//   - the script: scp of the compose file, then `docker-compose pull && docker-compose
//     up -d` over ssh (Debian's docker-compose, the v1 Python CLI), each host in the
//     background; with a new image tag, and again with nothing changed.
//
// Each commit changes VERSION in the compose file (so the service is recreated) and
// has its own image tag, pushed to the registry and removed from the engine before the
// deploy, so that the host pulls it (its layers are on the engine already: the pull is
// a manifest and a tag). The example app's health check runs every second, so a new
// container takes a second or more to be healthy, and a deploy cannot be quicker.
//
// # The hosts
//
// Four sshds on 127.0.0.2-5 (test/testenv), each started in a mount namespace of its
// own (unshare, root only) with a folder of its own bind-mounted on the one path that
// ship.yaml names, so that each host has its own releases/, current and audit.log. The
// hosts' docker_socket, in that folder, is a proxy to the engine (engineproxy_test.go)
// that renames the compose project per host (qzone0 is qzone2 on 127.0.0.2, qzone3 on
// 127.0.0.3, ...): four projects on one engine, as on four machines, but sharing its
// CPUs: the 4-host rows' engine spans are longer than the 1-host rows' (the table
// also shows the fan-out with the 1-host engine time). The 1-host and the 4-host rows
// are two apps (qzone0, qzfour0) with their own paths; the script's project is
// qzbase0, from its folder's name. The sshds run sftp-server as Debian's do (an
// external subsystem, started by the user's shell), and their sessions see Debian's
// stock ~/.bashrc rather than this machine's (bind-mounted over it in the namespace):
// a developer's .bashrc (pyenv init, say) would otherwise time every SSH session.
//
// # What is measured
//
// Wall time: from the start of the process to its exit. shipctl's own overhead is the
// wall time minus the time the engine works: pull (from "pulling" to "pulled"), start
// (from "applying" to the last container started, old ones stopped and removed on the
// way) and health wait (from "waiting until healthy" to "healthy"), from the events of
// shipctl --json with their timestamps; across 4 hosts, minus the union of those spans.
// The timeline of the slowest host splits the rest; "ssh" ends when the last SSH
// connection is up, which only shipctl --debug's log says.
// The script's rows have no events: they show the wall time of the script and, as a
// deploy of shipctl ends once the release is healthy, the time until every host's
// container is healthy (polled on the engine every 10ms).
//
// Per host: SSH connections (sshd's "Accepted publickey" lines, LogLevel DEBUG1), and
// round trips: the handshake (version, key exchange, service request: 3, plus each
// userauth request), channel opens, channel and global requests that want a reply
// (sshd's log), SFTP requests (test/cmd/sftpcount in front of sftp-server: one reply
// per request) and Docker API requests (request lines through the proxy). The script's
// scp speaks SFTP too (OpenSSH 9), and its docker-compose reaches the engine through
// the same proxy (DOCKER_HOST), so its counts are taken the same way. Requests a
// client pipelines (SFTP writes) are counted one by one.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/shipdeploy/ship/pkg/engine"
	"github.com/shipdeploy/ship/test/testenv"
)

// Targets of issue #4.
const (
	targetOverhead = 300 * time.Millisecond // shipctl's own time per deploy, on loopback
	targetFanout   = 1.3                    // 4 hosts over 1 host, wall time
	targetNoop     = time.Second            // a redeploy that changes nothing, wall time
	benchHosts     = 4
)

// The apps: their names are what the engine proxies rename, ending in "0".
const (
	appOne    = "qzone0"
	appFour   = "qzfour0"
	appScript = "qzbase0"
)

var deployMetrics struct {
	once sync.Once
	m    map[string]float64
}

func BenchmarkDeploy(b *testing.B) {
	deployMetrics.once.Do(func() { deployMetrics.m = measureDeploy(b) })
	if deployMetrics.m == nil {
		b.Fatal("the deploy measurement failed in an earlier call")
	}
	for unit, v := range deployMetrics.m {
		b.ReportMetric(v, unit)
	}
}

// benchHost is one "server": an sshd on its own loopback address in its own mount
// namespace, and its proxy to the engine.
type benchHost struct {
	n     int    // 2..5: 127.0.0.n, and the digit of its project names
	dir   string // its own folder, bind-mounted on mnt in its namespace
	sshd  *testenv.SSHServer
	proxy *engineProxy
	sftp  string // sftpcount's log
}

func (h *benchHost) dest() string { return h.sshd.User + "@" + h.sshd.Addr }

// project is app's compose project on this host.
func (h *benchHost) project(app string) string { return fmt.Sprintf("%s%d", app[:len(app)-1], h.n) }

type deployBench struct {
	b       *testing.B
	cli     *client.Client
	shipctl string
	base    string // another shipctl to compare with; "" none
	reg     string // the registry's address
	repo    string // the app's checkout
	mnt     string // the hosts' folder, as they see it
	hosts   []*benchHost
	env     []string // shipctl's environment
	sshCfg  string   // the script's ssh_config
	script  string   // the script
	scrDir  string   // the script's working folder (its docker-compose.yml)
	commits int
	// enginePIDs are dockerd's and containerd's, for their CPU time.
	enginePIDs []int
}

// deployRun is one deploy, measured.
type deployRun struct {
	wall    time.Duration
	healthy time.Duration // the script: until every host's container is healthy
	pull    time.Duration // engine spans, union over hosts
	start   time.Duration
	health  time.Duration
	engine  time.Duration // union of the three
	phases  []phase       // the slowest host's timeline (shipctl)
	counts  []hostCounts  // per host
	cpu     cpuUse
}

// cpuUse is the CPU time the parts used during a run: the client (shipctl, or the
// script with its scp and ssh), the hosts' sshds (with what runs under them:
// sftp-server, the script's docker-compose) and the engine (dockerd and containerd,
// whatever else asks them at the same time).
type cpuUse struct {
	client, hosts, engine time.Duration
}

func (r deployRun) overhead() time.Duration { return r.wall - r.engine }

type phase struct {
	name string
	d    time.Duration
}

// hostCounts are one host's connections and round trips during a run.
type hostCounts struct {
	conns, auth, channels, chanReqs, globalReqs int
	sftpSessions, sftp                          int
	api, apiConns                               int
	sftpTypes                                   map[string]int
}

// roundTrips: per connection 3 for the handshake (version, key exchange, service
// request) and one per userauth request; then every channel open, request wanting a
// reply, SFTP request and Docker API request.
func (c hostCounts) roundTrips() int {
	return 3*c.conns + c.auth + c.channels + c.chanReqs + c.globalReqs + c.sftp + c.api
}

func measureDeploy(b *testing.B) map[string]float64 {
	runs := envInt(b, "BENCH_RUNS", 5)
	if os.Geteuid() != 0 {
		testenv.Missing(b, "root", "each of the benchmark's sshds gets folders of its own in a mount namespace (unshare, mount --bind): run it as root")
	}
	for _, tool := range []string{"unshare", "docker-compose", "ssh", "scp"} {
		if _, err := exec.LookPath(tool); err != nil {
			testenv.Missing(b, tool, "make bench-deploy installs what is missing (openssh-server, docker-compose)")
		}
	}
	sftpServer := ""
	for _, p := range []string{"/usr/lib/openssh/sftp-server", "/usr/libexec/openssh/sftp-server", "/usr/libexec/sftp-server"} {
		if _, err := os.Stat(p); err == nil {
			sftpServer = p
			break
		}
	}
	if sftpServer == "" {
		testenv.Missing(b, "OpenSSH's sftp-server", "apt-get install openssh-server")
	}
	loadStart, _ := os.ReadFile("/proc/loadavg")

	d := &deployBench{b: b, cli: testenv.Docker(b), enginePIDs: pidsOf("dockerd", "containerd")}
	testenv.AppImage(b, d.cli)
	bins := buildBins(b, "shipctl", "./cmd/shipctl", "registry", "./test/cmd/registry", "sftpcount", "./test/cmd/sftpcount")
	d.shipctl = bins["shipctl"]
	// BENCH_BASE_SHIPCTL: another shipctl (an earlier commit's, `make bench-deploy
	// BASE=rev` builds it) deployed in the same rounds, for a before/after ratio.
	d.base = os.Getenv("BENCH_BASE_SHIPCTL")

	// The registry, a process of its own.
	d.reg = startProc(b, bins["registry"], "-dir", b.TempDir(), "-listen", "127.0.0.1:0", "-max-life", "1h").addr

	// The hosts.
	base, err := os.MkdirTemp("", "ship-bench-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(base) })
	d.mnt = filepath.Join(base, "srv")
	if err := os.Mkdir(d.mnt, 0o755); err != nil {
		b.Fatal(err)
	}
	// sshd runs every command (the script's, and an external sftp-server) through the
	// user's shell, and bash run by sshd reads ~/.bashrc: a developer's (pyenv, nvm)
	// can take longer than the deploy's work. The hosts see Debian's stock one, which
	// returns at once when not interactive, over it in their namespace.
	bashrc, stockBashrc := "", filepath.Join(base, "bashrc")
	if u, err := user.Current(); err == nil {
		if _, err := os.Stat(filepath.Join(u.HomeDir, ".bashrc")); err == nil {
			bashrc = filepath.Join(u.HomeDir, ".bashrc")
		}
	}
	if err := os.WriteFile(stockBashrc, []byte("# Debian's /etc/skel/.bashrc starts with this.\ncase $- in\n    *i*) ;;\n      *) return;;\nesac\n"), 0o644); err != nil {
		b.Fatal(err)
	}
	for i := range benchHosts {
		h := &benchHost{n: i + 2, dir: filepath.Join(base, fmt.Sprintf("h%d", i+2))}
		if err := os.MkdirAll(filepath.Join(h.dir, appScript), 0o755); err != nil {
			b.Fatal(err)
		}
		h.sftp = filepath.Join(h.dir, "sftp.jsonl")
		var renames [][2]string
		for _, app := range []string{appOne, appFour, appScript} {
			renames = append(renames, [2]string{app, h.project(app)})
		}
		h.proxy, err = startEngineProxy(filepath.Join(h.dir, "docker.sock"), engineSocket(), renames)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(h.proxy.Close)
		h.sshd = testenv.SSHDOn(b, fmt.Sprintf("127.0.0.%d", h.n),
			testenv.SSHDWrapper("unshare", "--mount", "--propagation", "private", "--",
				"sh", "-c", `mount --bind "$1" "$2" && { [ -z "$4" ] || mount --bind "$3" "$4"; } && shift 4 && exec "$@"`,
				"sh", h.dir, d.mnt, stockBashrc, bashrc),
			testenv.SSHDSetting("LogLevel", "DEBUG1"),
			testenv.SSHDSetting("PermitUserRC", "no"),
			testenv.SSHDSetting("Subsystem", fmt.Sprintf("sftp %s -out %s %s", bins["sftpcount"], h.sftp, sftpServer)),
		)
		d.hosts = append(d.hosts, h)
	}
	key := d.hosts[0].sshd
	for _, h := range d.hosts[1:] {
		h.sshd.Authorize(b, key.UserSigner.PublicKey())
	}
	b.Cleanup(d.cleanup)
	d.down(context.Background())

	d.setupRepo()
	keyText, err := os.ReadFile(key.UserKeyFile)
	if err != nil {
		b.Fatal(err)
	}
	home := b.TempDir()
	d.env = append(os.Environ(), "HOME="+home, "SSH_AUTH_SOCK=", "DOCKER_CONFIG="+filepath.Join(home, ".docker"),
		"SHIP_SSH_KEY="+string(keyText), "SHIP_REGISTRY="+d.reg, "SHIP_REGISTRY_USER=", "SHIP_REGISTRY_PASSWORD=")
	d.setupScript(key.UserKeyFile)

	one, four := d.hosts[:1], d.hosts
	rows := []benchRow{
		{"shipctl deploy, 1 host", func() deployRun { return d.ship("ship-one.yaml", "one", one, true) }},
		{"shipctl deploy, 4 hosts", func() deployRun { return d.ship("ship-four.yaml", "four", four, true) }},
		{"shipctl no-op redeploy, 1 host", func() deployRun { return d.ship("ship-one.yaml", "one", one, false) }},
		{"shipctl no-op redeploy, 4 hosts", func() deployRun { return d.ship("ship-four.yaml", "four", four, false) }},
		{"script, 1 host", func() deployRun { return d.plain(one, true) }},
		{"script, 4 hosts", func() deployRun { return d.plain(four, true) }},
		{"script no-op, 1 host", func() deployRun { return d.plain(one, false) }},
		{"script no-op, 4 hosts", func() deployRun { return d.plain(four, false) }},
	}
	order := []int{0, 2, 1, 3, 4, 6, 5, 7}
	if d.base != "" {
		rows = append(rows,
			benchRow{"base shipctl deploy, 1 host", func() deployRun { return d.shipWith(d.base, "ship-one.yaml", "one", one, true) }},
			benchRow{"base shipctl no-op, 1 host", func() deployRun { return d.shipWith(d.base, "ship-one.yaml", "one", one, false) }},
		)
		order = append(order, 8, 9)
	}
	// A first deploy creates what later ones only change (networks, the first
	// container, the hosts' folders): it is not measured.
	d.ship("ship-one.yaml", "one", one, true)
	d.ship("ship-four.yaml", "four", four, true)
	d.plain(four, true)

	results := make([][]deployRun, len(rows))
	b.ResetTimer()
	for range runs {
		// A new commit for each deploy row, then its no-op redeploy: rows 0 and 2, 1
		// and 3 go in pairs, and the script's the same.
		for _, i := range order {
			results[i] = append(results[i], rows[i].run())
		}
	}
	b.StopTimer()
	loadEnd, _ := os.ReadFile("/proc/loadavg")

	med := make([]deployRun, len(rows))
	for i := range rows {
		med[i] = median(results[i])
	}
	w := func(format string, args ...any) { fmt.Fprintf(os.Stdout, format, args...) }
	w("\ndeploy benchmark: shipctl deploy vs scp + ssh docker-compose pull && up -d, on this machine\n")
	w("hosts: sshd on 127.0.0.2-5, a mount namespace and a project name each, one Docker engine (%s)\n", engineVersion(d.cli))
	w("app: examples/ (one service, FROM scratch, health check every 1s; published on an ephemeral port);\n")
	w("     each deploy is of a new commit (VERSION changed: recreated) with a new image tag to pull\n")
	w("machine: %d CPU cores; load average %s at the start, %s at the end (other work on the machine slows runs down)\n",
		runtime.NumCPU(), loadavg(loadStart), loadavg(loadEnd))
	w("%d runs per row, rows interleaved; median run shown, [min-max] of the wall time\n\n", runs)

	w("%-32s %21s %8s %8s %8s %9s | %6s %6s %6s %6s %6s\n", "", "wall", "pull", "start", "health", "overhead",
		"conns", "chans", "sftp", "api", "RTTs")
	for i, row := range rows {
		r := med[i]
		wall := fmt.Sprintf("%s [%s-%s]", sec(r.wall), sec(minWall(results[i])), sec(maxWall(results[i])))
		c := meanCounts(r.counts)
		counts := fmt.Sprintf("%6s %6s %6s %6s %6s", c[0], c[1], c[2], c[3], c[4])
		if strings.HasPrefix(row.name, "script") {
			w("%-32s %21s %8s %8s %8s %9s | %s\n", row.name, wall, "-", "-", "-", "-", counts)
			w("%-32s %21s\n", "  until healthy", sec(r.healthy))
			continue
		}
		w("%-32s %21s %8s %8s %8s %9s | %s\n", row.name, wall, sec(r.pull), sec(r.start), sec(r.health), sec(r.overhead()), counts)
	}
	w("  per host (the mean over hosts): SSH connections, channels opened, SFTP requests, Docker API requests, all round trips\n")

	w("\nshipctl's timeline, the slowest host of the median run:\n")
	for _, i := range []int{0, 1, 2, 3} {
		var parts []string
		for _, p := range med[i].phases {
			parts = append(parts, fmt.Sprintf("%s %s", p.name, ms0(p.d)))
		}
		w("  %-31s %s\n", rows[i].name, strings.Join(parts, " | "))
	}
	w("  overhead of every run, 1 host: %s; 4 hosts: %s\n", overheads(results[0]), overheads(results[1]))
	for _, i := range []int{0, 2} {
		w("  SFTP requests of %s: %s\n", rows[i].name, sftpTypes(med[i].counts[0].sftpTypes))
	}

	w("\nCPU time of the median run (2 cores shared by all; the engine's includes whatever else uses it):\n")
	w("  %-31s %10s %10s %10s\n", "", "client", "sshds", "engine")
	for i, row := range rows {
		c := med[i].cpu
		w("  %-31s %10s %10s %10s\n", row.name, ms0(c.client), ms0(c.hosts), ms0(c.engine))
	}
	w("  client: shipctl, or the script with its scp and ssh; sshds: with sftp-server and the script's docker-compose\n")

	overhead1, overhead4 := med[0].overhead(), med[1].overhead()
	fanout := float64(med[1].wall) / float64(med[0].wall)
	fanoutScript := float64(med[5].healthy) / float64(med[4].healthy)
	noop1, noop4 := med[2].wall, med[3].wall
	w("\n%-52s %12s %10s\n", "target", "measured", "")
	w("%-52s %12s %10s\n", "shipctl's own overhead per deploy, 1 host <= 300ms", ms0(overhead1), verdict(overhead1 <= targetOverhead))
	w("%-52s %12s %10s\n", "shipctl's own overhead per deploy, 4 hosts <= 300ms", ms0(overhead4), verdict(overhead4 <= targetOverhead))
	w("%-52s %11.2fx %10s\n", "4 hosts / 1 host, wall time <= 1.3x", fanout, verdict(fanout <= targetFanout))
	// On four machines each engine does one host's work: the 4-host wall time with
	// the engine's time of the 1-host run shows what the fan-out itself costs.
	w("%-52s %11.2fx\n", "  the same, engine time as on 1 host (4 machines)", ratio(med[1].overhead()+med[0].engine, med[0].wall))
	w("%-52s %12s %10s\n", "no-op redeploy, 1 host < 1s", ms0(noop1), verdict(noop1 < targetNoop))
	w("%-52s %12s %10s\n", "no-op redeploy, 4 hosts < 1s", ms0(noop4), verdict(noop4 < targetNoop))
	w("\nshipctl / script (until healthy): 1 host %.2fx, 4 hosts %.2fx; no-op 1 host %.2fx, 4 hosts %.2fx; the script's 4 hosts / 1 host %.2fx\n",
		ratio(med[0].wall, med[4].healthy), ratio(med[1].wall, med[5].healthy),
		ratio(med[2].wall, med[6].healthy), ratio(med[3].wall, med[7].healthy), fanoutScript)
	if d.base != "" {
		w("this tree / base shipctl (%s), wall time: deploy 1 host %.2fx, no-op 1 host %.2fx\n",
			d.base, ratio(med[0].wall, med[8].wall), ratio(med[2].wall, med[9].wall))
	}
	w("  (ratio < 1: shipctl is quicker; shipctl also uploads release.json, locks, checks the registry and the plan, and\n")
	w("   switches current; the script does none of that, and docker-compose v1 is a Python program started twice per host)\n\n")

	return map[string]float64{
		"deploy1_ms":   msf(med[0].wall),
		"deploy4_ms":   msf(med[1].wall),
		"overhead1_ms": msf(overhead1),
		"overhead4_ms": msf(overhead4),
		"noop1_ms":     msf(noop1),
		"noop4_ms":     msf(noop4),
		"script1_ms":   msf(med[4].healthy),
		"script4_ms":   msf(med[5].healthy),
		"fanout":       fanout,
	}
}

// buildBins builds the named packages (name, package, ...) as Makefile's build does.
func buildBins(b *testing.B, pairs ...string) map[string]string {
	b.Helper()
	dir := b.TempDir()
	out := map[string]string{}
	for i := 0; i < len(pairs); i += 2 {
		bin := filepath.Join(dir, pairs[i])
		if err := testenv.Build(bin, pairs[i+1], "-ldflags", "-s -w"); err != nil {
			b.Fatal(err)
		}
		out[pairs[i]] = bin
	}
	return out
}

// setupRepo makes the app's checkout: examples/, published on an ephemeral port (four
// copies share this machine's ports), and a ship.yaml for each row.
func (d *deployBench) setupRepo() {
	b := d.b
	d.repo = project(b, "scratch")
	compose := filepath.Join(d.repo, "docker-compose.yml")
	data, err := os.ReadFile(compose)
	if err != nil {
		b.Fatal(err)
	}
	published := regexp.MustCompile(`"127\.0\.0\.1:\$\{WEB_PORT[^"]*\}:8080"`)
	if !published.Match(data) {
		b.Fatalf("%s: no published port 127.0.0.1:${WEB_PORT...}:8080 to change", compose)
	}
	data = published.ReplaceAll(data, []byte(`"127.0.0.1::8080"`))
	d.write("docker-compose.yml", string(data))

	var known strings.Builder
	var all []string
	for _, h := range d.hosts {
		known.WriteString(h.sshd.KnownHostsLine() + "\n")
		all = append(all, h.dest())
	}
	d.write("known_hosts", known.String())
	env := func(app, name string, hosts []string) string {
		return fmt.Sprintf("app: %s\nregistry: %s\nenvironments:\n  %s:\n    hosts: [%s]\n    path: %s\n    known_hosts: known_hosts\n    docker_socket: %s\n    project: %s\n",
			app, d.reg, name, strings.Join(hosts, ", "), filepath.Join(d.mnt, name), filepath.Join(d.mnt, "docker.sock"), app)
	}
	d.write("ship-one.yaml", env(appOne, "one", all[:1]))
	d.write("ship-four.yaml", env(appFour, "four", all))
	d.git("add", "-A")
	d.git("commit", "-q", "-m", "bench setup")
}

// setupScript writes the plain script, its ssh_config and its working folder.
func (d *deployBench) setupScript(keyFile string) {
	b := d.b
	dir := b.TempDir()
	var cfg strings.Builder
	for _, h := range d.hosts {
		fmt.Fprintf(&cfg, "Host h%d\n  HostName %s\n  Port %d\n  User %s\n  IdentityFile %s\n  IdentitiesOnly yes\n  IdentityAgent none\n"+
			"  UserKnownHostsFile %s\n  GlobalKnownHostsFile /dev/null\n  StrictHostKeyChecking yes\n  BatchMode yes\n",
			h.n, h.sshd.Host, h.sshd.Port, h.sshd.User, keyFile, filepath.Join(d.repo, "known_hosts"))
	}
	d.sshCfg = filepath.Join(dir, "ssh_config")
	remote := filepath.Join(d.mnt, appScript)
	sock := filepath.Join(d.mnt, "docker.sock")
	script := `#!/bin/sh
# deploy.sh SSH_CONFIG HOST...: the plain approach, every host in the background: copy
# the compose file over, then pull its images and start it with docker-compose.
cfg=$1
shift
pids=
for host in "$@"; do
	{
		scp -F "$cfg" -q docker-compose.yml "$host:` + remote + `/docker-compose.yml" &&
			ssh -F "$cfg" "$host" "cd ` + remote + ` && export DOCKER_HOST=unix://` + sock + ` && docker-compose pull -q && docker-compose up -d"
	} &
	pids="$pids $!"
done
status=0
for pid in $pids; do
	wait "$pid" || status=1
done
exit $status
`
	d.script = filepath.Join(dir, "deploy.sh")
	if err := os.WriteFile(d.sshCfg, []byte(cfg.String()), 0o600); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(d.script, []byte(script), 0o755); err != nil {
		b.Fatal(err)
	}
	d.scrDir = filepath.Join(dir, "work")
	if err := os.Mkdir(d.scrDir, 0o755); err != nil {
		b.Fatal(err)
	}
}

func (d *deployBench) write(name, content string) {
	if err := os.WriteFile(filepath.Join(d.repo, name), []byte(content), 0o644); err != nil {
		d.b.Fatal(err)
	}
}

func (d *deployBench) git(args ...string) string {
	cmd := exec.Command("git", args...)
	cmd.Dir = d.repo
	cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=ship", "GIT_AUTHOR_EMAIL=ship@example.com",
		"GIT_COMMITTER_NAME=ship", "GIT_COMMITTER_EMAIL=ship@example.com")
	out, err := cmd.CombinedOutput()
	if err != nil {
		d.b.Fatalf("git %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

// newCommit commits a new VERSION and puts the app's image in the registry as the
// image of that commit, without a copy on the engine: the deploy pulls it. It returns
// the version and the image's reference.
func (d *deployBench) newCommit() (string, string) {
	d.commits++
	version := fmt.Sprintf("bench%d", d.commits)
	compose := filepath.Join(d.repo, "docker-compose.yml")
	data, err := os.ReadFile(compose)
	if err != nil {
		d.b.Fatal(err)
	}
	re := regexp.MustCompile(`VERSION: \$\{VERSION:-[^}]*\}`)
	if !re.Match(data) {
		d.b.Fatalf("%s: no VERSION: ${VERSION:-...} to change", compose)
	}
	d.write("docker-compose.yml", string(re.ReplaceAll(data, []byte("VERSION: ${VERSION:-"+version+"}"))))
	d.git("commit", "-q", "-am", version)
	sha := d.git("rev-parse", "HEAD")
	ref := d.reg + "/example/web:" + sha
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
	return version, ref
}

// benchRow is one row of the table: what it deploys, and how.
type benchRow struct {
	name string
	run  func() deployRun
}

// ship runs shipctl deploy (of a new commit when fresh) and measures it.
func (d *deployBench) ship(cfg, env string, hosts []*benchHost, fresh bool) deployRun {
	return d.shipWith(d.shipctl, cfg, env, hosts, fresh)
}

// shipWith is ship with the shipctl binary bin.
func (d *deployBench) shipWith(bin, cfg, env string, hosts []*benchHost, fresh bool) deployRun {
	b := d.b
	if fresh {
		d.newCommit()
	}
	before := d.snapshot(hosts)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	// --debug: sshx logs when each host's SSH connection is up, the one moment of a
	// host's preflight that no event marks.
	cmd := exec.CommandContext(ctx, bin, "-c", cfg, "--json", "--debug", "deploy", env, "--untested")
	cmd.Dir = d.repo
	cmd.Env = d.env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	end := time.Now()
	if err != nil {
		b.Fatalf("shipctl deploy %s: %v\n%s\n%s", env, err, stdout.String(), stderr.String())
	}
	run := analyze(b, stdout.Bytes(), stderr.Bytes(), start, end, hosts)
	run.counts = d.counts(hosts, before)
	run.cpu.client = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	run.cpu.hosts, run.cpu.engine = d.hostCPU(hosts, before)
	return run
}

// plain runs the script (with a new image tag when fresh) and measures it, and the
// time until every host's container of the new version is healthy.
func (d *deployBench) plain(hosts []*benchHost, fresh bool) deployRun {
	b := d.b
	if fresh {
		version, ref := d.newCommit()
		compose := fmt.Sprintf(`services:
  web:
    image: %s
    environment:
      VERSION: %s
    ports:
      - "127.0.0.1::8080"
    healthcheck:
      test: ["CMD", "/app", "health"]
      interval: 1s
      timeout: 2s
      retries: 3
      start_period: 10s
`, ref, version)
		if err := os.WriteFile(filepath.Join(d.scrDir, "docker-compose.yml"), []byte(compose), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	data, err := os.ReadFile(filepath.Join(d.scrDir, "docker-compose.yml"))
	if err != nil {
		b.Fatal(err)
	}
	version := regexp.MustCompile(`VERSION: (\S+)`).FindStringSubmatch(string(data))[1]

	before := d.snapshot(hosts)
	args := []string{d.script, d.sshCfg}
	for _, h := range hosts {
		args = append(args, fmt.Sprintf("h%d", h.n))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "sh", args...)
	cmd.Dir = d.scrDir
	start := time.Now()
	out, err := cmd.CombinedOutput()
	wall := time.Since(start)
	if err != nil {
		b.Fatalf("the script: %v\n%s", err, out)
	}
	for _, h := range hosts {
		d.waitHealthy(ctx, h.project(appScript), version)
	}
	run := deployRun{wall: wall, healthy: time.Since(start)}
	run.counts = d.counts(hosts, before)
	// The script's children (scp, ssh) are in its own times: it waited for them.
	run.cpu.client = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	run.cpu.hosts, run.cpu.engine = d.hostCPU(hosts, before)
	return run
}

// waitHealthy polls the engine until project's web container runs VERSION=version
// and is healthy.
func (d *deployBench) waitHealthy(ctx context.Context, project, version string) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		cs, err := d.cli.ContainerList(ctx, client.ContainerListOptions{Filters: make(client.Filters).Add("label", "com.docker.compose.project="+project, "com.docker.compose.service=web")})
		if err != nil {
			d.b.Fatalf("%s: %v", project, err)
		}
		if len(cs.Items) == 1 {
			res, err := d.cli.ContainerInspect(ctx, cs.Items[0].ID, client.ContainerInspectOptions{})
			ins := res.Container
			if err == nil && ins.State.Health != nil && ins.State.Health.Status == container.Healthy &&
				slices.Contains(ins.Config.Env, "VERSION="+version) {
				return
			}
		}
		select {
		case <-ctx.Done():
			d.b.Fatalf("%s: not healthy with VERSION=%s after a minute", project, version)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// snapshot is where each host's counters stand.
type snapshot struct {
	log        int // bytes of sshd's log
	sftpLines  int
	api, conns int64
	sshdCPU    time.Duration
	engineCPU  time.Duration
}

func (d *deployBench) snapshot(hosts []*benchHost) []snapshot {
	out := make([]snapshot, len(hosts))
	engineCPU := d.engineCPU()
	for i, h := range hosts {
		out[i] = snapshot{log: len(h.sshd.Log()), sftpLines: len(sftpSessions(d.b, h.sftp)),
			api: h.proxy.requests.Load(), conns: h.proxy.conns.Load(),
			sshdCPU: procTimes(h.sshd.PID(), true), engineCPU: engineCPU}
	}
	return out
}

// hostCPU is the CPU time of the hosts' sshds and of the engine since before.
func (d *deployBench) hostCPU(hosts []*benchHost, before []snapshot) (sshd, engine time.Duration) {
	for i, h := range hosts {
		sshd += procTimes(h.sshd.PID(), true) - before[i].sshdCPU
	}
	return sshd, d.engineCPU() - before[0].engineCPU
}

// engineCPU is the CPU time dockerd and containerd have used.
func (d *deployBench) engineCPU() time.Duration {
	var t time.Duration
	for _, pid := range d.enginePIDs {
		t += procTimes(pid, false)
	}
	return t
}

// procTimes reads a process's user and system time from /proc/<pid>/stat, with
// children the time of the children it has waited for; 0 when it is gone.
func procTimes(pid int, children bool) time.Duration {
	if pid <= 0 {
		return 0
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The fields after the command name, which is in parentheses and may hold spaces.
	fields := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+1:]))
	last := 12
	if children {
		last = 14
	}
	var ticks int64
	for _, f := range fields[11 : last+1] {
		n, _ := strconv.ParseInt(f, 10, 64)
		ticks += n
	}
	return time.Duration(ticks) * time.Second / clockTicks
}

// hasChildren reports whether a process has child processes (an sshd: connections).
func hasChildren(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	return err == nil && len(bytes.TrimSpace(data)) > 0
}

// pidsOf lists the processes whose command name is one of names.
func pidsOf(names ...string) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		comm, err := os.ReadFile(filepath.Join("/proc", e.Name(), "comm"))
		if err == nil && slices.Contains(names, strings.TrimSpace(string(comm))) {
			pids = append(pids, pid)
		}
	}
	return pids
}

var (
	reAccepted   = regexp.MustCompile(`(?m)^Accepted publickey for `)
	reClosed     = regexp.MustCompile(`(?m)^(Disconnected from user|Connection closed by|Connection reset by|Disconnected from)`)
	reAuth       = regexp.MustCompile(`(?m)userauth-request for user `)
	reChannel    = regexp.MustCompile(`(?m)server_input_channel_open: ctype `)
	reChanReq    = regexp.MustCompile(`(?m)server_input_channel_req: channel \d+ request \S+ reply 1`)
	reGlobalReq  = regexp.MustCompile(`(?m)server_input_global_request: rtype \S+ want_reply 1`)
	reSFTPOpened = regexp.MustCompile(`(?m)^Starting session: subsystem 'sftp'`)
)

// counts reads what each host saw since before: once every connection has closed
// and every SFTP session has written its line (sshd and sftpcount log a moment after
// the client is gone).
func (d *deployBench) counts(hosts []*benchHost, before []snapshot) []hostCounts {
	out := make([]hostCounts, len(hosts))
	for i, h := range hosts {
		var log string
		var sessions []sftpSession
		for deadline := time.Now().Add(5 * time.Second); ; {
			log = h.sshd.Log()[before[i].log:]
			sessions = sftpSessions(d.b, h.sftp)[before[i].sftpLines:]
			// sshd's CPU time counts a connection's once sshd has reaped its process.
			done := len(reClosed.FindAllStringIndex(log, -1)) >= len(reAccepted.FindAllStringIndex(log, -1)) &&
				len(sessions) >= len(reSFTPOpened.FindAllStringIndex(log, -1)) && !hasChildren(h.sshd.PID())
			if done || time.Now().After(deadline) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		c := hostCounts{
			conns:        len(reAccepted.FindAllStringIndex(log, -1)),
			auth:         len(reAuth.FindAllStringIndex(log, -1)),
			channels:     len(reChannel.FindAllStringIndex(log, -1)),
			chanReqs:     len(reChanReq.FindAllStringIndex(log, -1)),
			globalReqs:   len(reGlobalReq.FindAllStringIndex(log, -1)),
			sftpSessions: len(sessions),
			api:          int(h.proxy.requests.Load() - before[i].api),
			apiConns:     int(h.proxy.conns.Load() - before[i].conns),
		}
		c.sftpTypes = map[string]int{}
		for _, s := range sessions {
			c.sftp += s.Requests
			for t, n := range s.Types {
				c.sftpTypes[t] += n
			}
		}
		out[i] = c
	}
	return out
}

type sftpSession struct {
	Requests int            `json:"requests"`
	Types    map[string]int `json:"types"`
}

func sftpSessions(b *testing.B, file string) []sftpSession {
	data, err := os.ReadFile(file)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		b.Fatal(err)
	}
	var out []sftpSession
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		var s sftpSession
		if err := json.Unmarshal(sc.Bytes(), &s); err != nil {
			// A line being written: counted next time.
			break
		}
		out = append(out, s)
	}
	return out
}

// event is one line of shipctl --json.
type event struct {
	Time    time.Time `json:"time"`
	Event   string    `json:"event"`
	Host    string    `json:"host"`
	Msg     string    `json:"msg"`
	Service string    `json:"service"`
}

// span is a stretch of time.
type span struct{ from, to time.Time }

// analyze splits a deploy's wall time by its events: the engine's spans (pull, start,
// health wait) and the timeline of the host that finished last.
func analyze(b *testing.B, out, debug []byte, start, end time.Time, hosts []*benchHost) deployRun {
	var events []event
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var e event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			b.Fatalf("shipctl --json: %q: %v", sc.Text(), err)
		}
		events = append(events, e)
	}
	if len(events) == 0 {
		b.Fatalf("shipctl --json wrote no events:\n%s", out)
	}
	if os.Getenv("BENCH_EVENTS") != "" {
		fmt.Fprintf(os.Stderr, "\nshipctl's events (ms since its start):\n")
		for _, e := range events {
			fmt.Fprintf(os.Stderr, "  %6d %-10s %-22s %s %s\n", e.Time.Sub(start).Milliseconds(), e.Event, e.Host, e.Service, e.Msg)
		}
		fmt.Fprintf(os.Stderr, "  %6d exit\n", end.Sub(start).Milliseconds())
	}
	run := deployRun{wall: end.Sub(start)}

	// Milestones of each host, and the engine's spans.
	type host struct {
		ready, locked, uploaded, applying, started, waiting, healthy, done time.Time
		pulling                                                            time.Time
	}
	byHost := map[string]*host{}
	for _, h := range hosts {
		byHost[h.dest()] = &host{}
	}
	var pulls, starts, healths []span
	var connecting time.Time
	for _, e := range events {
		if e.Host == "" {
			if e.Event == "preflight" && strings.HasPrefix(e.Msg, "connecting to") {
				connecting = e.Time
			}
			continue
		}
		h := byHost[e.Host]
		if h == nil {
			b.Fatalf("an event of an unknown host %q", e.Host)
		}
		switch {
		case e.Event == "preflight" && strings.HasPrefix(e.Msg, "ready:"):
			h.ready = e.Time
		case e.Event == "lock" && strings.HasPrefix(e.Msg, "locked"):
			h.locked = e.Time
		case e.Event == "upload" && strings.HasPrefix(e.Msg, "uploaded"):
			h.uploaded = e.Time
		case e.Event == "pull" && strings.HasPrefix(e.Msg, "pulling "):
			h.pulling = e.Time
		case e.Event == "pull" && strings.HasPrefix(e.Msg, "pulled "):
			pulls = append(pulls, span{h.pulling, e.Time})
		case e.Event == "apply" && strings.HasPrefix(e.Msg, "applying "):
			h.applying = e.Time
		case e.Event == "apply" && (e.Msg == "started" || strings.HasPrefix(e.Msg, "unchanged")):
			h.started = e.Time
		case e.Event == "apply" && e.Msg == "waiting until healthy":
			h.waiting = e.Time
		case e.Event == "apply" && (e.Msg == "healthy" || strings.HasPrefix(e.Msg, "running (no health")):
			h.healthy = latest(h.healthy, e.Time)
		case e.Event == "apply" && strings.HasPrefix(e.Msg, "GET ") && strings.Contains(e.Msg, " answered "):
			// x-ship.health's answer, after the engine's health: health ends there.
			h.healthy = latest(h.healthy, e.Time)
		case e.Event == "done":
			h.done = e.Time
		}
	}
	var last *host
	var allReady, allLocked time.Time
	for name, h := range byHost {
		for what, t := range map[string]time.Time{"ready": h.ready, "applying": h.applying, "started": h.started,
			"waiting": h.waiting, "healthy": h.healthy, "done": h.done} {
			if t.IsZero() {
				b.Fatalf("no %q event for %s in:\n%s", what, name, out)
			}
		}
		allReady, allLocked = latest(allReady, h.ready), latest(allLocked, h.locked)
		starts = append(starts, span{h.applying, h.started})
		healths = append(healths, span{h.waiting, h.healthy})
		if last == nil || h.done.After(last.done) {
			last = h
		}
	}
	run.pull, run.start, run.health = union(pulls), union(starts), union(healths)
	run.engine = union(slices.Concat(pulls, starts, healths))

	// The last SSH connection up, from shipctl --debug's log.
	var connected time.Time
	for _, m := range reConnected.FindAllSubmatch(debug, -1) {
		t, err := time.Parse(time.RFC3339Nano, string(m[1]))
		if err != nil {
			b.Fatalf("shipctl --debug: time %q: %v", m[1], err)
		}
		connected = latest(connected, t)
	}
	if connected.IsZero() {
		b.Fatalf(`shipctl --debug logged no "ssh: connected":\n%s`, debug)
	}

	// Every host is ready and locked before the first upload (the first host's lock is
	// taken with its checks, so "locked" may come before "ready").
	first := events[0].Time
	checked := latest(allReady, allLocked)
	run.phases = []phase{
		{"start-up", first.Sub(start)},
		{"registry", connecting.Sub(first)},
		{"ssh", connected.Sub(connecting)},
		{"preflight+lock", checked.Sub(connected)},
		{"upload", last.uploaded.Sub(checked)},
		{"pull", last.applying.Sub(last.uploaded)},
		{"start", last.waiting.Sub(last.applying)},
		{"health", last.healthy.Sub(last.waiting)},
		{"switch+audit+unlock+prune", last.done.Sub(last.healthy)},
		{"exit", end.Sub(last.done)},
	}
	return run
}

func latest(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// reConnected finds the time of sshx's "ssh: connected" in shipctl --debug's log
// (log/slog's text format, milliseconds).
var reConnected = regexp.MustCompile(`(?m)^time=(\S+) level=DEBUG msg="ssh: connected"`)

// union is the total time covered by spans, overlaps counted once.
func union(spans []span) time.Duration {
	sort.Slice(spans, func(i, j int) bool { return spans[i].from.Before(spans[j].from) })
	var total time.Duration
	var cur span
	for _, s := range spans {
		if s.to.Before(s.from) {
			continue
		}
		switch {
		case cur.to.IsZero():
			cur = s
		case s.from.After(cur.to):
			total += cur.to.Sub(cur.from)
			cur = s
		case s.to.After(cur.to):
			cur.to = s.to
		}
	}
	if !cur.to.IsZero() {
		total += cur.to.Sub(cur.from)
	}
	return total
}

// down removes the projects of every host: at the end, and at the start too, for what
// a run stopped with Ctrl-C (which runs no cleanup) left.
func (d *deployBench) down(ctx context.Context) {
	eng := engine.New(d.cli)
	for _, h := range d.hosts {
		for _, app := range []string{appOne, appFour, appScript} {
			if err := eng.Down(ctx, h.project(app), engine.DownOptions{Volumes: true}); err != nil {
				d.b.Logf("clean up %s: %v", h.project(app), err)
			}
		}
	}
}

// cleanup removes the projects of every host and the registry's images.
func (d *deployBench) cleanup() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	d.down(ctx)
	if d.reg == "" {
		return
	}
	imgs, err := d.cli.ImageList(ctx, client.ImageListOptions{})
	if err != nil {
		return
	}
	for _, img := range imgs.Items {
		for _, tag := range img.RepoTags {
			if strings.HasPrefix(tag, d.reg+"/") {
				_, _ = d.cli.ImageRemove(ctx, tag, client.ImageRemoveOptions{Force: true})
			}
		}
	}
}

func median(runs []deployRun) deployRun {
	s := slices.Clone(runs)
	sort.Slice(s, func(i, j int) bool { return key(s[i]) < key(s[j]) })
	return s[len(s)/2]
}

// key orders runs: the script's by the time until healthy, shipctl's by wall time.
func key(r deployRun) time.Duration {
	if r.healthy > 0 {
		return r.healthy
	}
	return r.wall
}

func minWall(runs []deployRun) time.Duration {
	return slices.MinFunc(runs, func(a, b deployRun) int { return int(a.wall - b.wall) }).wall
}

func maxWall(runs []deployRun) time.Duration {
	return slices.MaxFunc(runs, func(a, b deployRun) int { return int(a.wall - b.wall) }).wall
}

// meanCounts is the mean over hosts of conns, channels, sftp, api and round trips.
func meanCounts(cs []hostCounts) [5]string {
	var sum [5]float64
	for _, c := range cs {
		for i, v := range []int{c.conns, c.channels, c.sftp, c.api, c.roundTrips()} {
			sum[i] += float64(v)
		}
	}
	var out [5]string
	for i, v := range sum {
		out[i] = fmt.Sprintf("%.4g", v/float64(max(1, len(cs))))
	}
	return out
}

// sftpTypes lists SFTP request types, the most frequent first.
func sftpTypes(types map[string]int) string {
	names := make([]string, 0, len(types))
	for t := range types {
		names = append(names, t)
	}
	sort.Slice(names, func(i, j int) bool {
		if types[names[i]] != types[names[j]] {
			return types[names[i]] > types[names[j]]
		}
		return names[i] < names[j]
	})
	var s []string
	for _, t := range names {
		s = append(s, fmt.Sprintf("%s %d", strings.TrimSuffix(t, "@openssh.com"), types[t]))
	}
	return strings.Join(s, ", ")
}

func overheads(runs []deployRun) string {
	var s []string
	for _, r := range runs {
		s = append(s, ms0(r.overhead()))
	}
	return strings.Join(s, " ")
}

func engineVersion(cli *client.Client) string {
	v, err := cli.ServerVersion(context.Background(), client.ServerVersionOptions{})
	if err != nil {
		return "?"
	}
	return "Docker " + v.Version
}

func loadavg(data []byte) string {
	f := strings.Fields(string(data))
	return strings.Join(f[:min(3, len(f))], " ")
}

func ratio(a, b time.Duration) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

func sec(d time.Duration) string { return fmt.Sprintf("%.3fs", d.Seconds()) }
func ms0(d time.Duration) string { return fmt.Sprintf("%dms", d.Milliseconds()) }
func msf(d time.Duration) float64 {
	return float64(d.Microseconds()) / 1000
}
