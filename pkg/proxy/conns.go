package proxy

import (
	"context"
	"net"
	"net/http"
	"sync"
	"time"
)

// newConnGrace is how long a shutdown waits for a client connection that has sent no
// request yet, as net/http's Shutdown treats one silent for that long as idle.
const newConnGrace = 5 * time.Second

// conns tracks a route's client connections that have a request to serve: new ones
// whose first request has not been read yet, and active ones. A shutdown waits for them
// before http.Server.Shutdown, which would close, unanswered, a connection whose request
// it reads after the shutdown began (the client sees EOF on a fresh connection, which it
// does not retry), as happens to a connection accepted just before a handover.
type conns struct {
	mu      sync.Mutex
	busy    map[net.Conn]time.Time // new since when; zero when active
	waiting bool
	changed chan struct{} // a token for a waiter when a connection is done
}

func newConns() *conns {
	return &conns{busy: make(map[net.Conn]time.Time), changed: make(chan struct{}, 1)}
}

// track is the server's ConnState hook.
func (c *conns) track(conn net.Conn, st http.ConnState) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch st {
	case http.StateNew:
		c.busy[conn] = time.Now()
		return
	case http.StateActive:
		c.busy[conn] = time.Time{}
		return
	}
	// Idle, hijacked (the live target's drain has it) or closed: nothing to serve.
	delete(c.busy, conn)
	if c.waiting {
		select {
		case c.changed <- struct{}{}:
		default:
		}
	}
}

// wait returns when no connection has a request to serve, ignoring new ones silent for
// longer than grace, or when ctx is done.
func (c *conns) wait(ctx context.Context, grace time.Duration) {
	timer := time.NewTimer(grace)
	defer timer.Stop()
	for {
		c.mu.Lock()
		n, next := c.pending(grace)
		c.waiting = n > 0
		c.mu.Unlock()
		if n == 0 {
			return
		}
		timer.Reset(next)
		select {
		case <-c.changed:
		case <-timer.C:
		case <-ctx.Done():
			return
		}
	}
}

// pending counts the busy connections and says when the oldest silent new one among
// them reaches its grace.
func (c *conns) pending(grace time.Duration) (int, time.Duration) {
	n, next := 0, grace
	for _, since := range c.busy {
		if since.IsZero() {
			n++
			continue
		}
		left := grace - time.Since(since)
		if left <= 0 {
			continue
		}
		n++
		next = min(next, left)
	}
	return n, next
}
