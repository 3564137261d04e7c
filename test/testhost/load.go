package testhost

import (
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// LoadgenPath is where InstallLoadgen puts test/loadgen's command on a host.
const LoadgenPath = "/usr/local/bin/loadgen"

// InstallLoadgen copies the loadgen binary (built from test/loadgen/cmd/loadgen) to
// the host: the load is sent from the host itself, to shipd on its loopback, as
// loadgen targets only loopback addresses.
func (h *Host) InstallLoadgen(t testing.TB, bin string) {
	t.Helper()
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	h.Put(t, LoadgenPath, data, 0o755)
}

// LoadReport is what loadgen reported (its -json output; durations in milliseconds).
type LoadReport struct {
	Requests   int            `json:"requests"`
	OK         int            `json:"ok"`
	Non2xx     int            `json:"non_2xx"`
	ConnErrors int            `json:"conn_errors"`
	Cut        int            `json:"cut"`
	Status     map[string]int `json:"status"`
	Errors     map[string]int `json:"errors"`
	P50MS      float64        `json:"p50_ms"`
	P99MS      float64        `json:"p99_ms"`
	MaxMS      float64        `json:"max_ms"`
	GapMS      float64        `json:"longest_gap_ms"`
}

// Failed is every request that got no 2xx answer: answered otherwise, or not at all.
// The requests cut by the end of the run (Cut: in flight when it was stopped) are not
// failures of the server.
func (r *LoadReport) Failed() int { return r.Non2xx + r.ConnErrors }

func (r *LoadReport) String() string {
	return fmt.Sprintf("%d requests, %d ok, %d non-2xx %v, %d connection errors %v, %d cut by the end of the run; p50 %.1fms, p99 %.1fms, max %.1fms, longest gap without an answer %.0fms",
		r.Requests, r.OK, r.Non2xx, r.Status, r.ConnErrors, r.Errors, r.Cut, r.P50MS, r.P99MS, r.MaxMS, r.GapMS)
}

// Load sends GET requests to http://127.0.0.1:port/path on the host, from the host, at
// 150 a second over 4 keep-alive connections, 30% of them on a fresh connection each,
// until stop is called; stop returns the report. It returns once the first connection
// to the port is open.
func (h *Host) Load(t testing.TB, port int, path string) (stop func() *LoadReport) {
	t.Helper()
	url := "http://127.0.0.1:" + strconv.Itoa(port) + path
	p := h.Start(t, LoadgenPath+" -url "+url+" -rate 150 -duration 10m -conns 4 -fresh 0.3 -timeout 1m -json")
	WaitFor(t, "loadgen connects to "+url+" on "+h.Name, time.Minute, func() error {
		out, err := h.Run(fmt.Sprintf("ss -Htn state established '( dport = :%d )' | wc -l", port))
		if err != nil {
			return err
		}
		if n, _ := strconv.Atoi(strings.TrimSpace(out)); n == 0 {
			return fmt.Errorf("no connection yet")
		}
		return nil
	})
	return func() *LoadReport {
		t.Helper()
		out, err := p.Interrupt()
		if err != nil {
			t.Fatalf("loadgen on %s: %v\n%s", h.Name, err, out)
		}
		var r LoadReport
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			t.Fatalf("loadgen's report: %v\n%s", err, out)
		}
		if r.Requests == 0 {
			t.Fatalf("loadgen sent nothing: %s", out)
		}
		return &r
	}
}
