package bench

// BenchmarkAgentlessGap measures what a user of an agentless host sees during a
// deploy: the longest time without a 2xx answer while the engine replaces the
// container behind its published port (issue 13, item 4). A load of fixed rate
// (BENCH_GAP_RATE a second, default 200; 30% of the requests on fresh connections,
// the rest over keep-alive ones) runs through each of BENCH_DEPLOYS deploys (default
// 5), one load per deploy; it prints each deploy's longest gap and time, their
// median and maximum. The deploys are pkg/engine's Up of the release read back, as
// in BenchmarkZeroDowntime's agentless side.
//
// Each deploy's gap is split with timestamps: the engine's events (kill, die, start),
// the stop and start requests as the engine's client made them, and a prober's
// answers (a fresh connection every 5ms). Before each deploy, a fresh container's boot
// is measured twice, with nothing old: with requests all along (as the load sends
// them) and with the first request once the start has answered. On Docker 20.10 the
// published port takes connections before the container's network is up; the host's
// ARP request for the container's address then goes unanswered, and every request
// waits for its next one, a second later: that second, not the app, is most of the
// gap. It comes of the container being the only one on its network: the bridge loses
// its last port at the stop, and the host's entry for the address with it (the new
// container gets the same address). With another container running on the network
// the gap measured about 0.4s, the stop and the start.
//
//	go test -run '^$' -bench '^BenchmarkAgentlessGap$' -benchtime 1x -timeout 20m ./test/bench

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/shipdeploy/ship/pkg/agentapi"
	"github.com/shipdeploy/ship/pkg/engine"
	"github.com/shipdeploy/ship/test/testenv"
)

func BenchmarkAgentlessGap(b *testing.B) {
	deploys := envInt(b, "BENCH_DEPLOYS", 5)
	rate := envInt(b, "BENCH_GAP_RATE", 200)
	cli := testenv.Docker(b)
	testenv.AppImage(b, cli)

	app := zdApp(b, cli, "zdgap")
	spans := &spanClient{Client: cli}
	app.eng = engine.New(spans)
	n := 0
	up := func() error {
		n++
		sha := fmt.Sprintf("g%d", n)
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
	var gaps, took, boots, quiets []time.Duration
	var lines []string
	for i := range deploys {
		boot, quiet := gapBoot(b, cli, false), gapBoot(b, cli, true)
		boots, quiets = append(boots, boot), append(quiets, quiet)
		loadavg, _ := os.ReadFile("/proc/loadavg")
		spans.reset()
		evs := gapEvents(cli, app.name)
		probe, _ := gapProbe(app.listen)
		stop := zdLoad(b, app.listen, float64(rate))
		start := time.Now()
		err := up()
		d := time.Since(start)
		// Up can return (the container healthy from within) before the published port
		// answers; the load's requests held until then are let complete.
		gapAnswered(app.listen)
		rep := stop()
		answers, at := probe(), evs()
		if err != nil {
			b.Fatalf("deploy %d: %v", i+1, err)
		}
		gaps, took = append(gaps, rep.LongestGap), append(took, d)
		lines = append(lines, fmt.Sprintf("  deploy %d: longest gap without a 2xx %s; deploy %s; %d requests, %d failed %v (%d cut at the end); load %s\n    %s\n    a fresh container's boot just before (start asked to first answer): %s with requests all along, %s with the first once the start answered",
			i+1, ms0(rep.LongestGap), ms0(d), rep.Requests, rep.Failed(), rep.Errors, rep.Cut, strings.Join(strings.Fields(string(loadavg))[:3], " "),
			gapSplit(answers, at, spans.times()), ms0(boot), ms0(quiet)))
	}
	b.StopTimer()

	fmt.Printf("\nagentless gap: %d deploys at %d requests a second (30%% on fresh connections)\n", deploys, rate)
	for _, l := range lines {
		fmt.Println(l)
	}
	med := func(ds []time.Duration) time.Duration {
		s := slices.Clone(ds)
		slices.Sort(s)
		return s[len(s)/2]
	}
	fmt.Printf("  longest gap: median %s, max %s; a fresh container's boot: median %s with requests all along, %s without (target: under 1s plus the app's boot)\n",
		ms0(med(gaps)), ms0(slices.Max(gaps)), ms0(med(boots)), ms0(med(quiets)))
	b.ReportMetric(float64(slices.Max(gaps).Milliseconds()), "max-gap-ms")
	b.ReportMetric(float64(med(gaps).Milliseconds()), "median-gap-ms")
	b.ReportMetric(float64(med(boots).Milliseconds()), "median-boot-ms")
	b.ReportMetric(float64(med(quiets).Milliseconds()), "median-quiet-boot-ms")
	b.ReportMetric(float64(med(took).Milliseconds()), "median-deploy-ms")
}

// BenchmarkShipdDeployTime is the wall time of deploys through shipd as its client
// sees it (request to result), for a routed service replaced blue-green with a drain
// of 2s (issue 13, item 5): BENCH_DEPLOYS deploys (default 5), their median and max.
//
//	go test -run '^$' -bench '^BenchmarkShipdDeployTime$' -benchtime 1x -timeout 20m ./test/bench
func BenchmarkShipdDeployTime(b *testing.B) {
	deploys := envInt(b, "BENCH_DEPLOYS", 5)
	cli := testenv.Docker(b)
	testenv.AppImage(b, cli)
	sd := zdStartShipd(b)
	app := zdApp(b, cli, "zdtime")
	n := 0
	var tail time.Duration // from the route's switch to the result
	deploy := func() (time.Duration, error) {
		n++
		sha := fmt.Sprintf("t%d", n)
		app.write(sha, fmt.Sprintf("    x-ship: {port: 8080, listen: %q, health: /up, drain: 2s}\n", app.listen))
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		start := time.Now()
		var switched time.Time
		_, err := sd.client.Deploy(ctx, agentapi.DeployRequest{App: app.name, Path: app.path, SHA: sha, Origin: agentapi.Origin{Who: "bench"}}, func(e agentapi.Event) {
			if e.Step == agentapi.StepSwitch && strings.Contains(e.Msg, "now routes to") {
				switched = time.Now()
			}
		})
		if !switched.IsZero() {
			tail = time.Since(switched)
		}
		return time.Since(start), err
	}
	if _, err := deploy(); err != nil {
		b.Fatalf("first deploy through shipd: %v\n%s", err, sd.log())
	}
	b.ResetTimer()
	var took, tails []time.Duration
	// One container left: the replaced one is gone (not timed), as between two
	// deploys of a real app.
	settled := func() {
		for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			res, err := cli.ContainerList(context.Background(), client.ContainerListOptions{All: true,
				Filters: make(client.Filters).Add("label", "com.docker.compose.project="+app.name)})
			if err == nil && len(res.Items) == 1 {
				return
			}
		}
		b.Fatal("the replaced container is still there after a minute")
	}
	for i := range deploys {
		settled()
		loadavg, _ := os.ReadFile("/proc/loadavg")
		d, err := deploy()
		if err != nil {
			b.Fatalf("deploy %d: %v\n%s", i+1, err, sd.log())
		}
		took, tails = append(took, d), append(tails, tail)
		fmt.Printf("  shipd deploy %d: %s (switch to result %s); load %s\n", i+1, ms(d), ms(tail), strings.Join(strings.Fields(string(loadavg))[:3], " "))
	}
	b.StopTimer()
	s := slices.Clone(took)
	slices.Sort(s)
	t := slices.Clone(tails)
	slices.Sort(t)
	fmt.Printf("shipd deploy wall time: median %s, max %s; from the switch to the result: median %s (%d deploys, drain 2s)\n", ms(s[len(s)/2]), ms(s[len(s)-1]), ms(t[len(t)/2]), deploys)
	b.ReportMetric(float64(s[len(s)/2].Milliseconds()), "median-deploy-ms")
}

// spanClient is the engine's client with the times the replace's requests were asked
// and answered, as the engine's caller sees them: where the gap is ship's.
type spanClient struct {
	*client.Client
	mu sync.Mutex
	at map[string]time.Time
}

// mark records now under key; first keeps an earlier time.
func (c *spanClient) mark(key string, first bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.at[key]; ok && first {
		return
	}
	if c.at == nil {
		c.at = map[string]time.Time{}
	}
	c.at[key] = time.Now()
}

func (c *spanClient) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.at = nil
}

func (c *spanClient) times() map[string]time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.at)
}

func (c *spanClient) ContainerStop(ctx context.Context, id string, o client.ContainerStopOptions) (client.ContainerStopResult, error) {
	c.mark("stop asked", true)
	defer c.mark("stop answered", false)
	return c.Client.ContainerStop(ctx, id, o)
}

func (c *spanClient) ContainerStart(ctx context.Context, id string, o client.ContainerStartOptions) (client.ContainerStartResult, error) {
	c.mark("start asked", true)
	defer c.mark("start answered", false)
	return c.Client.ContainerStart(ctx, id, o)
}

func (c *spanClient) ContainerWait(ctx context.Context, id string, o client.ContainerWaitOptions) client.ContainerWaitResult {
	r := c.Client.ContainerWait(ctx, id, o)
	res := make(chan container.WaitResponse, 1)
	go func() {
		if w, ok := <-r.Result; ok {
			c.mark("wait answered", true)
			res <- w
		}
	}()
	return client.ContainerWaitResult{Result: res, Error: r.Error}
}

// gapEvents records, until the function it returns is called, the first time the
// engine reports each action (kill, die, stop, start, ...) on the project's containers.
func gapEvents(cli *client.Client, project string) func() map[string]time.Time {
	ctx, cancel := context.WithCancel(context.Background())
	ev := cli.Events(ctx, client.EventsListOptions{Filters: make(client.Filters).Add("type", "container").Add("label", "com.docker.compose.project="+project)})
	at := map[string]time.Time{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case m := <-ev.Messages:
				a := string(m.Action)
				if _, ok := at[a]; !ok {
					at[a] = time.Unix(0, m.TimeNano)
				}
			case <-ev.Err:
				return
			}
		}
	}()
	return func() map[string]time.Time {
		time.Sleep(100 * time.Millisecond) // the last events on their way
		cancel()
		<-done
		return at
	}
}

// gapProbe GETs /version on a fresh connection every 5ms until the function it returns
// is called, which returns the times of the 2xx answers; answered is closed at the
// first.
func gapProbe(listen string) (stop func() []time.Time, answered <-chan struct{}) {
	ctx, cancel := context.WithCancel(context.Background())
	hc := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	var oks []time.Time
	done, first := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for t := time.NewTicker(5 * time.Millisecond); ctx.Err() == nil; <-t.C {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+listen+"/version", nil)
			if resp, err := hc.Do(req); err == nil {
				resp.Body.Close()
				if resp.StatusCode/100 == 2 {
					if oks = append(oks, time.Now()); len(oks) == 1 {
						close(first)
					}
				}
			}
		}
	}()
	return func() []time.Time {
		cancel()
		<-done
		return oks
	}, first
}

// gapAnswered waits, up to a minute, until GET /version on listen answers 2xx on a
// fresh connection.
func gapAnswered(listen string) {
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if resp, err := hc.Get("http://" + listen + "/version"); err == nil {
			resp.Body.Close()
			if resp.StatusCode/100 == 2 {
				return
			}
		}
	}
}

// gapSplit says where the probe's longest time without an answer went: the old app's
// exit (kill to die), the engine's stop after it, ship's turn to the start, the
// engine's start and the new app's boot (the start event to the first answer).
func gapSplit(oks []time.Time, ev, spans map[string]time.Time) string {
	var last, first time.Time
	for i := 1; i < len(oks); i++ {
		if oks[i].Sub(oks[i-1]) > first.Sub(last) {
			last, first = oks[i-1], oks[i]
		}
	}
	d := func(from, to time.Time) string {
		if from.IsZero() || to.IsZero() {
			return "?"
		}
		return ms0(to.Sub(from))
	}
	turn := spans["stop answered"]
	if w := spans["wait answered"]; !w.IsZero() && (turn.IsZero() || w.Before(turn)) {
		turn = w
	}
	return fmt.Sprintf("probe's gap %s = last answer to kill %s + kill to die (the old app exits) %s + die to stop/wait answered %s + to start asked %s + to start event %s + to first answer %s (start answered %s after the event)",
		d(last, first), d(last, ev["kill"]), d(ev["kill"], ev["die"]), d(ev["die"], turn), d(turn, spans["start asked"]),
		d(spans["start asked"], ev["start"]), d(ev["start"], first), d(ev["start"], spans["start answered"]))
}

// gapBoot is a fresh container's boot with nothing old: from its start asked to the
// first answer on its published port (a project of its own, removed after). With
// quiet, the first request goes once the start has answered; else requests go all
// along, as a load's would (those that reach the published port while the engine
// still sets up the container's network wait for the host's next ARP probe, a
// second later).
func gapBoot(b *testing.B, cli *client.Client, quiet bool) time.Duration {
	a := zdApp(b, cli, "zdboot")
	own := &spanClient{Client: cli}
	a.eng = engine.New(own)
	a.write("b1", fmt.Sprintf("    ports: [%q]\n", a.listen+":8080"))
	p, err := a.project("b1")
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var probe func() []time.Time
	var answered <-chan struct{}
	if !quiet {
		probe, answered = gapProbe(a.listen)
	}
	if err := a.eng.Up(ctx, p.Project, engine.UpOptions{}); err != nil {
		b.Fatalf("boot: %v", err)
	}
	if quiet {
		probe, answered = gapProbe(a.listen)
	}
	select {
	case <-answered:
	case <-ctx.Done():
	}
	oks := probe()
	if err := a.eng.Down(ctx, a.name, engine.DownOptions{Volumes: true}); err != nil {
		b.Fatalf("boot's down: %v", err)
	}
	if len(oks) == 0 {
		b.Fatal("boot: no answer in 2 minutes")
	}
	return oks[0].Sub(own.times()["start asked"])
}
