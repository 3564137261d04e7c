package proxy

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"time"
)

// Deploy is Swap followed by Drain: it makes addr (host:port) the route's target and
// returns once the target it replaced has drained (within drain, DefaultDrain when zero)
// and its backend connections are closed; the caller may then stop the old container. ctx
// bounds the health check only: a caller that goes away during the drain does not cut
// the requests in flight. A drain that times out is logged, not an error: the new target
// is live either way. Deploying the live address again only health-checks it.
func (r *Route) Deploy(ctx context.Context, addr string, hc HealthCheck, drain time.Duration) error {
	old, err := r.Swap(ctx, addr, hc)
	if err != nil {
		return err
	}
	old.Drain(context.WithoutCancel(ctx), drain)
	return nil
}

// Swap health-checks addr (host:port) outside any lock and, once it passes, makes it the
// live target in one step under a short write lock: every request from then on goes to
// addr. It returns the target it replaced, for the caller to Drain when it has recorded
// the switch; nil when the route had no target, or addr was already live (then Swap only
// health-checks it). If the check fails the route is not touched and the error Is
// ErrUnhealthy; on a route that has been shut down it Is ErrClosed. Swaps of one route are
// serialized up to the swap; the drains of what they replaced may overlap.
func (r *Route) Swap(ctx context.Context, addr string, hc HealthCheck) (*Replaced, error) {
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return nil, fmt.Errorf("route %s: deploy %q: %w", r.name, addr, err)
	}
	old, err := r.checkAndSwap(ctx, addr, hc)
	if err != nil {
		return nil, fmt.Errorf("route %s: deploy %s: %w", r.name, addr, err)
	}
	if old == nil {
		return nil, nil
	}
	return &Replaced{t: old, log: r.log}, nil
}

// Replaced is a target that a Swap took out of service: no new request goes to it, and
// the requests in flight on it run on until Drain. A nil *Replaced (nothing was replaced)
// has no address and drains at once.
type Replaced struct {
	t   *target
	log *slog.Logger
}

// Addr returns the replaced target's address, or "" for a nil Replaced.
func (p *Replaced) Addr() string {
	if p == nil {
		return ""
	}
	return p.t.addr
}

// Drain waits until the requests in flight on the replaced target have finished, timeout
// (DefaultDrain when zero) has passed or ctx is done, then closes its backend connections,
// which ends the requests still running there (they get 502) and upgraded connections such
// as WebSockets. It returns how many requests it cut: 0 when the target drained. Call it
// once.
func (p *Replaced) Drain(ctx context.Context, timeout time.Duration) int {
	if p == nil {
		return 0
	}
	if timeout <= 0 {
		timeout = DefaultDrain
	}
	start := time.Now()
	left := p.t.drain(ctx, timeout)
	if left > 0 {
		p.log.Warn("drain timed out: closing requests still in flight", "target", p.t.addr, "in_flight", left, "drain", timeout.String())
	} else {
		p.log.Info("old target drained", "target", p.t.addr, "took", time.Since(start).Round(time.Millisecond).String())
	}
	p.t.close()
	return int(left)
}

// checkAndSwap health-checks addr and makes it the live target; it returns the target
// it replaced, if any, for the caller to drain.
func (r *Route) checkAndSwap(ctx context.Context, addr string, hc HealthCheck) (*target, error) {
	r.deployMu.Lock()
	defer r.deployMu.Unlock()
	if r.isClosed() {
		return nil, ErrClosed
	}
	start := time.Now()
	if err := hc.Wait(ctx, addr); err != nil {
		return nil, err
	}
	healthy := time.Since(start)
	next := newTarget(addr, &r.opts, r.log)
	r.mu.Lock()
	old, closed := r.live, r.closed
	switch {
	case closed:
	case old != nil && old.addr == addr:
		next = nil
	default:
		r.live = next
	}
	r.mu.Unlock()
	switch {
	case closed:
		return nil, ErrClosed
	case next == nil:
		return nil, nil
	}
	r.log.Info("target switched", "target", addr, "old", oldAddr(old), "healthy_after", healthy.Round(time.Millisecond).String())
	return old, nil
}

func oldAddr(t *target) string {
	if t == nil {
		return ""
	}
	return t.addr
}
