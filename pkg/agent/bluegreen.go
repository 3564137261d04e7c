package agent

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/shipdeploy/ship/pkg/agentapi"
	"github.com/shipdeploy/ship/pkg/compose"
	"github.com/shipdeploy/ship/pkg/engine"
	"github.com/shipdeploy/ship/pkg/proxy"
)

// healthCheck is the check of a routed service's new container.
func (d *deployment) healthCheck(ship compose.Ship) proxy.HealthCheck {
	hc := d.req.health
	hc.Path = ship.Health
	return hc
}

func describeCheck(hc proxy.HealthCheck, addr string) string {
	return fmt.Sprintf("%s on %s: every %s, %s per attempt, up to %s", hc, addr, hc.Interval, hc.Timeout, hc.Deadline)
}

// routedService is a routed service being replaced: its x-ship settings and its
// routes (x-ship's, then x-ship.routes), which all move to the new container at once.
type routedService struct {
	name    string
	ship    compose.Ship
	network string
	drain   time.Duration
	slots   []*routeSlot
}

// routeSlot is one route of a routed service: lr the service's route there, if it has
// one; fresh the new one when the route is new or its addresses changed; target the
// one the new container goes on.
type routeSlot struct {
	port              int
	spec              routeSpec
	lr, fresh, target *liveRoute
}

// dropFresh removes the fresh routes after a failure: they never served.
func (d *deployment) dropFresh(ctx context.Context, rs *routedService) {
	for _, sl := range rs.slots {
		if sl.fresh != nil {
			d.a.dropRoute(context.WithoutCancel(ctx), sl.fresh)
		}
	}
}

// blueGreen replaces a routed service: the new container beside the old one, every
// route of the service switched once it is healthy, the old one drained and removed.
func (d *deployment) blueGreen(ctx context.Context, name string) error {
	a, app := d.a, d.req.app
	rs := &routedService{name: name, ship: d.p.Ship[name], network: engine.ServiceNetwork(d.p.Project, name)}
	rs.drain = rs.ship.Drain
	if rs.drain <= 0 {
		rs.drain = a.cfg.Drain
	}
	reps, err := d.eng.Replicas(ctx, app, name)
	if err != nil {
		return err
	}
	// Each route: the service's own, or a new one when it is new or its addresses
	// changed.
	routes := shipRoutes(rs.ship)
	for idx, spec := range d.specs(rs.ship) {
		sl := &routeSlot{port: routes[idx].Port, spec: spec, lr: a.route(app, name, idx)}
		sl.target = sl.lr
		rs.slots = append(rs.slots, sl)
		if sl.lr != nil && sl.lr.spec.sameBinding(spec) {
			continue
		}
		if sl.fresh, err = a.newRoute(app, name, idx, spec); err != nil {
			d.dropFresh(ctx, rs)
			return err
		}
		sl.target = sl.fresh
		d.em.info(agentapi.StepSwitch, name, "opening "+spec.String()+"; it serves once a container passes")
	}
	cur, err := d.upToDate(ctx, name, reps)
	if err != nil {
		d.dropFresh(ctx, rs)
		return err
	}
	if cur != nil && len(reps) == 1 {
		if addrs, err := rs.addrs(*cur); err == nil {
			return d.routeCurrent(ctx, rs, *cur, addrs)
		}
	}
	return d.replaceRouted(ctx, rs, reps)
}

// addrs are the addresses of r that the service's routes go to, in their order.
func (rs *routedService) addrs(r engine.Replica) ([]string, error) {
	var out []string
	for _, sl := range rs.slots {
		addr, err := r.Addr(rs.network, sl.port)
		if err != nil {
			return nil, err
		}
		out = append(out, addr)
	}
	return out, nil
}

// routeCurrent keeps the container that runs as wanted: routed already, or routed to
// once it passes its check.
func (d *deployment) routeCurrent(ctx context.Context, rs *routedService, cur engine.Replica, addrs []string) error {
	routed := true
	for i, sl := range rs.slots {
		routed = routed && sl.target.route.Target() == addrs[i]
	}
	if routed {
		d.em.info(agentapi.StepApply, rs.name, cur.Name+": unchanged, serving")
		d.recordRoute(rs, cur, addrs)
		return nil
	}
	// Running as wanted but not routed yet (or elsewhere): route it.
	hc := d.healthCheck(rs.ship)
	d.em.info(agentapi.StepHealth, rs.name, cur.Name+": unchanged; checking "+describeCheck(hc, addrs[0]))
	olds, err := d.switchRoute(ctx, rs, cur, addrs, hc)
	if err != nil {
		d.dropFresh(ctx, rs)
		return d.unhealthy(ctx, rs.name, cur, err, false)
	}
	// A caller that goes away now does not cut the requests in flight on the old target.
	drainAll(context.WithoutCancel(ctx), olds, rs.drain)
	d.finishRoutes(ctx, rs)
	return nil
}

// replaceRouted starts a new container beside reps, checks it, switches the routes to
// it and removes reps.
func (d *deployment) replaceRouted(ctx context.Context, rs *routedService, reps []engine.Replica) error {
	em, name := d.em, rs.name
	nr, err := d.eng.StartReplica(ctx, d.p.Project, name, engine.ReplicaOptions{
		Labels: d.a.containerLabels(d.req.sha), Progress: d.progress(agentapi.StepApply),
	})
	if err != nil {
		d.dropFresh(ctx, rs)
		return fmt.Errorf("start a new container of %s: %w", name, err)
	}
	d.started(name, nr)
	var olds []string
	for _, r := range reps {
		olds = append(olds, r.Name)
	}
	if len(olds) > 0 {
		em.info(agentapi.StepApply, name, fmt.Sprintf("%s started beside %s", nr.Name, strings.Join(olds, ", ")))
	}
	addrs, err := rs.addrs(nr)
	hc := d.healthCheck(rs.ship)
	if err == nil && rs.ship.Health == "" && nr.Health != "" {
		// No HTTP path: the image's HEALTHCHECK decides, then a TCP connect.
		em.info(agentapi.StepHealth, name, nr.Name+": waiting for the image's health check")
		err = d.eng.WaitReplica(ctx, nr, hc.Deadline, nil)
	}
	var replaced []*proxy.Replaced
	if err == nil {
		em.info(agentapi.StepHealth, name, nr.Name+": checking "+describeCheck(hc, addrs[0]))
		// The app is probed the moment it has started, and often, so that the check
		// passes on its first attempt once the app answers, not one interval later.
		quick := hc
		quick.Interval, quick.Deadline = quickProbe, max(hc.Interval, quickProbe)
		_ = quick.Wait(ctx, addrs[0])
		replaced, err = d.switchRoute(ctx, rs, nr, addrs, hc)
	}
	if err != nil {
		d.dropFresh(ctx, rs)
		return d.unhealthy(ctx, name, nr, err, true)
	}
	// Routes on addresses that changed go first (their requests finish).
	d.finishRoutes(ctx, rs)
	// The old containers drain and stop once the release is applied, in the
	// background: the result is reported meanwhile; a restore and the app's next run
	// wait for it.
	if len(reps) == 0 {
		return nil
	}
	d.sw.retire(func(ctx context.Context) {
		drainAll(ctx, replaced, rs.drain)
		for _, r := range reps {
			if err := d.eng.RemoveReplica(ctx, r, nil); err != nil {
				d.a.log.Warn("a replaced container could not be removed", "app", d.req.app, "service", name, "container", r.Name, "err", err)
				continue
			}
			d.a.log.Info("replaced container stopped and removed", "app", d.req.app, "service", name, "container", r.Name)
		}
	})
	em.info(agentapi.StepDrain, name, fmt.Sprintf("%s: draining for up to %s, then stopped and removed, in the background", strings.Join(olds, ", "), rs.drain))
	return nil
}

// drainAll drains the replaced targets of a service's routes, together.
func drainAll(ctx context.Context, olds []*proxy.Replaced, drain time.Duration) {
	var wg sync.WaitGroup
	for _, old := range olds {
		wg.Go(func() { old.Drain(ctx, drain) })
	}
	wg.Wait()
}

// quickProbe is how often a new container is probed until its first interval has
// passed.
const quickProbe = 25 * time.Millisecond

// finishRoutes makes the new routes (a new service or route, or changed addresses) the
// service's, shuts the ones they replace down, and those of routes the service no
// longer has (x-ship.routes shortened).
func (d *deployment) finishRoutes(ctx context.Context, rs *routedService) {
	for _, sl := range rs.slots {
		d.finishRoute(ctx, sl.lr, sl.fresh)
	}
	for _, lr := range d.a.appRoutes(d.req.app) {
		if lr.service == rs.name && lr.idx >= len(rs.slots) {
			d.em.info(agentapi.StepSwitch, rs.name, "no longer serving "+lr.listen)
			d.a.dropRoute(context.WithoutCancel(ctx), lr)
		}
	}
}

// finishRoute makes a new route (a new service, or a changed listen) the service's,
// and shuts the one it replaces down.
func (d *deployment) finishRoute(ctx context.Context, old, fresh *liveRoute) {
	if fresh == nil {
		return
	}
	if err := d.a.serveRoute(fresh); err != nil {
		d.em.warn(agentapi.StepSwitch, fresh.service, "serve "+fresh.listen+": "+err.Error())
	}
	if prev := d.a.setRoute(fresh); prev != nil {
		d.em.info(agentapi.StepSwitch, fresh.service, "no longer serving "+prev.listen)
		d.a.dropRoute(context.WithoutCancel(ctx), prev)
	} else if old != nil {
		d.a.dropRoute(context.WithoutCancel(ctx), old)
	}
}

// switchRoute health-checks addrs (the first with hc, the service's other routes by a
// TCP connect) and makes them the routes' targets in one step (proxy.SwapAll), saves
// the state the moment the routes switch, and returns the targets they replaced, for
// the caller to drain.
func (d *deployment) switchRoute(ctx context.Context, rs *routedService, r engine.Replica, addrs []string, hc proxy.HealthCheck) ([]*proxy.Replaced, error) {
	swaps := make([]proxy.SwapTarget, len(rs.slots))
	for i, sl := range rs.slots {
		check := hc
		if i > 0 {
			check.Path = ""
		}
		swaps[i] = proxy.SwapTarget{Route: sl.target.route, Addr: addrs[i], Check: check}
	}
	olds, err := proxy.SwapAll(ctx, swaps)
	if err != nil {
		return nil, err
	}
	// From here on the release serves: a later failure must undo it.
	d.sw.changed = true
	d.recordRoute(rs, r, addrs)
	for i, sl := range rs.slots {
		msg := fmt.Sprintf("%s: healthy; %s now routes to %s", r.Name, sl.target.listen, addrs[i])
		if olds[i] != nil {
			msg += fmt.Sprintf(" (was %s); draining the old container for up to %s", olds[i].Addr(), rs.drain)
		}
		d.em.info(agentapi.StepSwitch, rs.name, msg)
	}
	return olds, nil
}

// recordRoute saves the service's routes with r as their live container.
func (d *deployment) recordRoute(rs *routedService, r engine.Replica, addrs []string) {
	release := r.Labels[ReleaseLabel]
	if release == "" {
		release = d.req.sha
	}
	ship := rs.ship
	d.a.saveState(func(s *State) {
		app := s.app(d.req.app, d.req.path)
		since := time.Now().UTC()
		if old := app.Routes[rs.name]; old != nil && old.Container == r.ID {
			since = old.Since
		}
		var first *RouteState
		for i, sl := range rs.slots {
			spec := sl.spec
			e := &RouteState{
				Service: rs.name, Listen: spec.Listen, Port: sl.port, Network: rs.network,
				Drain: agentapi.Duration(ship.Drain), Container: r.ID, Name: r.Name, Target: addrs[i],
				Release: release, Since: since,
				ListenTLS: spec.ListenTLS, Hosts: spec.Hosts, Paths: spec.Paths, TLS: spec.TLS, Cert: spec.Cert, Key: spec.Key,
			}
			if i == 0 {
				e.Health, first = ship.Health, e
				continue
			}
			first.More = append(first.More, e)
		}
		app.Routes[rs.name] = first
	})
}

// unhealthy handles a new container that failed: its last log lines go into the
// events and the result, and it is removed (when remove) so that nothing of it stays.
func (d *deployment) unhealthy(ctx context.Context, name string, r engine.Replica, cause error, remove bool) error {
	bg := context.WithoutCancel(ctx)
	var logs []string
	var he *engine.HealthError
	if errors.As(cause, &he) {
		logs = he.Logs
	} else {
		lctx, cancel := context.WithTimeout(bg, 10*time.Second)
		logs, _ = d.eng.TailLogs(lctx, r.ID, failLogLines)
		cancel()
	}
	err := fmt.Errorf("service %s: the new container %s failed its health check; it never received traffic: %w", name, r.Name, cause)
	if !remove {
		err = fmt.Errorf("service %s: container %s failed its health check, so it was not routed: %w", name, r.Name, cause)
	}
	if ctx.Err() != nil {
		err = fmt.Errorf("service %s: the deploy was stopped while %s was checked: %w", name, r.Name, ctx.Err())
	}
	d.em.emit(agentapi.Event{Step: agentapi.StepHealth, Service: name, Level: agentapi.LevelError, Msg: err.Error(), Logs: logs})
	if remove {
		if rerr := d.eng.RemoveReplica(bg, r, nil); rerr != nil {
			d.em.warn(agentapi.StepHealth, name, fmt.Sprintf("%s: could not be removed: %v", r.Name, rerr))
		} else {
			d.em.info(agentapi.StepHealth, name, r.Name+": removed; the old container keeps serving")
		}
	}
	return &failure{err: err, logs: logs}
}
