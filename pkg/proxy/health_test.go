package proxy

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestHealthCheck(t *testing.T) {
	var failFirst atomic.Int32 // the slow starter answers 503 this many times first
	var starts atomic.Int32    // and counts the attempts it got
	var host atomic.Value
	mux := http.NewServeMux()
	mux.HandleFunc("/up", func(w http.ResponseWriter, r *http.Request) {})
	mux.HandleFunc("/empty", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
	mux.HandleFunc("/down", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusServiceUnavailable) })
	mux.HandleFunc("/moved", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/up", http.StatusFound) })
	mux.HandleFunc("/starting", func(w http.ResponseWriter, r *http.Request) {
		starts.Add(1)
		if failFirst.Add(-1) >= 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	})
	mux.HandleFunc("/host", func(w http.ResponseWriter, r *http.Request) {
		host.Store(r.Host)
		if r.Header.Get("User-Agent") != "shipd-health" {
			w.WriteHeader(http.StatusBadRequest)
		}
	})
	app := httptest.NewServer(mux)
	t.Cleanup(app.Close)
	addr := app.Listener.Addr().String()
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	closed := ln.Addr().String()
	ln.Close()

	// A check that passes returns at once, so its deadline only bounds a hang: however slow
	// the machine, a passing target is not failed. One that must fail runs to its short
	// deadline; no load can make it pass. No attempt is ever cut by its own timeout.
	passes := func(path string) HealthCheck {
		return HealthCheck{Path: path, Interval: 10 * time.Millisecond, Timeout: patience, Deadline: patience}
	}
	fails := func(path string) HealthCheck {
		return HealthCheck{Path: path, Interval: 10 * time.Millisecond, Timeout: patience, Deadline: 100 * time.Millisecond}
	}
	tests := []struct {
		name      string
		hc        HealthCheck
		addr      string
		prepare   func()
		unhealthy bool   // the error Is ErrUnhealthy
		errText   string // else, no error when ""
	}{
		{name: "200 passes", hc: passes("/up"), addr: addr},
		{name: "204 passes", hc: passes("/empty"), addr: addr},
		{name: "503 fails", hc: fails("/down"), addr: addr, unhealthy: true, errText: "status 503"},
		{name: "a redirect fails", hc: fails("/moved"), addr: addr, unhealthy: true, errText: "status 302"},
		{name: "a slow starter passes", hc: passes("/starting"), addr: addr, prepare: func() { failFirst.Store(3) }},
		{name: "host header", hc: HealthCheck{Path: "/host", Host: "app.example.com", Timeout: patience, Deadline: patience}, addr: addr},
		{name: "nothing listening fails", hc: fails("/up"), addr: closed, unhealthy: true, errText: "refused"},
		{name: "tcp connect passes", hc: passes(""), addr: addr},
		{name: "tcp connect fails", hc: fails(""), addr: closed, unhealthy: true, errText: "tcp connect"},
		{name: "a relative path is refused", hc: passes("up"), addr: addr, errText: "must start with /"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.prepare != nil {
				tt.prepare()
			}
			err := tt.hc.Wait(context.Background(), tt.addr)
			if got := errors.Is(err, ErrUnhealthy); got != tt.unhealthy {
				t.Errorf("errors.Is(%v, ErrUnhealthy) = %v, want %v", err, got, tt.unhealthy)
			}
			switch {
			case tt.errText == "" && err != nil:
				t.Errorf("unexpected error: %v", err)
			case tt.errText != "" && (err == nil || !strings.Contains(err.Error(), tt.errText)):
				t.Errorf("error %v, want one containing %q", err, tt.errText)
			}
		})
	}
	if got, _ := host.Load().(string); got != "app.example.com" {
		t.Errorf("Host sent = %q", got)
	}
	if n := starts.Load(); n != 4 {
		t.Errorf("the slow starter got %d attempts, want 3 failed and 1 passed", n)
	}
}

func TestHealthCheckCancelled(t *testing.T) {
	asked := make(chan struct{}, 1)
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case asked <- struct{}{}:
		default:
		}
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	t.Cleanup(app.Close)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-asked: // cancelled once the check is under way
			cancel()
		case <-ctx.Done():
		}
	}()
	// The deadline is out of reach: only the cancellation can end the check.
	err := HealthCheck{Path: "/up", Interval: 10 * time.Millisecond, Timeout: patience, Deadline: patience}.Wait(ctx, app.Listener.Addr().String())
	if !errors.Is(err, context.Canceled) || errors.Is(err, ErrUnhealthy) {
		t.Errorf("cancelled check: %v, want context.Canceled", err)
	}
}

func TestHealthCheckDefaults(t *testing.T) {
	hc := HealthCheck{}.withDefaults()
	if hc.Interval != time.Second || hc.Timeout != 5*time.Second || hc.Deadline != 30*time.Second {
		t.Errorf("defaults %+v, want 1s/5s/30s", hc)
	}
}
