package bench

// The front door's rows of BenchmarkProxy: pkg/proxy's Router (test/bench/proxyd front)
// over plain HTTP and over HTTPS, with 1 and with 100 routed host names, next to the
// backend direct and the single-route proxy, side by side in one run.

import (
	"cmp"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/shipdeploy/ship/pkg/proxy"
	"github.com/shipdeploy/ship/test/loadgen"
	"github.com/shipdeploy/ship/test/testenv"
)

// frontRow is one way of reaching the backend.
type frontRow struct {
	name, key string // key: the metric's prefix
	cfg       loadgen.Config
	fresh     bool // a new connection (and TLS handshake) per request
}

// measureFront runs every row in turn, rounds times (best round counts), at saturation
// and then all at one rate, half of the slowest row's saturating rate; it returns the
// metrics and the table to print.
func measureFront(b *testing.B, bin string, backend, single *proc, conns int, dur time.Duration, rounds int) (map[string]float64, string) {
	certFile, keyFile, roots, err := testenv.WriteCert(b.TempDir(), "bench", testenv.CertOptions{Names: []string{"*.bench.test"}})
	if err != nil {
		b.Fatal(err)
	}
	fronts := map[int]*proc{}
	for _, n := range []int{1, 100} {
		fronts[n] = startProc(b, bin, "front", "-listen", "127.0.0.1:0", "-tls-listen", "127.0.0.1:0",
			"-target", backend.addr, "-hosts", fmt.Sprint(n), "-cert", certFile, "-key", keyFile)
	}
	addrs := func(n int) (string, string) {
		plain, tls, _ := strings.Cut(fronts[n].addr, ",")
		return plain, tls
	}
	rows := []frontRow{
		{name: "direct", key: "direct", cfg: loadgen.Config{URL: "http://" + backend.addr + "/"}},
		{name: "proxy, own listener (no host)", key: "route", cfg: loadgen.Config{URL: "http://" + single.addr + "/"}},
	}
	for _, n := range []int{1, 100} {
		plain, tls := addrs(n)
		host := fmt.Sprintf("h%d.bench.test", n-1) // the last one added
		rows = append(rows,
			frontRow{name: fmt.Sprintf("router HTTP, %d hosts", n), key: fmt.Sprintf("http_%d", n), cfg: loadgen.Config{URL: "http://" + plain + "/", Host: host}},
			frontRow{name: fmt.Sprintf("router HTTPS keep-alive, %d hosts", n), key: fmt.Sprintf("https_%d", n), cfg: loadgen.Config{URL: "https://" + tls + "/", Host: host, RootCAs: roots}},
			frontRow{name: fmt.Sprintf("router HTTPS new conns, %d hosts", n), key: fmt.Sprintf("https_new_%d", n), fresh: true, cfg: loadgen.Config{URL: "https://" + tls + "/", Host: host, RootCAs: roots}},
		)
	}
	ctx := context.Background()
	for i := range rows {
		rows[i].cfg.Conns, rows[i].cfg.Workers = conns, conns
		if rows[i].fresh {
			rows[i].cfg.Fresh = 1
		}
		// Warm up: connections, pools, the first handshakes.
		c := rows[i].cfg
		c.Duration = time.Second
		if _, err := loadgen.Saturate(ctx, c); err != nil {
			b.Fatal(err)
		}
	}
	sat := make([][]*loadgen.Report, len(rows))
	for range rounds {
		for i, r := range rows {
			c := r.cfg
			c.Duration = dur
			rep, err := loadgen.Saturate(ctx, c)
			if err != nil {
				b.Fatal(err)
			}
			sat[i] = append(sat[i], rep)
		}
	}
	best := make([]*loadgen.Report, len(rows))
	for i := range rows {
		best[i] = mostRate(sat[i])
	}
	rate := slices.MinFunc(best, func(x, y *loadgen.Report) int { return cmp.Compare(x.Rate, y.Rate) }).Rate / 2
	lat := make([][]*loadgen.Report, len(rows))
	for range rounds {
		for i, r := range rows {
			c := r.cfg
			c.Duration, c.Rate, c.Workers = dur, rate, 0
			rep, err := loadgen.Run(ctx, c)
			if err != nil {
				b.Fatal(err)
			}
			lat[i] = append(lat[i], rep)
		}
	}
	return reportFront(rows, best, sat, lat, rate, conns, rounds, dur)
}

func reportFront(rows []frontRow, best []*loadgen.Report, sat, lat [][]*loadgen.Report, rate float64, conns, rounds int, dur time.Duration) (map[string]float64, string) {
	var out strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&out, format, args...) }
	w("\nfront door: pkg/proxy's Router (test/bench/proxyd front) next to the backend direct and the single-route proxy\n")
	w("load: %d connections (HTTP/1.1); rows interleaved, %d rounds of %s each, best round shown; latency: every row at %.0f/s,\n", conns, rounds, dur, rate)
	w("      half the slowest row's saturating rate. HTTPS: ECDSA P-256 certificate by SNI, TLS 1.3, no session resumption\n\n")
	w("%-38s %12s %9s %10s %10s %10s\n", "", "saturate", "vs direct", "p50", "p99", "failed")
	metrics := map[string]float64{}
	failed := 0
	for i, r := range rows {
		lp := leastP99(lat[i])
		n := 0
		for _, rep := range slices.Concat(sat[i], lat[i]) {
			n += rep.Failed()
		}
		failed += n
		ratio := best[i].Rate / best[0].Rate
		w("%-38s %10.0f/s %8.2fx %10s %10s %10d\n", r.name, best[i].Rate, ratio, ms(lp.P50), ms(lp.P99), n)
		metrics[r.key+"_rps"] = best[i].Rate
		if i > 0 {
			metrics[r.key+"_ratio"] = ratio
		}
	}
	hs1, hs100 := metrics["https_new_1_rps"], metrics["https_new_100_rps"]
	w("\nTLS handshakes per second (a new connection per request, saturating): %.0f/s with 1 host, %.0f/s with 100 hosts\n", hs1, hs100)
	w("routing cost with 100 hosts against 1: HTTP %.2fx, HTTPS keep-alive %.2fx the throughput\n",
		metrics["http_100_rps"]/metrics["http_1_rps"], metrics["https_100_rps"]/metrics["https_1_rps"])
	w("failed requests, all front runs: %d\n", failed)
	w("routing alone, in-process (Router.ServeHTTP to a no-op handler): %s\n\n", routingCost())
	metrics["tls_handshakes_per_s"] = hs1
	return metrics, out.String()
}

// routingCost measures Router.ServeHTTP per request with 1, 100 and 1000 host names,
// asking for the last one added: the lookup is map reads, whatever the count.
func routingCost() string {
	var parts []string
	for _, n := range []int{1, 100, 1000} {
		rt := proxy.NewRouter(proxy.RouterOptions{})
		noop := http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})
		for i := range n {
			if err := rt.Set(proxy.Binding{Owner: fmt.Sprint(i), Hosts: []string{fmt.Sprintf("h%d.bench.test", i)}, Paths: []string{"/", "/api"}}, noop); err != nil {
				panic(err)
			}
		}
		req := httptest.NewRequest("GET", "/api/users", nil)
		req.Host = fmt.Sprintf("h%d.bench.test:443", n-1)
		w := httptest.NewRecorder()
		// Timed by hand: testing.Benchmark would wait for the benchmark lock this
		// benchmark holds.
		const loops = 1_000_000
		best := time.Duration(1 << 62)
		for range 3 {
			start := time.Now()
			for range loops {
				rt.ServeHTTP(w, req)
			}
			best = min(best, time.Since(start))
		}
		parts = append(parts, fmt.Sprintf("%dns with %d hosts", best.Nanoseconds()/loops, n))
	}
	return strings.Join(parts, ", ")
}
