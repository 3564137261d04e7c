package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// ErrClosed is returned (wrapped) by Swap and Deploy on a route that has been shut down.
var ErrClosed = errors.New("route closed")

// Defaults of RouteOptions.
const (
	DefaultReadHeaderTimeout = 10 * time.Second
	DefaultIdleTimeout       = 75 * time.Second
	DefaultDialTimeout       = 5 * time.Second
	DefaultResponseTimeout   = 60 * time.Second
	DefaultMaxIdleConns      = 256
	DefaultDrain             = 30 * time.Second
)

// RouteOptions tune a route; the zero value gives the defaults.
type RouteOptions struct {
	// ReadHeaderTimeout bounds the time a client has to send a request's headers (10s).
	ReadHeaderTimeout time.Duration
	// IdleTimeout is how long a client's keep-alive connection may wait for its next
	// request (75s).
	IdleTimeout time.Duration
	// DialTimeout bounds opening a connection to the target (5s).
	DialTimeout time.Duration
	// ResponseTimeout bounds the wait for the target's response headers once the request
	// has been sent (60s). The body, a stream or an upgraded connection may then run on
	// for as long as they last.
	ResponseTimeout time.Duration
	// MaxIdleConns is the number of idle keep-alive connections kept to a target (256).
	MaxIdleConns int
	// TrustForwarded keeps the X-Forwarded-For/-Host/-Proto and X-Real-IP headers a
	// client sends (appending to X-Forwarded-For); set it only when another proxy that sets them is
	// in front. By default they are replaced, so a client cannot forge them.
	TrustForwarded bool
	// Logger receives warnings (proxy errors, drains that timed out) and deploy events.
	// Nil discards them.
	Logger *slog.Logger
}

func (o RouteOptions) withDefaults() RouteOptions {
	if o.ReadHeaderTimeout <= 0 {
		o.ReadHeaderTimeout = DefaultReadHeaderTimeout
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = DefaultIdleTimeout
	}
	if o.DialTimeout <= 0 {
		o.DialTimeout = DefaultDialTimeout
	}
	if o.ResponseTimeout <= 0 {
		o.ResponseTimeout = DefaultResponseTimeout
	}
	if o.MaxIdleConns <= 0 {
		o.MaxIdleConns = DefaultMaxIdleConns
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// Route is one routed service: a listener and the live target that its requests go to.
// The target is picked per request, so keep-alive client connections move to a new target
// at the swap. A Route is an http.Handler; Serve serves it on its listener.
type Route struct {
	name string
	opts RouteOptions
	log  *slog.Logger
	l    *Listener // nil for a route served through a Router

	deployMu sync.Mutex // one deploy's health check and swap at a time

	mu     sync.RWMutex // guards live and closed; held for writing only to swap
	live   *target
	closed bool

	requests atomic.Uint64
	serveErr atomic.Pointer[error] // set when Serve ended with an error under a Server
}

// NewRoute returns a route named name (the compose service, for logs and status) that
// will serve on ln. The listener is passed in so that it can come from systemd socket
// activation or from a previous shipd (see Inherit). The route has no target until the
// first Deploy: until then it answers 503. Deploy may come before Serve: a shipd that
// restarts should give each route its target first, so that connections wait in the
// listener's backlog rather than get a 503.
//
// With a nil ln the route has no listener of its own: it is served through a Router
// (Router.Set), which shares one listener between any number of routes; Serve then
// fails, and Shutdown only refuses deploys and drains the live target.
func NewRoute(name string, ln net.Listener, o RouteOptions) *Route {
	o = o.withDefaults()
	r := &Route{
		name: name,
		opts: o,
		log:  o.Logger.With("route", name),
	}
	if ln != nil {
		r.l = NewListener(ln, r, ListenerOptions{
			ReadHeaderTimeout: o.ReadHeaderTimeout,
			IdleTimeout:       o.IdleTimeout,
			Logger:            r.log,
		})
	}
	return r
}

// Name returns the route's name.
func (r *Route) Name() string { return r.name }

// Listener returns the route's listener, for instance to hand its socket over to a new
// process (see ListenerFile); nil for a route served through a Router.
func (r *Route) Listener() net.Listener {
	if r.l == nil {
		return nil
	}
	return r.l.Socket()
}

// Target returns the address of the live target, or "" before the first deploy.
func (r *Route) Target() string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.live == nil {
		return ""
	}
	return r.live.addr
}

// Serve accepts connections on the route's listener until Shutdown; it then returns nil.
// Any other error is the listener's, or that the route has no listener of its own.
func (r *Route) Serve() error {
	if r.l == nil {
		return fmt.Errorf("route %s: no listener of its own: serve it through a Router", r.name)
	}
	if r.isClosed() {
		return nil
	}
	if err := r.l.Serve(); err != nil {
		return fmt.Errorf("route %s: %w", r.name, err)
	}
	return nil
}

// Shutdown stops accepting connections (closing the listener: a socket shared with
// another process or route stays open there), closes idle client connections, serves the
// requests of the connections it has accepted (each connection closes after its answer)
// until ctx is done, then closes the target's backend connections (ending upgraded
// connections such as WebSockets) and refuses deploys. A route served through a Router
// has no listener to stop: remove it from the Router first, and Shutdown drains it.
func (r *Route) Shutdown(ctx context.Context) error {
	r.mu.Lock()
	r.closed = true
	r.mu.Unlock()
	var err error
	if r.l != nil {
		err = r.l.Shutdown(ctx)
	}
	r.mu.RLock()
	live := r.live
	r.mu.RUnlock()
	if live != nil {
		// Upgraded connections (WebSockets) are not waited for by the server: their
		// requests are, here, for as long as ctx allows.
		wait := DefaultDrain
		if d, ok := ctx.Deadline(); ok {
			wait = time.Until(d)
		}
		if left := live.drain(ctx, wait); left > 0 {
			r.log.Warn("shutdown: closing requests still in flight", "target", live.addr, "in_flight", left)
		}
		live.close()
	}
	if err != nil {
		return fmt.Errorf("route %s: shutdown: %w", r.name, err)
	}
	return nil
}

func (r *Route) isClosed() bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.closed
}

// ServeHTTP proxies req to the live target: 503 before the first deploy, 502 (504 on a
// timeout) when the target fails. A request that has no body and could not even connect
// to its target (nothing was sent) is retried once on the live target if a deploy has
// switched to another one meanwhile.
func (r *Route) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	r.requests.Add(1)
	t := r.pick()
	if t == nil {
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusServiceUnavailable, "503 service unavailable: no target deployed yet\n")
		return
	}
	r.serveOn(t, w, req)
}

// serveOn proxies req to t, which pick has counted it on, and retries it on the live
// target when that is allowed (see ServeHTTP).
func (r *Route) serveOn(t *target, w http.ResponseWriter, req *http.Request) {
	rw := getResponseWriter(w)
	rw.canRetry = req.Body == nil || req.Body == http.NoBody || req.ContentLength == 0 && req.TransferEncoding == nil
	t.serve(rw, req)
	err := rw.dialErr
	putResponseWriter(rw)
	if err == nil {
		return
	}
	if next := r.pick(); next != nil {
		if next != t {
			t.log.Info("retrying on the live target", "method", req.Method, "path", req.URL.Path, "live", next.addr, "err", err)
			next.serve(w, req)
			return
		}
		next.release()
	}
	t.log.Warn("proxy error", "method", req.Method, "path", req.URL.Path, "err", err)
	writeError(w, http.StatusBadGateway, "502 bad gateway: the service is not reachable\n")
}

// pick returns the live target with the request counted on it (release it when done).
func (r *Route) pick() *target {
	r.mu.RLock()
	t := r.live
	if t != nil {
		t.acquire()
	}
	r.mu.RUnlock()
	return t
}

// serve proxies one request on t and releases it.
func (t *target) serve(w http.ResponseWriter, req *http.Request) {
	defer t.release()
	t.requests.Add(1)
	t.rp.ServeHTTP(w, req)
}

// Status is a route's state for shipd's status report.
type Status struct {
	Name     string    `json:"name"`
	Listen   string    `json:"listen"`
	Target   string    `json:"target,omitempty"`
	Since    time.Time `json:"since,omitzero"`  // when Target became live
	Requests uint64    `json:"requests"`        // served by the route since it started
	Served   uint64    `json:"served"`          // of them, by the live target
	InFlight int64     `json:"in_flight"`       // on the live target now
	Error    string    `json:"error,omitempty"` // why the route stopped serving, if it did
}

// Status reports the route's listener, live target and counters.
func (r *Route) Status() Status {
	s := Status{Name: r.name, Requests: r.requests.Load()}
	if r.l != nil {
		s.Listen = r.l.Addr().String()
	}
	r.mu.RLock()
	t := r.live
	r.mu.RUnlock()
	if t != nil {
		s.Target = t.addr
		s.Since = t.since
		s.Served = t.requests.Load()
		s.InFlight = t.inflight.Load()
	}
	if err := r.serveErr.Load(); err != nil {
		s.Error = (*err).Error()
	}
	return s
}

// responseWriter lets the error handler leave a request for a retry instead of answering.
// It unwraps to the server's writer, so flushing and hijacking (WebSockets) still work.
type responseWriter struct {
	http.ResponseWriter
	canRetry bool
	dialErr  error
}

func (w *responseWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

var responseWriters = sync.Pool{New: func() any { return new(responseWriter) }}

func getResponseWriter(w http.ResponseWriter) *responseWriter {
	rw := responseWriters.Get().(*responseWriter)
	rw.ResponseWriter = w
	return rw
}

func putResponseWriter(rw *responseWriter) {
	*rw = responseWriter{}
	responseWriters.Put(rw)
}
