package loadgen

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"
)

// reportJSON is Report on the wire: durations in milliseconds.
type reportJSON struct {
	Mode         string         `json:"mode"`
	URL          string         `json:"url"`
	TargetRate   float64        `json:"target_rate,omitempty"`
	Conns        int            `json:"conns"`
	Workers      int            `json:"workers,omitempty"`
	FreshShare   float64        `json:"fresh_share"`
	ElapsedMS    float64        `json:"elapsed_ms"`
	Requests     int            `json:"requests"`
	Fresh        int            `json:"fresh"`
	OK           int            `json:"ok"`
	Non2xx       int            `json:"non_2xx"`
	ConnErrors   int            `json:"conn_errors"`
	Cut          int            `json:"cut"`
	Status       map[string]int `json:"status"`
	Errors       map[string]int `json:"errors"`
	Rate         float64        `json:"rate"`
	P50MS        float64        `json:"p50_ms"`
	P90MS        float64        `json:"p90_ms"`
	P99MS        float64        `json:"p99_ms"`
	MaxMS        float64        `json:"max_ms"`
	LongestGapMS float64        `json:"longest_gap_ms"`
	LagP99MS     float64        `json:"lag_p99_ms,omitempty"`
	LagMaxMS     float64        `json:"lag_max_ms,omitempty"`
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// MarshalJSON writes the report with durations in milliseconds (fields ending in _ms).
func (r *Report) MarshalJSON() ([]byte, error) {
	status := make(map[string]int, len(r.Status))
	for code, n := range r.Status {
		status[fmt.Sprint(code)] = n
	}
	return json.Marshal(reportJSON{
		Mode: r.Mode, URL: r.URL, TargetRate: r.TargetRate, Conns: r.Conns, Workers: r.Workers,
		FreshShare: r.FreshShare, ElapsedMS: ms(r.Elapsed), Requests: r.Requests, Fresh: r.Fresh,
		OK: r.OK, Non2xx: r.Non2xx, ConnErrors: r.ConnErrors, Cut: r.Cut, Status: status,
		Errors: r.Errors, Rate: r.Rate, P50MS: ms(r.P50), P90MS: ms(r.P90), P99MS: ms(r.P99),
		MaxMS: ms(r.Max), LongestGapMS: ms(r.LongestGap), LagP99MS: ms(r.LagP99), LagMaxMS: ms(r.LagMax),
	})
}

// WriteText writes the report for a person, in a few lines.
func (r *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	switch r.Mode {
	case "saturate":
		fmt.Fprintf(&b, "saturate %s: %d workers, %d keep-alive conns, %.0f%% fresh, %s\n",
			r.URL, r.Workers, r.Conns, r.FreshShare*100, r.Elapsed.Round(time.Millisecond))
	default:
		fmt.Fprintf(&b, "rate %s: %.0f/s, %d keep-alive conns, %.0f%% fresh, %s\n",
			r.URL, r.TargetRate, r.Conns, r.FreshShare*100, r.Elapsed.Round(time.Millisecond))
	}
	fmt.Fprintf(&b, "  requests %d (fresh %d): 2xx %d, non-2xx %d, conn errors %d", r.Requests, r.Fresh, r.OK, r.Non2xx, r.ConnErrors)
	if r.Cut > 0 {
		fmt.Fprintf(&b, ", cut at stop %d", r.Cut)
	}
	fmt.Fprintf(&b, "; achieved %.1f/s\n", r.Rate)
	fmt.Fprintf(&b, "  latency p50 %s  p90 %s  p99 %s  max %s; longest gap without a 2xx %s\n",
		fmtDur(r.P50), fmtDur(r.P90), fmtDur(r.P99), fmtDur(r.Max), fmtDur(r.LongestGap))
	if r.Mode == "rate" {
		fmt.Fprintf(&b, "  sending lag behind the schedule: p99 %s  max %s\n", fmtDur(r.LagP99), fmtDur(r.LagMax))
	}
	if r.Non2xx > 0 {
		var parts []string
		for _, code := range slices.Sorted(maps.Keys(r.Status)) {
			parts = append(parts, fmt.Sprintf("%d: %d", code, r.Status[code]))
		}
		fmt.Fprintf(&b, "  status %s\n", strings.Join(parts, ", "))
	}
	if len(r.Errors) > 0 {
		var parts []string
		for _, k := range slices.Sorted(maps.Keys(r.Errors)) {
			parts = append(parts, fmt.Sprintf("%s: %d", k, r.Errors[k]))
		}
		fmt.Fprintf(&b, "  errors %s\n", strings.Join(parts, ", "))
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// fmtDur prints a latency in milliseconds with a precision that suits it.
func fmtDur(d time.Duration) string {
	switch {
	case d < 10*time.Millisecond:
		return fmt.Sprintf("%.3fms", ms(d))
	case d < time.Second:
		return fmt.Sprintf("%.1fms", ms(d))
	default:
		return d.Round(time.Millisecond).String()
	}
}
