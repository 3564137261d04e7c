package proxy

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"sync"
	"sync/atomic"
	"time"
)

// errTargetClosed fails a dial to a target whose drain is over.
var errTargetClosed = errors.New("target closed after its drain")

// target is one backend address of a route with everything that belongs to it alone: its
// own transport (so that its backend connections can be closed when it is drained without
// touching the next target's), its in-flight count (what a drain waits for) and counters.
type target struct {
	addr  string
	since time.Time
	rp    *httputil.ReverseProxy
	tr    *http.Transport
	log   *slog.Logger

	inflight atomic.Int64
	requests atomic.Uint64
	draining atomic.Bool
	idle     chan struct{} // a token when inflight reaches 0 while draining

	connMu sync.Mutex
	conns  map[*trackedConn]struct{}
	closed bool
	dialer net.Dialer
}

func newTarget(addr string, o *RouteOptions, log *slog.Logger) *target {
	t := &target{
		addr:   addr,
		since:  time.Now(),
		log:    log.With("target", addr),
		idle:   make(chan struct{}, 1),
		conns:  make(map[*trackedConn]struct{}),
		dialer: net.Dialer{Timeout: o.DialTimeout, KeepAlive: 30 * time.Second},
	}
	t.tr = &http.Transport{
		Proxy:                 nil, // never an HTTP_PROXY from the environment
		DialContext:           t.dial,
		MaxIdleConns:          0,
		MaxIdleConnsPerHost:   o.MaxIdleConns,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: o.ResponseTimeout,
		ExpectContinueTimeout: 1 * time.Second,
		// The client's Accept-Encoding goes through as it is; the transport must not add
		// its own and decompress behind the client's back.
		DisableCompression: true,
	}
	trust := o.TrustForwarded
	t.rp = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme = "http"
			pr.Out.URL.Host = addr
			// pr.Out.Host stays the client's Host: the app sees the name it was asked for.
			if trust {
				pr.Out.Header["X-Forwarded-For"] = pr.In.Header["X-Forwarded-For"]
			}
			pr.SetXForwarded()
			// X-Real-IP is the client's address as this proxy saw it, like
			// X-Forwarded-For's last entry: a client cannot name another address.
			if ip, _, err := net.SplitHostPort(pr.In.RemoteAddr); err == nil && (!trust || pr.In.Header.Get("X-Real-IP") == "") {
				pr.Out.Header.Set("X-Real-IP", ip)
			} else if !trust {
				pr.Out.Header.Del("X-Real-IP")
			}
			if trust {
				if v := pr.In.Header.Get("X-Forwarded-Host"); v != "" {
					pr.Out.Header.Set("X-Forwarded-Host", v)
				}
				if v := pr.In.Header.Get("X-Forwarded-Proto"); v != "" {
					pr.Out.Header.Set("X-Forwarded-Proto", v)
				}
			}
		},
		Transport: t.tr,
		// Responses without a Content-Length and text/event-stream are flushed at once
		// by ReverseProxy itself (it uses -1 for them); others are written through the
		// server's buffer, which is what a known-length body wants.
		FlushInterval: 0,
		BufferPool:    bufferPool{},
		ErrorLog:      slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		ErrorHandler:  t.fail,
	}
	return t
}

// acquire and release count the requests this target is serving; a drain waits for the
// count to reach zero. acquire is called under the route's read lock only.
func (t *target) acquire() { t.inflight.Add(1) }

func (t *target) release() {
	if t.inflight.Add(-1) == 0 && t.draining.Load() {
		select {
		case t.idle <- struct{}{}:
		default:
		}
	}
}

// drain waits until no request is in flight on t, timeout passes or ctx is done, and
// returns how many requests were still in flight. The caller has already made sure that
// no new request can pick t.
func (t *target) drain(ctx context.Context, timeout time.Duration) int64 {
	t.draining.Store(true)
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		n := t.inflight.Load()
		if n <= 0 {
			return 0
		}
		select {
		case <-t.idle:
		case <-timer.C:
			return t.inflight.Load()
		case <-ctx.Done():
			return t.inflight.Load()
		}
	}
}

// close ends every backend connection of t, idle or busy (a request still running on one
// fails with 502; an upgraded connection ends), and refuses new dials.
func (t *target) close() {
	t.connMu.Lock()
	t.closed = true
	conns := make([]*trackedConn, 0, len(t.conns))
	for c := range t.conns {
		conns = append(conns, c)
	}
	t.connMu.Unlock()
	t.tr.CloseIdleConnections()
	for _, c := range conns {
		c.Close()
	}
}

func (t *target) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := t.dialer.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	tc := &trackedConn{Conn: c, t: t}
	t.connMu.Lock()
	if t.closed {
		t.connMu.Unlock()
		c.Close()
		return nil, &net.OpError{Op: "dial", Net: network, Err: errTargetClosed}
	}
	t.conns[tc] = struct{}{}
	t.connMu.Unlock()
	return tc, nil
}

// fail is the ReverseProxy's error handler: it answers 502 (504 for a timeout), or leaves
// the request to be retried elsewhere when nothing was sent (see retryable).
func (t *target) fail(w http.ResponseWriter, r *http.Request, err error) {
	if r.Context().Err() != nil && errors.Is(err, context.Canceled) {
		// The client went away; there is nobody to answer.
		t.log.Debug("client gone", "path", r.URL.Path)
		return
	}
	if rw, ok := w.(*responseWriter); ok && rw.canRetry && isDialError(err) {
		rw.dialErr = err
		return
	}
	t.log.Warn("proxy error", "method", r.Method, "path", r.URL.Path, "err", err)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, context.DeadlineExceeded) {
		writeError(w, http.StatusGatewayTimeout, "504 gateway timeout: the service did not answer in time\n")
		return
	}
	writeError(w, http.StatusBadGateway, "502 bad gateway: the service is not reachable\n")
}

func writeError(w http.ResponseWriter, code int, body string) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = w.Write([]byte(body))
}

func isDialError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// trackedConn is a backend connection that removes itself from its target's set when it
// is closed.
type trackedConn struct {
	net.Conn
	t    *target
	once sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.t.connMu.Lock()
		delete(c.t.conns, c)
		c.t.connMu.Unlock()
	})
	return c.Conn.Close()
}

// bufferPool gives ReverseProxy its copy buffers, so that a request does not allocate 32 KiB.
type bufferPool struct{}

var buffers = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func (bufferPool) Get() []byte  { return *buffers.Get().(*[]byte) }
func (bufferPool) Put(b []byte) { buffers.Put(&b) }
