package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"
)

// ListenerOptions tune a Listener; the zero value serves plain HTTP with the defaults.
type ListenerOptions struct {
	// TLS, when set, makes the listener serve HTTPS with this configuration (its
	// GetCertificate picks the certificate by SNI; see pkg/proxy/certs). HTTP/2 is
	// offered next to HTTP/1.1.
	TLS *tls.Config
	// ReadHeaderTimeout and IdleTimeout are as in RouteOptions (10s, 75s).
	ReadHeaderTimeout time.Duration
	IdleTimeout       time.Duration
	// Logger receives the server's warnings; nil discards them.
	Logger *slog.Logger
}

// Listener serves one listening socket with a handler: a Router shared by any number of
// routes, or a single Route (which uses one for its own listener). Shutdown answers every
// connection it accepted before it closes them, so a restart or handover loses none.
type Listener struct {
	ln    net.Listener
	srv   *http.Server
	conns *conns
	tls   bool

	mu        sync.Mutex
	closed    bool
	accepting sync.WaitGroup // Serve's accept loop, which Shutdown waits for
}

// NewListener returns a Listener that will serve h on ln (the listener may come from
// Inherited.Listen, so that it survives restarts).
func NewListener(ln net.Listener, h http.Handler, o ListenerOptions) *Listener {
	if o.ReadHeaderTimeout <= 0 {
		o.ReadHeaderTimeout = DefaultReadHeaderTimeout
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = DefaultIdleTimeout
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	l := &Listener{ln: ln, conns: newConns(), tls: o.TLS != nil}
	l.srv = &http.Server{
		Handler:           h,
		ReadHeaderTimeout: o.ReadHeaderTimeout,
		IdleTimeout:       o.IdleTimeout,
		ErrorLog:          slog.NewLogLogger(o.Logger.Handler(), slog.LevelWarn),
		ConnState:         l.conns.track,
	}
	if o.TLS != nil {
		// ServeTLS adds h2 to the protocols offered; a clone leaves the caller's alone.
		l.srv.TLSConfig = o.TLS.Clone()
	}
	return l
}

// Addr returns the listening address.
func (l *Listener) Addr() net.Addr { return l.ln.Addr() }

// Socket returns the listening socket, for instance to hand it over to a new process
// (see ListenerFile).
func (l *Listener) Socket() net.Listener { return l.ln }

// TLS reports whether the listener serves HTTPS.
func (l *Listener) TLS() bool { return l.tls }

// Serve accepts connections until Shutdown; it then returns nil. Any other error is the
// listener's.
func (l *Listener) Serve() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.accepting.Add(1)
	l.mu.Unlock()
	defer l.accepting.Done()
	var err error
	if l.tls {
		err = l.srv.ServeTLS(l.ln, "", "")
	} else {
		err = l.srv.Serve(l.ln)
	}
	// Shutdown closes the listener itself before the server's shutdown.
	if errors.Is(err, http.ErrServerClosed) || errors.Is(err, net.ErrClosed) && l.isClosed() {
		return nil
	}
	return fmt.Errorf("serve on %s: %w", l.ln.Addr(), err)
}

func (l *Listener) isClosed() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.closed
}

// Shutdown stops accepting connections (closing the listener: a socket shared with
// another process stays open there), closes idle client connections, and serves the
// requests of the connections it has accepted (each connection closes after its answer)
// until ctx is done. Upgraded connections (WebSockets) are left to their routes' drains.
func (l *Listener) Shutdown(ctx context.Context) error {
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
	l.srv.SetKeepAlivesEnabled(false)
	err := l.ln.Close()
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	// Once the accept loop is over, every connection it accepted is tracked: each has its
	// request read and answered before the server's shutdown, which would close it
	// unanswered (see conns).
	l.accepting.Wait()
	l.conns.wait(ctx, newConnGrace)
	if serr := l.srv.Shutdown(ctx); serr != nil && !errors.Is(serr, net.ErrClosed) && err == nil {
		err = serr
	}
	return err
}
