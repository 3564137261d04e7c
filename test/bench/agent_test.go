package bench

// BenchmarkZeroDowntime finds the highest fixed request rate at which a series of
// deploys keeps every request answered 2xx on this machine: through shipd (blue-green:
// the new container beside the old, health-checked, the route switched, the old one
// drained), and the agentless way (the engine recreates the container behind its
// published port, as `shipctl deploy` without an agent does). The load generator
// (test/loadgen) sends at a fixed rate, 30% of the requests on a fresh connection each
// and the rest over keep-alive connections (one per 100 requests a second, at least 4);
// the rate steps up, 100, 200, 400, ... requests a second, a few deploys per step, and
// each path stops at its first step with a failed request or a rate it cannot hold
// (less than 95% of it answered, or a p99 of a second or more). It prints a table, and shipd's idle RSS against the
// 25 MB target. Between the last rate that passed and the first that did not, two more
// rates are tried, halving the interval.
//
//	go test -run '^$' -bench '^BenchmarkZeroDowntime$' -benchtime 1x -timeout 20m ./test/bench
//
// The deploys are made the way shipctl's end of them does, without SSH: through shipd's
// API on its unix socket (agentapi), and through pkg/engine's Up of the release read
// back as the agentless deploy reads it. SSH carries no request of the load, only the
// deploy's own traffic. Knobs: BENCH_DEPLOYS (deploys per step, default 5),
// BENCH_MAX_RATE (the last doubling step, default 25600), BENCH_REFINE (rates tried
// between the last that passed and the first that did not, default 2).

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/shipdeploy/ship/pkg/agentapi"
	"github.com/shipdeploy/ship/pkg/compose"
	"github.com/shipdeploy/ship/pkg/engine"
	"github.com/shipdeploy/ship/test/loadgen"
	"github.com/shipdeploy/ship/test/testenv"
)

// A step holds its rate when zdHeld of it is answered and the slowest 1% of the answers
// take less than zdHeldP99: beyond that the requests queue.
const (
	zdHeld    = 0.95
	zdHeldP99 = time.Second
)

var zdMetrics struct {
	once sync.Once
	m    map[string]float64
}

func BenchmarkZeroDowntime(b *testing.B) {
	zdMetrics.once.Do(func() { zdMetrics.m = measureZeroDowntime(b) })
	if zdMetrics.m == nil {
		b.Fatal("the zero-downtime measurement failed in an earlier call")
	}
	for unit, v := range zdMetrics.m {
		b.ReportMetric(v, unit)
	}
}

// zdStep is one rate's load and what it saw.
type zdStep struct {
	rate    float64
	deploys int
	rep     *loadgen.Report
	took    time.Duration // the deploys
	err     error         // a deploy that failed
}

func (s zdStep) failed() int { return s.rep.Non2xx + s.rep.ConnErrors }
func (s zdStep) held() bool  { return s.rep.Rate >= zdHeld*s.rate && s.rep.P99 < zdHeldP99 }
func (s zdStep) ok() bool    { return s.err == nil && s.failed() == 0 && s.held() }

func measureZeroDowntime(b *testing.B) map[string]float64 {
	deploys := envInt(b, "BENCH_DEPLOYS", 5)
	maxRate := envInt(b, "BENCH_MAX_RATE", 25600)
	refine := envInt(b, "BENCH_REFINE", 2)
	cli := testenv.Docker(b)
	testenv.AppImage(b, cli)
	loadavg, _ := os.ReadFile("/proc/loadavg")

	sd := zdStartShipd(b)
	app := zdApp(b, cli, "zdshipd")
	n := 0
	deploy := func() error {
		n++
		sha := fmt.Sprintf("r%d", n)
		app.write(sha, fmt.Sprintf("    x-ship: {port: 8080, listen: %q, health: /up, drain: 2s}\n", app.listen))
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		_, err := sd.client.Deploy(ctx, agentapi.DeployRequest{App: app.name, Path: app.path, SHA: sha, Origin: agentapi.Origin{Who: "bench"}}, nil)
		return err
	}
	if err := deploy(); err != nil {
		b.Fatalf("first deploy through shipd: %v\n%s", err, sd.log())
	}
	time.Sleep(settle)
	idleRSS := rss(b, sd.cmd.Process.Pid)

	agentless := zdApp(b, cli, "zdplain")
	m := 0
	up := func() error {
		m++
		sha := fmt.Sprintf("a%d", m)
		app := agentless
		app.write(sha, fmt.Sprintf("    ports: [%q]\n", app.listen+":8080"))
		p, err := app.project(sha)
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		return app.eng.Up(ctx, p.Project, engine.UpOptions{Wait: true, WaitTimeout: time.Minute, RemoveOrphans: true})
	}
	if err := up(); err != nil {
		b.Fatalf("first agentless deploy: %v", err)
	}

	b.ResetTimer()
	shipd := zdSteps(b, app.listen, deploys, maxRate, refine, deploy)
	plain := zdSteps(b, agentless.listen, deploys, maxRate, refine, up)
	b.StopTimer()

	out := os.Stdout
	fmt.Fprintf(out, "\nzero downtime: %d deploys per step under a fixed request rate (30%% of the requests on fresh connections); %d CPUs, load %s\n",
		deploys, runtime.NumCPU(), strings.Join(strings.Fields(string(loadavg))[:3], " "))
	fmt.Fprintf(out, "  %-8s | %-52s | %s\n", "", "through shipd (blue-green)", "agentless (recreate behind the published port)")
	head := fmt.Sprintf("%8s %7s %9s %9s %7s", "requests", "failed", "p50", "p99", "rate")
	fmt.Fprintf(out, "  %-8s | %-52s | %s\n", "rate/s", head+"  held", head+"  held")
	// One row per rate either side tried, in order.
	var rates []float64
	for _, s := range append(append([]zdStep(nil), shipd...), plain...) {
		if !slices.Contains(rates, s.rate) {
			rates = append(rates, s.rate)
		}
	}
	slices.Sort(rates)
	for _, rate := range rates {
		cols := [2]string{}
		for j, steps := range [][]zdStep{shipd, plain} {
			for _, s := range steps {
				if s.rate == rate {
					cols[j] = fmt.Sprintf("%8d %7d %9s %9s %7.0f  %s", s.rep.Requests, s.failed(), ms(s.rep.P50), ms(s.rep.P99), s.rep.Rate, zdVerdict(s))
				}
			}
		}
		fmt.Fprintf(out, "  %-8.0f | %-52s | %s\n", rate, cols[0], cols[1])
	}
	for _, side := range []struct {
		name  string
		steps []zdStep
	}{{"through shipd", shipd}, {"agentless", plain}} {
		fmt.Fprintf(out, "  %s: %s\n", side.name, zdSummary(side.steps))
	}
	fmt.Fprintf(out, "  shipd's idle RSS with one route: %s (target %s): %s\n", mb(idleRSS), mb(targetRSS), verdict(idleRSS <= targetRSS))

	return map[string]float64{
		"shipd-max-rps":     zdBest(shipd),
		"agentless-max-rps": zdBest(plain),
		"shipd-idle-MB":     float64(idleRSS) / (1 << 20),
	}
}

// zdSteps steps the rate up, from 100 requests a second and doubling, deploying a few
// times at each rate, until a step fails or maxRate is done; then it tries refine rates
// between the last step that passed (or none) and the first that did not, halving the
// interval each time (not below 10 requests a second).
func zdSteps(b *testing.B, listen string, deploys, maxRate, refine int, deploy func() error) []zdStep {
	var steps []zdStep
	step := func(rate float64) zdStep {
		s := zdStep{rate: rate, deploys: deploys}
		stop := zdLoad(b, listen, rate)
		start := time.Now()
		for range deploys {
			if err := deploy(); err != nil {
				s.err = err
				break
			}
		}
		s.took = time.Since(start)
		s.rep = stop()
		steps = append(steps, s)
		return s
	}
	lo, hi := 0.0, 0.0
	for rate := 100.0; rate <= float64(maxRate); rate *= 2 {
		if !step(rate).ok() {
			hi = rate
			break
		}
		lo = rate
	}
	for range refine {
		mid := (lo + hi) / 2
		if hi == 0 || mid < 10 || hi-lo < 20 {
			break
		}
		if step(mid).ok() {
			lo = mid
		} else {
			hi = mid
		}
	}
	return steps
}

// zdLoad sends requests at rate until stop: one keep-alive connection per 100
// requests a second (at least 4), 30% of the requests on fresh connections. Requests
// still running at stop are cut, and not counted as failed.
func zdLoad(b *testing.B, listen string, rate float64) (stop func() *loadgen.Report) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan *loadgen.Report, 1)
	go func() {
		rep, err := loadgen.Run(ctx, loadgen.Config{
			URL: "http://" + listen + "/version", Rate: rate, Duration: 5 * time.Minute,
			Conns: max(4, int(rate/100)), Fresh: 0.3, Timeout: 5 * time.Second, MaxInFlight: 4000,
		})
		if err != nil {
			b.Error(err)
		}
		done <- rep
	}()
	time.Sleep(500 * time.Millisecond)
	return func() *loadgen.Report {
		time.Sleep(500 * time.Millisecond)
		cancel()
		rep := <-done
		if rep == nil {
			b.FailNow()
		}
		return rep
	}
}

func zdVerdict(s zdStep) string {
	switch {
	case s.err != nil:
		return "deploy failed: " + s.err.Error()
	case s.failed() > 0:
		var kinds []string
		for k, v := range s.rep.Errors {
			if k != "cut at stop" {
				kinds = append(kinds, fmt.Sprintf("%s %d", k, v))
			}
		}
		if s.rep.Non2xx > 0 {
			kinds = append(kinds, fmt.Sprintf("non-2xx %d", s.rep.Non2xx))
		}
		return "FAILED (" + strings.Join(kinds, ", ") + ")"
	case !s.held():
		return "not held"
	}
	return "ok"
}

// zdBest is the highest rate of the steps with no failed request (0: none).
func zdBest(steps []zdStep) float64 {
	best := 0.0
	for _, s := range steps {
		if s.ok() {
			best = max(best, s.rate)
		}
	}
	return best
}

func zdSummary(steps []zdStep) string {
	best := zdBest(steps)
	msg := fmt.Sprintf("highest rate with zero failed requests %.0f/s", best)
	if best == 0 {
		msg = "no rate without failed requests"
	}
	// The lowest rate that did not pass, if any.
	var bad *zdStep
	for i := range steps {
		if !steps[i].ok() && (bad == nil || steps[i].rate < bad.rate) {
			bad = &steps[i]
		}
	}
	if bad == nil {
		return msg + " (the highest rate tried)"
	}
	return msg + fmt.Sprintf("; at %.0f/s: %d of %d requests failed, %s", bad.rate, bad.failed(), bad.rep.Requests, zdVerdict(*bad))
}

// zdShipd is shipd run as a process of its own.
type zdShipd struct {
	cmd    *exec.Cmd
	client *agentapi.Client
	logs   string
}

func (s *zdShipd) log() string {
	data, _ := os.ReadFile(s.logs)
	return string(data)
}

func zdStartShipd(b *testing.B) *zdShipd {
	b.Helper()
	bin := filepath.Join(b.TempDir(), "shipd")
	if err := testenv.Build(bin, "./cmd/shipd"); err != nil {
		b.Fatal(err)
	}
	// A short folder: a unix socket's path is limited to about 100 bytes.
	dir, err := os.MkdirTemp("", "zd-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "shipd.sock")
	cfg := filepath.Join(dir, "shipd.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf("socket: %s\nstate: %s\nhealth: {interval: 200ms, timeout: 2s, deadline: 20s}\nshutdown_timeout: 10s\n", sock, filepath.Join(dir, "state.json"))), 0o644)
	s := &zdShipd{logs: filepath.Join(dir, "shipd.log"), client: agentapi.NewClient(agentapi.UnixDialer(sock))}
	logf, err := os.Create(s.logs)
	if err != nil {
		b.Fatal(err)
	}
	defer logf.Close()
	s.cmd = exec.Command(bin, "run", "--config", cfg)
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	if err := s.cmd.Start(); err != nil {
		b.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = s.cmd.Wait(); close(exited) }()
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
		if time.Now().After(deadline) {
			b.Fatalf("shipd does not answer: %v\n%s", err, s.log())
		}
	}
}

// zdRelease is an app's folder and its releases.
type zdRelease struct {
	name, path, listen string
	eng                *engine.Engine
}

func zdApp(b *testing.B, cli *client.Client, prefix string) *zdRelease {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	listen := ln.Addr().String()
	ln.Close()
	a := &zdRelease{name: fmt.Sprintf("%s%d", prefix, time.Now().UnixNano()%1_000_000), path: b.TempDir(), listen: listen, eng: engine.New(cli)}
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_ = a.eng.Down(ctx, a.name, engine.DownOptions{Volumes: true})
	})
	return a
}

// write makes releases/<sha>/docker-compose.yml: the example app's image, VERSION sha
// (so each release replaces the container), and extra for the web service.
func (a *zdRelease) write(sha, extra string) {
	yaml := fmt.Sprintf(`services:
  web:
    image: %s
    pull_policy: never
    environment:
      VERSION: %s
    stop_grace_period: 2s
    healthcheck: {test: ["CMD", "/app", "health"], interval: 200ms, timeout: 2s, retries: 10}
%s`, testenv.AppImageRef, sha, extra)
	dir := filepath.Join(a.path, "releases", sha)
	os.MkdirAll(dir, 0o755)
	os.WriteFile(filepath.Join(dir, "docker-compose.yml"), []byte(yaml), 0o600)
}

// project reads a release back as the agentless deploy does.
func (a *zdRelease) project(sha string) (*compose.Project, error) {
	file := filepath.Join(a.path, "releases", sha, "docker-compose.yml")
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	return compose.LoadResolved(context.Background(), a.name, filepath.Dir(file), file, data)
}
