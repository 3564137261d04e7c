package proxy

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// waitFor polls cond until it holds; the test's own deadline bounds it.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		if d, ok := t.Deadline(); ok && time.Until(d) < time.Second {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestNoTargetAnswers503(t *testing.T) {
	r := startRoute(t, RouteOptions{})
	code, body := get(t, routeURL(r)+"/")
	if code != http.StatusServiceUnavailable || !strings.HasPrefix(body, "503") {
		t.Errorf("got %d %q, want 503", code, body)
	}
	if r.Target() != "" {
		t.Errorf("target = %q before any deploy", r.Target())
	}
}

// Blue-green twice under keep-alive and fresh-connection load: each old backend stops
// as soon as Deploy returns, as shipd stops the old container, and no request fails.
func TestSwapUnderLoadFailsNothing(t *testing.T) {
	r := startRoute(t, RouteOptions{})
	blue := newBackend(t, "blue")
	deploy(t, r, blue.addr())

	l := startLoad(t, routeURL(r)+"/")
	waitServed(t, blue, 50)
	green := newBackend(t, "green")
	deploy(t, r, green.addr())
	blue.srv.Close()
	waitServed(t, green, 50)
	blue2 := newBackend(t, "blue2")
	deploy(t, r, blue2.addr())
	green.srv.Close()
	waitServed(t, blue2, 50)
	stopLoad(t, l)

	if r.Target() != blue2.addr() {
		t.Errorf("target %s, want %s", r.Target(), blue2.addr())
	}
	if _, body := get(t, routeURL(r)+"/"); body != "blue2" {
		t.Errorf("answer %q, want blue2", body)
	}
}

func TestUnhealthyTargetNeverServes(t *testing.T) {
	r := startRoute(t, RouteOptions{})
	blue := newBackend(t, "blue")
	deploy(t, r, blue.addr())
	green := newBackend(t, "green")
	green.health.Store(http.StatusServiceUnavailable)

	l := startLoad(t, routeURL(r)+"/")
	waitServed(t, blue, 20)
	// The check can only fail (503): a short deadline cannot flip it on a slow machine.
	hc := HealthCheck{Path: "/up", Interval: 50 * time.Millisecond, Timeout: patience, Deadline: 300 * time.Millisecond}
	err := r.Deploy(context.Background(), green.addr(), hc, time.Second)
	if !errors.Is(err, ErrUnhealthy) {
		t.Fatalf("deploy of an unhealthy target: %v, want ErrUnhealthy", err)
	}
	if !strings.Contains(err.Error(), "status 503") {
		t.Errorf("error does not say why: %v", err)
	}
	waitServed(t, blue, 20)
	stopLoad(t, l)
	if r.Target() != blue.addr() {
		t.Errorf("target %s, want the old %s", r.Target(), blue.addr())
	}
	if n := green.served.Load(); n != 0 {
		t.Errorf("the unhealthy target served %d requests", n)
	}

	// Nothing listening: the TCP check fails the same way.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	closed := ln.Addr().String()
	ln.Close()
	err = r.Deploy(context.Background(), closed, HealthCheck{Interval: 20 * time.Millisecond, Timeout: patience, Deadline: 100 * time.Millisecond}, time.Second)
	if !errors.Is(err, ErrUnhealthy) || r.Target() != blue.addr() {
		t.Errorf("deploy to a closed port: %v, target %s", err, r.Target())
	}
}

func TestDrainWaitsForInFlight(t *testing.T) {
	r := startRoute(t, RouteOptions{})
	blue := newBackend(t, "blue")
	deploy(t, r, blue.addr())
	green := newBackend(t, "green")

	answer := slowGet(t, r)
	<-blue.arrived

	deployed := make(chan error, 1)
	go func() { deployed <- r.Deploy(context.Background(), green.addr(), fastCheck, time.Minute) }()
	waitFor(t, "the swap", func() bool { return r.Target() == green.addr() })
	if _, body := get(t, routeURL(r)+"/"); body != "green" {
		t.Errorf("a request after the swap went to %q, want green", body)
	}
	select {
	case err := <-deployed:
		t.Fatalf("Deploy returned (%v) while a request was in flight on the old target", err)
	default:
	}

	close(blue.slow)
	if got := <-answer; got != "200 blue slow done" {
		t.Errorf("the in-flight request got %q, want 200 from blue", got)
	}
	if err := <-deployed; err != nil {
		t.Fatal(err)
	}
}

func TestDrainGivesUpAtTimeout(t *testing.T) {
	r := startRoute(t, RouteOptions{})
	blue := newBackend(t, "blue") // blue.slow stays open until the end of the test
	deploy(t, r, blue.addr())
	green := newBackend(t, "green")

	answer := slowGet(t, r)
	<-blue.arrived
	// The request never ends by itself: a short drain gives up on it whatever the load.
	if err := r.Deploy(context.Background(), green.addr(), fastCheck, 50*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	// Deploy is back although the request never finished: its connection was closed.
	if got := <-answer; !strings.HasPrefix(got, "502 ") {
		t.Errorf("the request cut by the drain got %q, want 502", got)
	}
	if _, body := get(t, routeURL(r)+"/"); body != "green" {
		t.Errorf("answer %q, want green", body)
	}
}

func TestWebSocketThroughSwap(t *testing.T) {
	r := startRoute(t, RouteOptions{})
	blue := newBackend(t, "blue")
	deploy(t, r, blue.addr())

	conn, br := wsDial(t, routeURL(r)+"/ws")
	for _, msg := range []string{"hello", "again"} {
		if err := wsWrite(conn, msg, true); err != nil {
			t.Fatal(err)
		}
		got, err := wsRead(br)
		if err != nil || got != "echo: "+msg {
			t.Fatalf("echo: %q, %v", got, err)
		}
	}

	// The open WebSocket is a request in flight on blue: it keeps working during the
	// drain, which waits for it until it is told to give up, and then closes it.
	green := newBackend(t, "green")
	old, err := r.Swap(context.Background(), green.addr(), fastCheck)
	if err != nil {
		t.Fatal(err)
	}
	ctx, giveUp := context.WithCancel(context.Background())
	defer giveUp()
	drained := make(chan int, 1)
	go func() { drained <- old.Drain(ctx, patience) }()
	if err := wsWrite(conn, "during drain", true); err != nil {
		t.Fatal(err)
	}
	if got, err := wsRead(br); err != nil || got != "echo: during drain" {
		t.Fatalf("echo during the drain: %q, %v", got, err)
	}
	giveUp()
	if n := <-drained; n != 1 {
		t.Errorf("the drain cut %d requests, want the WebSocket", n)
	}
	if _, err := wsRead(br); err == nil {
		t.Error("the WebSocket on the old target is still open after its drain")
	}

	// A new one reaches green.
	conn2, br2 := wsDial(t, routeURL(r)+"/ws")
	wsWrite(conn2, "new", true)
	if got, err := wsRead(br2); err != nil || got != "echo: new" {
		t.Fatalf("echo on the new target: %q, %v", got, err)
	}
	if green.served.Load() != 1 {
		t.Errorf("green served %d requests, want the one WebSocket", green.served.Load())
	}
}

func TestStreamingPassesChunkByChunk(t *testing.T) {
	for _, ctype := range []string{"text/plain", "text/event-stream"} {
		t.Run(ctype, func(t *testing.T) {
			step := make(chan struct{})
			app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/up" {
					return
				}
				w.Header().Set("Content-Type", ctype)
				for i := range 3 {
					fmt.Fprintf(w, "chunk %d\n", i)
					http.NewResponseController(w).Flush()
					select {
					case <-step: // the next chunk only once the client has this one
					case <-r.Context().Done():
						return
					}
				}
			}))
			t.Cleanup(app.Close)
			r := startRoute(t, RouteOptions{})
			deploy(t, r, app.Listener.Addr().String())

			// A proxy that buffered would never deliver the first chunk: the client's
			// timeout turns that hang into a failure.
			client := &http.Client{Timeout: patience}
			resp, err := client.Get(routeURL(r) + "/stream")
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			br := bufio.NewReader(resp.Body)
			for i := range 3 {
				line, err := br.ReadString('\n')
				if err != nil || line != fmt.Sprintf("chunk %d\n", i) {
					t.Fatalf("chunk %d: %q, %v", i, line, err)
				}
				step <- struct{}{}
			}
			if rest, err := io.ReadAll(br); err != nil || len(rest) > 0 {
				t.Errorf("after the chunks: %q, %v", rest, err)
			}
		})
	}
}

func TestForwardedHeaders(t *testing.T) {
	blue := newBackend(t, "blue")
	tests := []struct {
		name  string
		trust bool
		want  map[string]string
	}{
		{"replaced by default", false, map[string]string{"host": "app.example.com", "xff": "127.0.0.1", "xfh": "app.example.com", "xfp": "http", "xri": "127.0.0.1", "agent": "probe"}},
		{"trusted", true, map[string]string{"host": "app.example.com", "xff": "203.0.113.9, 127.0.0.1", "xfh": "front.example.com", "xfp": "https", "xri": "203.0.113.9", "agent": "probe"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := startRoute(t, RouteOptions{TrustForwarded: tt.trust})
			deploy(t, r, blue.addr())
			req, _ := http.NewRequest(http.MethodGet, routeURL(r)+"/headers", nil)
			req.Host = "app.example.com"
			req.Header.Set("User-Agent", "probe")
			req.Header.Set("X-Forwarded-For", "203.0.113.9")
			req.Header.Set("X-Forwarded-Host", "front.example.com")
			req.Header.Set("X-Forwarded-Proto", "https")
			req.Header.Set("X-Real-IP", "203.0.113.9")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var got map[string]string
			if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
				t.Fatal(err)
			}
			for k, v := range tt.want {
				if got[k] != v {
					t.Errorf("%s = %q, want %q", k, got[k], v)
				}
			}
		})
	}
}

func TestTargetFailures(t *testing.T) {
	r := startRoute(t, RouteOptions{ResponseTimeout: 100 * time.Millisecond})
	blue := newBackend(t, "blue")
	deploy(t, r, blue.addr())

	code, body := get(t, routeURL(r)+"/slow")
	if code != http.StatusGatewayTimeout || !strings.HasPrefix(body, "504") || len(body) > 100 {
		t.Errorf("a target too slow to answer: %d %q, want 504 with a short body", code, body)
	}

	blue.srv.Close() // the container died
	code, body = get(t, routeURL(r)+"/")
	if code != http.StatusBadGateway || !strings.HasPrefix(body, "502") || len(body) > 100 {
		t.Errorf("a dead target: %d %q, want 502 with a short body", code, body)
	}
	if r.Target() != blue.addr() {
		t.Errorf("target %s", r.Target())
	}
}

// A request that picked a target which refuses connections is retried on the live one
// when a deploy switched meanwhile, unless it has a body.
func TestRetryOnTheLiveTarget(t *testing.T) {
	r := startRoute(t, RouteOptions{})
	green := newBackend(t, "green")
	deploy(t, r, green.addr())
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	gone := ln.Addr().String()
	ln.Close()

	tests := []struct {
		name     string
		req      *http.Request
		wantCode int
		wantBody string
	}{
		{"GET is retried", httptest.NewRequest(http.MethodGet, "/", nil), 200, "green"},
		{"DELETE without a body is retried", httptest.NewRequest(http.MethodDelete, "/", nil), 200, "green"},
		{"POST with a body is not", httptest.NewRequest(http.MethodPost, "/", strings.NewReader("x=1")), 502, "502 bad gateway"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			old := newTarget(gone, &r.opts, r.log)
			old.acquire() // as pick did before the swap
			rec := httptest.NewRecorder()
			r.serveOn(old, rec, tt.req)
			if rec.Code != tt.wantCode || !strings.HasPrefix(rec.Body.String(), tt.wantBody) {
				t.Errorf("got %d %q, want %d %q", rec.Code, rec.Body.String(), tt.wantCode, tt.wantBody)
			}
			if n := old.inflight.Load(); n != 0 {
				t.Errorf("old target in flight = %d after the request", n)
			}
			old.close()
		})
	}
	if n := r.Status().InFlight; n != 0 {
		t.Errorf("live target in flight = %d after the requests", n)
	}
}

// The listener moves from one route to a new one (as from one shipd process to the next)
// while requests run: no connection is refused.
func TestListenerHandoverBetweenRoutes(t *testing.T) {
	blue := newBackend(t, "blue")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	first := NewRoute("web", ln, RouteOptions{})
	served := make(chan error, 1)
	go func() { served <- first.Serve() }()
	deploy(t, first, blue.addr())

	l := startLoad(t, routeURL(first)+"/")
	waitServed(t, blue, 50) // through the first route

	f, err := ListenerFile(ln)
	if err != nil {
		t.Fatal(err)
	}
	ln2, err := net.FileListener(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	// The target first, as a restarted shipd does: a request the new route accepted
	// before it had one would get 503.
	second := NewRoute("web", ln2, RouteOptions{})
	deploy(t, second, blue.addr())
	serve(t, second)
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	if err := first.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-served; err != nil {
		t.Fatal(err)
	}
	waitServed(t, blue, 50) // through the second route: the first is shut down
	stopLoad(t, l)
	if second.Status().Requests == 0 || first.Status().Requests == 0 {
		t.Errorf("requests: first route %d, second %d; want both > 0", first.Status().Requests, second.Status().Requests)
	}
}

func TestDeployAfterShutdown(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	r := NewRoute("web", ln, RouteOptions{})
	if err := r.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	blue := newBackend(t, "blue")
	if err := r.Deploy(context.Background(), blue.addr(), fastCheck, time.Second); !errors.Is(err, ErrClosed) {
		t.Errorf("deploy after shutdown: %v, want ErrClosed", err)
	}
	if err := r.Serve(); err != nil {
		t.Errorf("serve after shutdown: %v", err)
	}
	if err := r.Deploy(context.Background(), "no-port", fastCheck, time.Second); err == nil {
		t.Error("deploy to an address without a port: no error")
	}
}

func TestDeployBeforeServe(t *testing.T) {
	blue := newBackend(t, "blue")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := NewRoute("web", ln, RouteOptions{})
	deploy(t, r, blue.addr())
	// A connection made now waits in the backlog until Serve.
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	done := make(chan error, 1)
	go func() { done <- r.Serve() }()
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "blue" {
		t.Errorf("got %d %q, want 200 blue", resp.StatusCode, body)
	}
	if err := r.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestRedeploySameAddress(t *testing.T) {
	r := startRoute(t, RouteOptions{})
	blue := newBackend(t, "blue")
	deploy(t, r, blue.addr())
	since := r.Status().Since
	deploy(t, r, blue.addr())
	if st := r.Status(); st.Target != blue.addr() || !st.Since.Equal(since) {
		t.Errorf("status after the same deploy: %+v", st)
	}
}
