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
//	go test -run '^$' -bench '^BenchmarkAgentlessGap$' -benchtime 1x -timeout 20m ./test/bench

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

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
	n := 0
	var swap time.Duration // from the old container's stop to the new one's start, as the engine reports them
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
		var stopping time.Time
		return app.eng.Up(ctx, p.Project, engine.UpOptions{Wait: true, WaitTimeout: time.Minute, RemoveOrphans: true,
			Progress: func(e engine.Event) {
				switch {
				case e.Action == "remove" && e.Msg == "stopping":
					stopping = time.Now()
				case e.Action == "start" && !stopping.IsZero():
					swap = time.Since(stopping)
				}
			}})
	}
	if err := up(); err != nil {
		b.Fatalf("first agentless deploy: %v", err)
	}

	b.ResetTimer()
	var gaps, took []time.Duration
	var lines []string
	for i := range deploys {
		loadavg, _ := os.ReadFile("/proc/loadavg")
		stop := zdLoad(b, app.listen, float64(rate))
		start := time.Now()
		err := up()
		d := time.Since(start)
		rep := stop()
		if err != nil {
			b.Fatalf("deploy %d: %v", i+1, err)
		}
		gaps, took = append(gaps, rep.LongestGap), append(took, d)
		lines = append(lines, fmt.Sprintf("  deploy %d: longest gap without a 2xx %s (stop to start %s); deploy %s; %d requests, %d failed; load %s",
			i+1, ms(rep.LongestGap), ms(swap), ms(d), rep.Requests, rep.Failed(), strings.Join(strings.Fields(string(loadavg))[:3], " ")))
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
	fmt.Printf("  longest gap: median %s, max %s (target: under 1s plus the app's boot)\n", ms(med(gaps)), ms(slices.Max(gaps)))
	b.ReportMetric(float64(slices.Max(gaps).Milliseconds()), "max-gap-ms")
	b.ReportMetric(float64(med(gaps).Milliseconds()), "median-gap-ms")
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
