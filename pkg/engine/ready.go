package engine

import (
	"context"
	"strings"
	"time"

	"github.com/moby/moby/api/types/container"
	"golang.org/x/sync/errgroup"
)

// waitReady waits until the service's container c is ready: healthy, or running when
// it has no health check, and, with an HTTP health check, answering it 2xx.
//
// Over a far link each request is a round trip, so the waits are made to overlap: a
// container that Up left running is taken as its container list showed it a moment
// ago (healthy, or running without a health check, needs no inspect, and its address
// there is the GET's), and the GET starts beside the engine's health wait, from the
// first address known, rather than after it. Both must succeed, as before; only the
// order of the requests changed.
func (r *run) waitReady(ctx context.Context, c target, deadline time.Time) error {
	r.mu.Lock()
	seen, left := r.seen[c.service]
	r.mu.Unlock()
	health := func(ctx context.Context, first func(Replica)) error {
		if left {
			if msg, ok := listedReady(seen); ok {
				// The same events as a wait that found it so at once.
				r.rep.event(c.service, c.name, "wait", "waiting until healthy")
				r.rep.event(c.service, c.name, "healthy", msg)
				return nil
			}
		}
		return r.e.pollHealthy(ctx, c, r.timeout, false, r.rep, first)
	}
	h, ok := r.http[c.service]
	if !ok || h.Path == "" || h.Port <= 0 {
		return health(ctx, nil)
	}

	first := make(chan Replica, 1)
	if left {
		first <- listedReplica(seen)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		return health(gctx, func(rp Replica) {
			select {
			case first <- rp:
			default: // the list's is there already
			}
		})
	})
	var answered string
	g.Go(func() (err error) {
		answered, err = r.e.waitHTTP(gctx, c, h, ServiceNetwork(r.p, c.service), deadline, r.rep, first)
		return err
	})
	if err := g.Wait(); err != nil {
		return err
	}
	r.rep.event(c.service, c.name, "healthy", "GET "+h.Path+" answered "+answered)
	return nil
}

// listedReady says whether a container list showed c ready, as waitHealthy would find
// it at once: running and healthy, or running without a health check.
func listedReady(c container.Summary) (string, bool) {
	if c.State != container.StateRunning {
		return "", false
	}
	if c.Health != nil { // API 1.52 and later
		switch c.Health.Status {
		case container.Healthy:
			return "healthy", true
		case container.NoHealthcheck:
			return "running (no health check)", true
		}
		return "", false
	}
	// Before, the status text says it: "Up 2 hours (healthy)", "Up 2 hours (health:
	// starting)"; without a health check there is no parenthesis.
	switch {
	case strings.HasSuffix(c.Status, "(healthy)"):
		return "healthy", true
	case !strings.Contains(c.Status, "("):
		return "running (no health check)", true
	}
	return "", false
}

// listedReplica is the Replica a container list shows: its state and addresses.
func listedReplica(c container.Summary) Replica {
	r := Replica{IPs: map[string]string{}, Labels: c.Labels, ImageID: c.Labels[labelImage]}
	r.ID, r.Image, r.State = c.ID, c.Image, string(c.State)
	r.Name = containerLabelName(c)
	if ns := c.NetworkSettings; ns != nil {
		for name, ep := range ns.Networks {
			if ep != nil {
				r.IPs[name] = addrString(ep.IPAddress)
			}
		}
	}
	return r
}
