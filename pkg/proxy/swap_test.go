package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// slowGet sends GET /slow to r in the background; the returned channel gets its answer as
// "<status> <body>", or the error's text.
func slowGet(t *testing.T, r *Route) <-chan string {
	t.Helper()
	answer := make(chan string, 1)
	go func() {
		resp, err := http.Get(routeURL(r) + "/slow")
		if err != nil {
			answer <- err.Error()
			return
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		answer <- fmt.Sprintf("%d %s", resp.StatusCode, body)
	}()
	return answer
}

func TestSwapReturnsReplacedAndDrainWaits(t *testing.T) {
	r := startRoute(t, RouteOptions{})
	first, err := r.Swap(context.Background(), newBackend(t, "none").addr(), fastCheck)
	if err != nil || first != nil || first.Addr() != "" {
		t.Fatalf("first swap on an empty route: %v, %v; want nothing replaced", first, err)
	}
	blue := newBackend(t, "blue")
	deploy(t, r, blue.addr())
	answer := slowGet(t, r)
	<-blue.arrived // the slow request is on blue

	green := newBackend(t, "green")
	old, err := r.Swap(context.Background(), green.addr(), fastCheck)
	if err != nil {
		t.Fatal(err)
	}
	if old.Addr() != blue.addr() {
		t.Fatalf("replaced %q, want blue %s", old.Addr(), blue.addr())
	}
	// The switch is done when Swap returns: no wait for it.
	if r.Target() != green.addr() {
		t.Errorf("target right after Swap: %s, want green %s", r.Target(), green.addr())
	}
	if _, body := get(t, routeURL(r)+"/"); body != "green" {
		t.Errorf("a request right after Swap went to %q, want green", body)
	}

	drained := make(chan int, 1)
	go func() { drained <- old.Drain(context.Background(), patience) }()
	// The request in flight on blue finishes during the drain, on blue.
	select {
	case n := <-drained:
		t.Fatalf("Drain returned (%d cut) while a request was in flight on the old target", n)
	default:
	}
	close(blue.slow)
	if got := <-answer; got != "200 blue slow done" {
		t.Errorf("the in-flight request got %q, want 200 from blue", got)
	}
	if n := <-drained; n != 0 {
		t.Errorf("Drain cut %d requests, want 0", n)
	}
}

// A request that never ends by itself is cut when the drain's time is up, or when its
// context ends first.
func TestDrainCuts(t *testing.T) {
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	for _, tc := range []struct {
		name    string
		ctx     context.Context
		timeout time.Duration
	}{
		// A short drain gives up on the request whatever the load.
		{"at its timeout", context.Background(), 50 * time.Millisecond},
		{"when its context ends", cancelled, patience},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := startRoute(t, RouteOptions{})
			blue := newBackend(t, "blue") // blue.slow stays open until the end of the test
			deploy(t, r, blue.addr())
			answer := slowGet(t, r)
			<-blue.arrived

			old, err := r.Swap(context.Background(), newBackend(t, "green").addr(), fastCheck)
			if err != nil {
				t.Fatal(err)
			}
			if n := old.Drain(tc.ctx, tc.timeout); n != 1 {
				t.Errorf("Drain cut %d requests, want 1", n)
			}
			if got := <-answer; !strings.HasPrefix(got, "502 ") {
				t.Errorf("the request cut by the drain got %q, want 502", got)
			}
		})
	}
}

func TestSwapSameAddressOnlyChecks(t *testing.T) {
	r := startRoute(t, RouteOptions{})
	blue := newBackend(t, "blue")
	deploy(t, r, blue.addr())
	since := r.Status().Since
	checks := blue.checks.Load()
	old, err := r.Swap(context.Background(), blue.addr(), fastCheck)
	if err != nil || old != nil {
		t.Fatalf("swap to the live address: %v, %v; want nothing replaced", old, err)
	}
	if blue.checks.Load() == checks {
		t.Error("the live address was not health-checked again")
	}
	if st := r.Status(); st.Target != blue.addr() || !st.Since.Equal(since) {
		t.Errorf("status after the same swap: %+v", st)
	}
	if n := old.Drain(context.Background(), 0); n != 0 {
		t.Errorf("Drain of nothing cut %d", n)
	}
	if _, body := get(t, routeURL(r)+"/"); body != "blue" {
		t.Errorf("answer %q, want blue", body)
	}
}

func TestSwapUnhealthyLeavesRoute(t *testing.T) {
	r := startRoute(t, RouteOptions{})
	blue := newBackend(t, "blue")
	deploy(t, r, blue.addr())
	green := newBackend(t, "green")
	green.health.Store(http.StatusServiceUnavailable)

	hc := HealthCheck{Path: "/up", Interval: 10 * time.Millisecond, Timeout: patience, Deadline: 100 * time.Millisecond}
	old, err := r.Swap(context.Background(), green.addr(), hc)
	if !errors.Is(err, ErrUnhealthy) || old != nil {
		t.Fatalf("swap to an unhealthy target: %v, %v; want ErrUnhealthy and nothing replaced", old, err)
	}
	if r.Target() != blue.addr() {
		t.Errorf("target %s, want the old %s", r.Target(), blue.addr())
	}
	if _, body := get(t, routeURL(r)+"/"); body != "blue" {
		t.Errorf("answer %q, want blue", body)
	}
	if n := green.served.Load(); n != 0 {
		t.Errorf("the unhealthy target served %d requests", n)
	}

	if _, err := r.Swap(context.Background(), "no-port", fastCheck); err == nil {
		t.Error("swap to an address without a port: no error")
	}
}
