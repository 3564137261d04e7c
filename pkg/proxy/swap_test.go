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

// SwapAll switches the routes of one service together; one unhealthy address leaves
// every route where it was.
func TestSwapAll(t *testing.T) {
	app, admin := startRoute(t, RouteOptions{}), startRoute(t, RouteOptions{})
	blueApp, blueAdmin := newBackend(t, "blue-app"), newBackend(t, "blue-admin")
	deploy(t, app, blueApp.addr())
	deploy(t, admin, blueAdmin.addr())

	greenApp, greenAdmin := newBackend(t, "green-app"), newBackend(t, "green-admin")
	greenAdmin.health.Store(http.StatusServiceUnavailable)
	hc := HealthCheck{Path: "/up", Interval: 10 * time.Millisecond, Timeout: patience, Deadline: 100 * time.Millisecond}
	olds, err := SwapAll(context.Background(), []SwapTarget{{app, greenApp.addr(), fastCheck}, {admin, greenAdmin.addr(), hc}})
	if !errors.Is(err, ErrUnhealthy) || olds != nil {
		t.Fatalf("SwapAll with an unhealthy admin: %v, %v; want ErrUnhealthy and nothing replaced", olds, err)
	}
	for r, want := range map[*Route]string{app: "blue-app", admin: "blue-admin"} {
		if _, body := get(t, routeURL(r)+"/"); body != want {
			t.Errorf("after the failed SwapAll %s answers %q, want %q", r.Name(), body, want)
		}
	}

	greenAdmin.health.Store(http.StatusOK)
	olds, err = SwapAll(context.Background(), []SwapTarget{{app, greenApp.addr(), fastCheck}, {admin, greenAdmin.addr(), fastCheck}})
	if err != nil {
		t.Fatal(err)
	}
	if len(olds) != 2 || olds[0].Addr() != blueApp.addr() || olds[1].Addr() != blueAdmin.addr() {
		t.Fatalf("replaced %v, want blue-app and blue-admin in order", olds)
	}
	for r, want := range map[*Route]string{app: "green-app", admin: "green-admin"} {
		if _, body := get(t, routeURL(r)+"/"); body != want {
			t.Errorf("after SwapAll %s answers %q, want %q", r.Name(), body, want)
		}
	}
	for _, old := range olds {
		if n := old.Drain(context.Background(), patience); n != 0 {
			t.Errorf("drain of %s cut %d requests", old.Addr(), n)
		}
	}

	// The same addresses again: nothing replaced; a shut-down route refuses.
	olds, err = SwapAll(context.Background(), []SwapTarget{{app, greenApp.addr(), fastCheck}, {admin, greenAdmin.addr(), fastCheck}})
	if err != nil || olds[0] != nil || olds[1] != nil {
		t.Errorf("SwapAll to the live addresses: %v, %v; want nothing replaced", olds, err)
	}
	if err := admin.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := SwapAll(context.Background(), []SwapTarget{{app, blueApp.addr(), fastCheck}, {admin, blueAdmin.addr(), fastCheck}}); !errors.Is(err, ErrClosed) {
		t.Errorf("SwapAll with a shut-down route: %v, want ErrClosed", err)
	}
	if _, body := get(t, routeURL(app)+"/"); body != "green-app" {
		t.Errorf("after the refused SwapAll app answers %q, want green-app", body)
	}
}
