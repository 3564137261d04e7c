package agent

import (
	"context"
	"errors"
	"fmt"
	"strings"
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

// routedService is a routed service being replaced: its x-ship settings, the route it
// serves on, and the fresh route when the service is new or its listen changed.
type routedService struct {
	name    string
	ship    compose.Ship
	network string
	drain   time.Duration
	// lr is the service's route, if it has one; fresh the new one; target the one the
	// new container goes on.
	lr, fresh, target *liveRoute
}

// dropFresh removes the fresh route after a failure: it never served.
func (d *deployment) dropFresh(ctx context.Context, rs *routedService) {
	if rs.fresh != nil {
		d.a.dropRoute(context.WithoutCancel(ctx), rs.fresh)
	}
}

// blueGreen replaces a routed service: the new container beside the old one, the
// route switched once it is healthy, the old one drained and removed.
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
	// The route: the service's own, or a new one when it is new or its listen changed.
	rs.lr = a.route(app, name)
	rs.target = rs.lr
	if spec := d.spec(rs.ship); rs.lr == nil || !rs.lr.spec.sameBinding(spec) {
		if rs.fresh, err = a.newRoute(app, name, spec); err != nil {
			return err
		}
		rs.target = rs.fresh
		d.em.info(agentapi.StepSwitch, name, "opening "+spec.String()+"; it serves once a container passes")
	}
	cur, err := d.upToDate(ctx, name, reps)
	if err != nil {
		d.dropFresh(ctx, rs)
		return err
	}
	if cur != nil && len(reps) == 1 {
		if addr, err := cur.Addr(rs.network, rs.ship.Port); err == nil {
			return d.routeCurrent(ctx, rs, *cur, addr)
		}
	}
	return d.replaceRouted(ctx, rs, reps)
}

// routeCurrent keeps the container that runs as wanted: routed already, or routed to
// once it passes its check.
func (d *deployment) routeCurrent(ctx context.Context, rs *routedService, cur engine.Replica, addr string) error {
	if rs.target.route.Target() == addr {
		d.em.info(agentapi.StepApply, rs.name, cur.Name+": unchanged, serving")
		d.recordRoute(rs.name, rs.ship, rs.network, cur, addr)
		return nil
	}
	// Running as wanted but not routed yet (or elsewhere): route it.
	hc := d.healthCheck(rs.ship)
	d.em.info(agentapi.StepHealth, rs.name, cur.Name+": unchanged; checking "+describeCheck(hc, addr))
	old, err := d.switchRoute(ctx, rs, cur, addr, hc)
	if err != nil {
		d.dropFresh(ctx, rs)
		return d.unhealthy(ctx, rs.name, cur, err, false)
	}
	// A caller that goes away now does not cut the requests in flight on the old target.
	old.Drain(context.WithoutCancel(ctx), rs.drain)
	d.finishRoute(ctx, rs.lr, rs.fresh)
	return nil
}

// replaceRouted starts a new container beside reps, checks it, switches the route to
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
	addr, err := nr.Addr(rs.network, rs.ship.Port)
	hc := d.healthCheck(rs.ship)
	if err == nil && rs.ship.Health == "" && nr.Health != "" {
		// No HTTP path: the image's HEALTHCHECK decides, then a TCP connect.
		em.info(agentapi.StepHealth, name, nr.Name+": waiting for the image's health check")
		err = d.eng.WaitReplica(ctx, nr, hc.Deadline, nil)
	}
	var old *proxy.Replaced
	if err == nil {
		em.info(agentapi.StepHealth, name, nr.Name+": checking "+describeCheck(hc, addr))
		// The app is probed the moment it has started, and often, so that the check
		// passes on its first attempt once the app answers, not one interval later.
		quick := hc
		quick.Interval, quick.Deadline = quickProbe, max(hc.Interval, quickProbe)
		_ = quick.Wait(ctx, addr)
		old, err = d.switchRoute(ctx, rs, nr, addr, hc)
	}
	if err != nil {
		d.dropFresh(ctx, rs)
		return d.unhealthy(ctx, name, nr, err, true)
	}
	// A route on a listen address that changed goes first (its requests finish).
	d.finishRoute(ctx, rs.lr, rs.fresh)
	// The old containers drain and stop once the release is applied, in the
	// background: the result is reported meanwhile; a restore and the app's next run
	// wait for it.
	if len(reps) == 0 {
		return nil
	}
	d.sw.retire(func(ctx context.Context) {
		old.Drain(ctx, rs.drain)
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

// quickProbe is how often a new container is probed until its first interval has
// passed.
const quickProbe = 25 * time.Millisecond

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

// switchRoute health-checks addr and makes it the route's target (Route.Swap), saves
// the state the moment the route switches, and returns the target it replaced, for
// the caller to drain.
func (d *deployment) switchRoute(ctx context.Context, rs *routedService, r engine.Replica, addr string, hc proxy.HealthCheck) (*proxy.Replaced, error) {
	old, err := rs.target.route.Swap(ctx, addr, hc)
	if err != nil {
		return nil, err
	}
	// From here on the release serves: a later failure must undo it.
	d.sw.changed = true
	d.recordRoute(rs.name, rs.ship, rs.network, r, addr)
	msg := fmt.Sprintf("%s: healthy; %s now routes to %s", r.Name, rs.target.listen, addr)
	if old != nil {
		msg += fmt.Sprintf(" (was %s); draining the old container for up to %s", old.Addr(), rs.drain)
	}
	d.em.info(agentapi.StepSwitch, rs.name, msg)
	return old, nil
}

// recordRoute saves the service's route with r as its live container.
func (d *deployment) recordRoute(name string, ship compose.Ship, network string, r engine.Replica, addr string) {
	release := r.Labels[ReleaseLabel]
	if release == "" {
		release = d.req.sha
	}
	d.a.saveState(func(s *State) {
		app := s.app(d.req.app, d.req.path)
		since := time.Now().UTC()
		if old := app.Routes[name]; old != nil && old.Container == r.ID {
			since = old.Since
		}
		spec := d.spec(ship)
		app.Routes[name] = &RouteState{
			Service: name, Listen: spec.Listen, Port: ship.Port, Network: network, Health: ship.Health,
			Drain: agentapi.Duration(ship.Drain), Container: r.ID, Name: r.Name, Target: addr,
			Release: release, Since: since,
			ListenTLS: spec.ListenTLS, Hosts: spec.Hosts, Paths: spec.Paths, TLS: spec.TLS, Cert: spec.Cert, Key: spec.Key,
		}
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
