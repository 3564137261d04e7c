package loadgen

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestRunCountsAnswers(t *testing.T) {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1)%10 == 0 {
			http.Error(w, "every tenth fails", http.StatusInternalServerError)
			return
		}
		w.Write([]byte("ok\n"))
	}))
	t.Cleanup(srv.Close)

	rep, err := Run(context.Background(), Config{URL: srv.URL + "/up", Rate: 200, Duration: time.Second, Fresh: 0.5, Conns: 4})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Requests != 200 {
		t.Errorf("requests = %d, want 200", rep.Requests)
	}
	if rep.Fresh != 100 {
		t.Errorf("fresh = %d, want 100", rep.Fresh)
	}
	if rep.Non2xx != 20 || rep.Status[500] != 20 {
		t.Errorf("non-2xx = %d (status %v), want 20", rep.Non2xx, rep.Status)
	}
	if rep.OK != 180 || rep.ConnErrors != 0 || rep.Cut != 0 {
		t.Errorf("ok %d conn errors %d cut %d, want 180 0 0 (errors %v)", rep.OK, rep.ConnErrors, rep.Cut, rep.Errors)
	}
	if rep.Failed() != 20 {
		t.Errorf("failed = %d, want 20", rep.Failed())
	}
	if rep.P50 <= 0 || rep.P50 > rep.P90 || rep.P90 > rep.P99 || rep.P99 > rep.Max {
		t.Errorf("percentiles out of order: p50 %s p90 %s p99 %s max %s", rep.P50, rep.P90, rep.P99, rep.Max)
	}
	if rep.Rate <= 0 {
		t.Errorf("rate = %v", rep.Rate)
	}
}

func TestRunBoundedByCount(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	t.Cleanup(srv.Close)
	rep, err := Run(context.Background(), Config{URL: srv.URL, Rate: 1000, Duration: time.Minute, Requests: 50})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Requests != 50 || rep.OK != 50 {
		t.Errorf("requests %d ok %d, want 50 50", rep.Requests, rep.OK)
	}
}

func TestRefusesBadConfig(t *testing.T) {
	tests := []struct {
		name, url string
		rate      float64
		dur       time.Duration
		loopback  bool // the error is ErrNotLoopback
	}{
		{"private address", "http://10.0.0.1:80/", 10, time.Second, true},
		{"public name", "http://example.com/", 10, time.Second, true},
		{"localhost name", "http://localhost:8080/", 10, time.Second, true},
		{"any address", "http://0.0.0.0:8080/", 10, time.Second, true},
		{"ftp", "ftp://127.0.0.1:8443/", 10, time.Second, false},
		{"no duration", "http://127.0.0.1:1/", 10, 0, false},
		{"too long", "http://127.0.0.1:1/", 10, time.Hour, false},
		{"no rate", "http://127.0.0.1:1/", 0, time.Second, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Run(context.Background(), Config{URL: tt.url, Rate: tt.rate, Duration: tt.dur})
			if err == nil {
				t.Fatal("no error")
			}
			if got := errors.Is(err, ErrNotLoopback); got != tt.loopback {
				t.Errorf("errors.Is(%v, ErrNotLoopback) = %v, want %v", err, got, tt.loopback)
			}
		})
	}
	if _, err := Saturate(context.Background(), Config{URL: "http://192.168.1.1/", Duration: time.Second}); !errors.Is(err, ErrNotLoopback) {
		t.Errorf("Saturate to a private address: %v", err)
	}
}

func TestConnectionErrors(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now

	rep, err := Run(context.Background(), Config{URL: "http://" + addr + "/", Rate: 100, Duration: 200 * time.Millisecond, Fresh: 0.5})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Requests == 0 || rep.ConnErrors != rep.Requests || rep.Errors["refused"] != rep.Requests {
		t.Errorf("requests %d conn errors %d errors %v: want all refused", rep.Requests, rep.ConnErrors, rep.Errors)
	}
	if rep.OK != 0 || rep.LongestGap == 0 {
		t.Errorf("ok %d longest gap %s", rep.OK, rep.LongestGap)
	}
}

func TestHardStop(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) })

	// Every request hangs: the run still ends by itself, with none answered.
	rep, err := Run(context.Background(), Config{URL: srv.URL, Rate: 50, Duration: 200 * time.Millisecond, Timeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Requests == 0 || rep.OK != 0 || rep.Failed() != rep.Requests {
		t.Errorf("requests %d ok %d failed %d: want all failed", rep.Requests, rep.OK, rep.Failed())
	}

	sat, err := Saturate(context.Background(), Config{URL: srv.URL, Workers: 2, Duration: 100 * time.Millisecond, Timeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if sat.Requests == 0 || sat.OK != 0 {
		t.Errorf("saturate: requests %d ok %d", sat.Requests, sat.OK)
	}
}

func TestSaturate(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok\n")) }))
	t.Cleanup(srv.Close)
	rep, err := Saturate(context.Background(), Config{URL: srv.URL, Workers: 4, Conns: 4, Duration: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Requests == 0 || rep.OK != rep.Requests || rep.Workers != 4 || rep.Mode != "saturate" {
		t.Errorf("requests %d ok %d workers %d mode %s", rep.Requests, rep.OK, rep.Workers, rep.Mode)
	}
	capped, err := Saturate(context.Background(), Config{URL: srv.URL, Workers: 4, Duration: time.Minute, Requests: 40})
	if err != nil {
		t.Fatal(err)
	}
	if capped.Requests != 40 {
		t.Errorf("requests = %d, want 40", capped.Requests)
	}
}

func TestOutput(t *testing.T) {
	rep := newReport("rate", Config{URL: "http://127.0.0.1:1/", Conns: 2, Fresh: 0.5}, []result{
		{lat: time.Millisecond, end: 10 * time.Millisecond, status: 200},
		{lat: 2 * time.Millisecond, end: 20 * time.Millisecond, status: 503, fresh: true},
		{kind: errRefused, end: 30 * time.Millisecond},
		{lat: 3 * time.Millisecond, end: 100 * time.Millisecond, status: 200},
	}, 110*time.Millisecond, 100*time.Millisecond)
	rep.TargetRate = 40
	if rep.OK != 2 || rep.Non2xx != 1 || rep.ConnErrors != 1 || rep.Fresh != 1 {
		t.Fatalf("counts: %+v", rep)
	}
	if rep.LongestGap != 90*time.Millisecond {
		t.Errorf("longest gap = %s, want 90ms", rep.LongestGap)
	}
	if rep.P50 != 2*time.Millisecond || rep.Max != 3*time.Millisecond {
		t.Errorf("p50 %s max %s", rep.P50, rep.Max)
	}

	var text bytes.Buffer
	if err := rep.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"2xx 2, non-2xx 1, conn errors 1", "p50 2.000ms", "503: 1", "refused: 1", "longest gap without a 2xx 90.0ms"} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("text lacks %q:\n%s", want, text.String())
		}
	}

	b, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	for key, want := range map[string]any{"ok": 2.0, "non_2xx": 1.0, "conn_errors": 1.0, "p50_ms": 2.0, "max_ms": 3.0} {
		if got[key] != want {
			t.Errorf("json %s = %v, want %v (%s)", key, got[key], want, b)
		}
	}
}

func TestIsFresh(t *testing.T) {
	for _, share := range []float64{0, 0.1, 0.25, 0.5, 1} {
		n := 0
		for i := range 1000 {
			if isFresh(i, share) {
				n++
			}
		}
		if want := int(share * 1000); n != want {
			t.Errorf("share %v: %d of 1000 fresh, want %d", share, n, want)
		}
	}
}
