package proxy

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"net"
	"slices"
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

// SwapTarget is one route's part of SwapAll: the address it goes to and its check.
type SwapTarget struct {
	Route *Route
	Addr  string
	Check HealthCheck
}

// SwapAll is Swap for several routes at once (the routes of one service): every address
// is health-checked, then each becomes its route's live target in one step, under the
// locks of all the routes, so that no request sees one route switched and another not.
// If a check fails or a route is shut down, no route is touched. It returns what each
// swap replaced, in the order of swaps (a nil entry when nothing was).
func SwapAll(ctx context.Context, swaps []SwapTarget) ([]*Replaced, error) {
	for _, s := range swaps {
		if _, _, err := net.SplitHostPort(s.Addr); err != nil {
			return nil, fmt.Errorf("route %s: deploy %q: %w", s.Route.name, s.Addr, err)
		}
	}
	// The deploy locks in the order of the routes' names: two SwapAll of the same
	// routes never wait for each other crosswise.
	order := make([]int, len(swaps))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(x, y int) int { return cmp.Compare(swaps[x].Route.name, swaps[y].Route.name) })
	for _, i := range order {
		swaps[i].Route.deployMu.Lock()
		defer swaps[i].Route.deployMu.Unlock()
	}
	for _, s := range swaps {
		if s.Route.isClosed() {
			return nil, fmt.Errorf("route %s: deploy %s: %w", s.Route.name, s.Addr, ErrClosed)
		}
		if err := s.Check.Wait(ctx, s.Addr); err != nil {
			return nil, fmt.Errorf("route %s: deploy %s: %w", s.Route.name, s.Addr, err)
		}
	}
	for _, i := range order {
		swaps[i].Route.mu.Lock()
	}
	var closed *Route
	for _, s := range swaps {
		if s.Route.closed {
			closed = s.Route
		}
	}
	out := make([]*Replaced, len(swaps))
	if closed == nil {
		for i, s := range swaps {
			r := s.Route
			if old := r.live; old == nil || old.addr != s.Addr {
				r.live = newTarget(s.Addr, &r.opts, r.log)
				if old != nil {
					out[i] = &Replaced{t: old, log: r.log}
				}
			}
		}
	}
	for _, i := range order {
		swaps[i].Route.mu.Unlock()
	}
	if closed != nil {
		return nil, fmt.Errorf("route %s: %w", closed.name, ErrClosed)
	}
	for i, s := range swaps {
		s.Route.log.Info("target switched", "target", s.Addr, "old", out[i].Addr(), "with", len(swaps)-1)
	}
	return out, nil
}
