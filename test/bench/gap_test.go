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
