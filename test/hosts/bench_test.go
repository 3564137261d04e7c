package hosts

import (
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shipdeploy/ship/test/testhost"
)

// BenchmarkFanOut: shipctl deploy through shipd to one host and to three, each host
// with its own engine, one after the other on the same hosts; the median wall time of
// each and their ratio, with this machine's load. BENCH_RUNS=n deploys per row
// (default 5). Run it with SHIP_TEST_HOSTS=1 go test -run '^$' -bench FanOut
// -benchtime 1x ./test/hosts.
func BenchmarkFanOut(b *testing.B) {
	runs := 5
	if n, err := strconv.Atoi(os.Getenv("BENCH_RUNS")); err == nil && n > 0 {
		runs = n
	}
	c := testhost.Start(b, 3)
	one := newSite(b, c, siteOptions{hosts: c.Hosts[:1], port: 8090, restart: "unless-stopped"})
	three := newSite(b, c, siteOptions{port: 8091, restart: "unless-stopped"})
	three.install()
	for _, h := range c.Hosts {
		unit{h}.waitServing(b, 0)
	}
	type row struct {
		s          *site
		name       string
		shas, vers []string
		times      []time.Duration
	}
	rows := []*row{{s: one, name: "1 host"}, {s: three, name: "3 hosts"}}
	for _, r := range rows {
		r.shas = []string{r.s.version("v1"), r.s.version("v2")}
		r.vers = []string{"v1", "v2"}
		// The first deploy pulls the image on each host: not timed.
		r.s.deploy(r.shas[0])
	}
	load := loadavg()
	b.ResetTimer()
	for range b.N {
		for i := range runs {
			for _, r := range rows {
				k := (i + 1) % 2
				began := time.Now()
				r.s.deploy(r.shas[k])
				r.times = append(r.times, time.Since(began))
				r.s.mustServe(r.vers[k])
			}
		}
	}
	b.StopTimer()
	med := func(ds []time.Duration) time.Duration {
		s := slices.Clone(ds)
		slices.Sort(s)
		return s[len(s)/2]
	}
	m1, m3 := med(rows[0].times), med(rows[1].times)
	b.Logf("shipctl deploy through shipd, %d runs each, median wall time: 1 host %s, 3 hosts %s, ratio %.2f (each host its own engine; load average before %s, after %s, %d cores)",
		len(rows[0].times), m1.Round(time.Millisecond), m3.Round(time.Millisecond), float64(m3)/float64(m1), load, loadavg(), runtime.NumCPU())
	for _, r := range rows {
		b.Logf("  %s: %v", r.name, r.times)
	}
	b.ReportMetric(float64(m1.Milliseconds()), "ms/deploy-1host")
	b.ReportMetric(float64(m3.Milliseconds()), "ms/deploy-3hosts")
	b.ReportMetric(float64(m3)/float64(m1), "ratio-3/1")
}

// loadavg is this machine's 1, 5 and 15 minute load averages.
func loadavg() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(data))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}
