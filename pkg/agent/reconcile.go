package agent

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	cerrdefs "github.com/containerd/errdefs"

	"github.com/shipdeploy/ship/pkg/agentapi"
	"github.com/shipdeploy/ship/pkg/engine"
	"github.com/shipdeploy/ship/pkg/proxy"
	"github.com/shipdeploy/ship/pkg/release"
)

// Reconcile at start. The state file says, per routed service, which container was
// live; shipd may have been killed at any moment, a deploy in the middle of its swap.
// For each routed service shipd looks at the service's containers (by their compose
// labels) and routes to a healthy one, preferring:
//
//  1. after an interrupted deploy (the state still marks it), a container of the
//     release that was current before it: a deploy that did not finish did not happen
//     (current never moved, audit.log had no line for it);
//  2. the container the state names as live;
//  3. the newest other one.
//
// "Healthy" is the route's own check (HTTP path or TCP connect) passing within a few
// seconds, on a running container that the engine does not call unhealthy. The other
// containers of the service (the half-started new one, or the old one an interrupted
// swap had not yet removed) are strays: removed once the routes serve. Containers the
// interrupted deploy started for services that are not routed are removed when the
// service has another. Every decision is logged; an interrupted deploy gets its line
// in audit.log (result failed) and its release.json result.
//
// When no container of a routed service passes, nothing of it is removed and the route
// answers 503 until the next deploy. When the Docker engine does not answer, the
// routes go to the containers the state names, if they pass their health check.

// reconcileCheck is how long a candidate container has to pass its health check.
const reconcileCheck = 3 * time.Second

// enginePort is what reconcile needs of the Docker engine: *engine.Engine in shipd, a
// small fake in reconcile's tests.
type enginePort interface {
	Ping(ctx context.Context) error
	Replicas(ctx context.Context, project, service string) ([]engine.Replica, error)
	InspectReplica(ctx context.Context, id string) (engine.Replica, error)
	RemoveReplica(ctx context.Context, r engine.Replica, progress func(engine.Event)) error
}

// reconcile updates the state from the containers found, and returns the clean-up to
// run once the routes serve (removing strays).
func (a *agent) reconcile(ctx context.Context) func(context.Context) {
	snap := a.store.snapshot()
	if len(snap.Apps) == 0 {
		a.log.Info("reconcile: the state has no apps")
		return nil
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	err := a.containers.Ping(pctx)
	cancel()
	if err != nil {
		a.log.Error("reconcile: the Docker engine does not answer; routing to the containers the state names, if they answer", "err", err)
		return nil
	}
	names := make([]string, 0, len(snap.Apps))
	for name := range snap.Apps {
		names = append(names, name)
	}
	sort.Strings(names)
	var cleanups []func(context.Context)
	for _, name := range names {
		if c := a.reconcileApp(ctx, snap.Apps[name]); c != nil {
			cleanups = append(cleanups, c)
		}
	}
	if len(cleanups) == 0 {
		return nil
	}
	return func(ctx context.Context) {
		for _, c := range cleanups {
			c(ctx)
		}
	}
}

// choice is what reconcile decided for one routed service.
type choice struct {
	service string
	chosen  *engine.Replica
	addr    string
	more    []string // the addresses of the service's other routes (RouteState.More)
	strays  []engine.Replica
}

// reconcileApp routes each of the app's routed services (see above), records a cut-off
// deploy, and returns the app's clean-up: the strays' removal and, after a cut-off
// deploy, putting the current release back.
func (a *agent) reconcileApp(ctx context.Context, app *AppState) func(context.Context) {
	log := a.log.With("app", app.App)
	cut := app.Deploying
	if cut != nil {
		log.Warn("reconcile: a deploy was cut off by the restart", "kind", cut.Kind, "release", cut.Release, "from", cut.From, "started", cut.Started, "service", cut.Service)
	}
	choices := a.chooseAll(ctx, log, app)
	var strays []engine.Replica
	routed := map[string]bool{}
	for _, c := range choices {
		routed[c.service] = true
		strays = append(strays, c.strays...)
	}
	if cut != nil {
		strays = append(strays, a.cutOffStrays(ctx, log, app, cut, routed)...)
	}

	// After a cut-off deploy the services that are not routed may run either
	// release: the current one is put back, blue-green, once the routes serve.
	resume := ""
	if cut != nil {
		if _, err := os.Stat(newStore(app.Path).Layout.ComposeFile(app.Release)); app.Release != "" && err == nil {
			resume = app.Release
		}
	}
	summary := a.saveChoices(app, choices, cut, resume)
	if cut != nil {
		a.recordCutOff(log, app, cut, summary)
		if resume == "" {
			log.Warn("reconcile: no earlier release to put back; the services run what the cut-off deploy left", "release", app.Release)
		}
	}
	if len(strays) == 0 && resume == "" {
		return nil
	}
	return func(ctx context.Context) {
		for _, r := range strays {
			if err := a.containers.RemoveReplica(ctx, r, nil); err != nil {
				log.Error("reconcile: remove stray container", "service", r.Service, "container", r.Name, "err", err)
				continue
			}
			log.Info("reconcile: removed stray container", "service", r.Service, "container", r.Name, "release", r.Labels[ReleaseLabel])
		}
		if resume != "" {
			a.restoreAfterCut(ctx, app.App, app.Path, resume)
		}
	}
}

// chooseAll chooses the container of each of the app's routed services, at once.
func (a *agent) chooseAll(ctx context.Context, log *slog.Logger, app *AppState) []choice {
	services := make([]string, 0, len(app.Routes))
	for s := range app.Routes {
		services = append(services, s)
	}
	sort.Strings(services)
	choices := make([]choice, len(services))
	var wg sync.WaitGroup
	for i, service := range services {
		rs := app.Routes[service]
		wg.Go(func() { choices[i] = a.choose(ctx, log, app, rs) })
	}
	wg.Wait()
	return choices
}

// cutOffStrays are the containers the cut-off deploy started for services that are not
// routed, when the service has another container (which stays).
func (a *agent) cutOffStrays(ctx context.Context, log *slog.Logger, app *AppState, cut *Deploying, routed map[string]bool) []engine.Replica {
	var strays []engine.Replica
	for _, id := range cut.Created {
		r, err := a.containers.InspectReplica(ctx, id)
		if cerrdefs.IsNotFound(err) {
			continue
		}
		if err != nil {
			log.Warn("reconcile: inspect a container of the cut-off deploy", "container", id, "err", err)
			continue
		}
		if routed[r.Service] {
			continue
		}
		others, err := a.containers.Replicas(ctx, app.App, r.Service)
		if err != nil {
			log.Warn("reconcile", "service", r.Service, "err", err)
			continue
		}
		if len(others) > 1 {
			log.Info("reconcile: stray container of the cut-off deploy will be removed; the service's other container stays", "service", r.Service, "container", r.Name)
			strays = append(strays, r)
		}
	}
	return strays
}

// saveChoices saves the chosen containers as the routes' live ones and, after a
// cut-off deploy, its failure (and the restore to come, when resume names the
// release to put back). It returns the routes, one line each, for the audit.
func (a *agent) saveChoices(app *AppState, choices []choice, cut *Deploying, resume string) []string {
	var summary []string
	a.saveState(func(s *State) {
		as := s.app(app.App, app.Path)
		for _, c := range choices {
			rs := as.Routes[c.service]
			if rs == nil || c.chosen == nil {
				continue
			}
			if rs.Container != c.chosen.ID || rs.Target != c.addr {
				rs.Since = time.Now().UTC()
			}
			rs.Container, rs.Name, rs.Target = c.chosen.ID, c.chosen.Name, c.addr
			if rel := c.chosen.Labels[ReleaseLabel]; rel != "" {
				rs.Release = rel
			}
			for i, m := range rs.More {
				if i < len(c.more) {
					m.Container, m.Name, m.Target, m.Release, m.Since = rs.Container, rs.Name, c.more[i], rs.Release, rs.Since
				}
			}
			summary = append(summary, fmt.Sprintf("%s -> %s (%s)", c.service, c.chosen.Name, release.Name(rs.Release)))
		}
		if cut != nil {
			as.Deploying = nil
			if resume != "" {
				// The restore is marked from here on, so that a client asking for the
				// cut-off deploy's outcome (GET /v1/status) waits for it; a restart
				// meanwhile starts it again.
				as.Deploying = &Deploying{Kind: kindRestore, Release: resume, From: resume, Started: time.Now().UTC()}
			}
			as.LastResult = agentapi.ResultFailed
			as.LastError = fmt.Sprintf("%s of %s was cut off by a shipd restart", cut.Kind, release.Short(cut.Release))
			as.LastTime = time.Now().UTC()
		}
	})
	return summary
}

// restoreAfterCut puts the current release back after a cut-off deploy, as a failed
// deploy does: services already on it are left alone, the others replaced.
func (a *agent) restoreAfterCut(ctx context.Context, app, path, sha string) {
	log := a.log.With("app", app, "release", sha, "kind", kindRestore)
	unlock, err := a.acquire(app, "restore of "+release.Short(sha)+" after a restart")
	if err != nil {
		log.Error("reconcile: put the current release back", "err", err)
		return
	}
	defer unlock()
	log.Info("reconcile: putting the current release back")
	req := a.baseRequest(kindRestore, app, path, sha, nil, nil, 0, agentapi.Origin{Who: "shipd"})
	st := newStore(path)
	p, err := loadRelease(ctx, app, st, sha)
	if err == nil {
		err = a.checkRelease(app, st, sha, p)
	}
	if err == nil {
		a.saveState(func(s *State) {
			s.app(app, path).Deploying = &Deploying{Kind: kindRestore, Release: sha, From: sha, Started: time.Now().UTC()}
		})
		em := &emitter{log: log}
		announce(em, req, p)
		err = a.runner(req, p, sha, em).Run(ctx).Err
	}
	a.saveState(func(s *State) {
		as := s.app(app, path)
		as.Deploying = nil
		as.LastTime = time.Now().UTC()
		if err != nil {
			as.LastResult = agentapi.ResultRestoreFailed
			as.LastError += fmt.Sprintf("; putting %s back failed: %v", release.Short(sha), err)
		} else {
			as.LastError += fmt.Sprintf("; %s was put back", release.Short(sha))
		}
	})
	if err != nil {
		log.Error("reconcile: putting the current release back failed", "err", err)
		return
	}
	log.Info("reconcile: the current release runs again")
}

// recordCutOff writes the cut-off deploy's outcome to audit.log and release.json.
func (a *agent) recordCutOff(log *slog.Logger, app *AppState, cut *Deploying, summary []string) {
	ctx := context.Background()
	st := newStore(app.Path)
	current, err := st.Current(ctx)
	if err != nil {
		log.Warn("reconcile", "err", err)
	}
	msg := fmt.Sprintf("cut off by a shipd restart; current stays %s", release.Name(current))
	if len(summary) > 0 {
		msg += "; routes: " + strings.Join(summary, ", ")
	}
	log.Warn("reconcile: "+cut.Kind+" recorded as failed", "release", cut.Release, "detail", msg)
	if cut.Kind == kindDeploy {
		if err := st.SetResult(ctx, cut.Release, release.Failed, false); err != nil {
			log.Warn("reconcile", "err", err)
		}
	}
	kind := cut.Kind
	if kind == kindRestore {
		kind = kindDeploy
	}
	if err := st.AppendAudit(ctx, release.AuditEntry{
		Event: kind, App: app.App, SHA: cut.Release, Prev: cut.From, Who: "shipd", Result: agentapi.ResultFailed,
		Current: current, Error: msg, Agent: "shipd",
	}); err != nil {
		log.Warn("reconcile", "err", err)
	}
}

// choose picks the container a routed service's route goes to (see above).
func (a *agent) choose(ctx context.Context, log *slog.Logger, app *AppState, rs *RouteState) choice {
	c := choice{service: rs.Service}
	log = log.With("service", rs.Service)
	reps, err := a.containers.Replicas(ctx, app.App, rs.Service)
	if err != nil {
		log.Error("reconcile: list the service's containers", "err", err)
		return c
	}
	var order []engine.Replica
	seen := map[string]bool{}
	add := func(r engine.Replica) {
		if !seen[r.ID] {
			seen[r.ID] = true
			order = append(order, r)
		}
	}
	if app.Deploying != nil && app.Release != "" {
		for _, r := range reps {
			if r.Labels[ReleaseLabel] == app.Release && app.Release != app.Deploying.Release {
				add(r)
			}
		}
	}
	for _, r := range reps {
		if r.ID == rs.Container {
			add(r)
		}
	}
	for i := len(reps) - 1; i >= 0; i-- {
		add(reps[i])
	}
	for _, r := range order {
		if r.State != "running" || r.Health == "unhealthy" {
			log.Info("reconcile: container not usable", "container", r.Name, "state", r.State, "health", r.Health)
			continue
		}
		addr, err := r.Addr(rs.Network, rs.Port)
		if err != nil {
			log.Info("reconcile: container not reachable", "container", r.Name, "err", err)
			continue
		}
		more, err := moreAddrs(r, rs)
		if err != nil {
			log.Info("reconcile: container not reachable", "container", r.Name, "err", err)
			continue
		}
		hc := proxy.HealthCheck{Path: rs.Health, Interval: 200 * time.Millisecond, Timeout: 2 * time.Second, Deadline: reconcileCheck}
		if err := hc.Wait(ctx, addr); err != nil {
			log.Warn("reconcile: container failed its health check", "container", r.Name, "target", addr, "err", err)
			continue
		}
		c.chosen, c.addr, c.more = &r, addr, more
		break
	}
	if c.chosen == nil {
		log.Error("reconcile: no healthy container; the route answers 503 until the next deploy", "containers", len(reps), "listen", rs.Listen)
		return c
	}
	why := "the live container in the state"
	switch {
	case c.chosen.ID != rs.Container && app.Deploying != nil && c.chosen.Labels[ReleaseLabel] == app.Release:
		why = "the current release's container (the deploy was cut off)"
	case c.chosen.ID != rs.Container:
		why = "the newest healthy container (the state's is gone or unhealthy)"
	}
	log.Info("reconcile: route", "listen", rs.Listen, "container", c.chosen.Name, "target", c.addr, "release", c.chosen.Labels[ReleaseLabel], "why", why)
	for _, r := range reps {
		if r.ID != c.chosen.ID {
			log.Info("reconcile: stray container will be removed", "container", r.Name, "state", r.State, "release", r.Labels[ReleaseLabel])
			c.strays = append(c.strays, r)
		}
	}
	return c
}

// moreAddrs are r's addresses for the service's other routes (rs.More), in their order.
func moreAddrs(r engine.Replica, rs *RouteState) ([]string, error) {
	var out []string
	for _, m := range rs.More {
		addr, err := r.Addr(m.Network, m.Port)
		if err != nil {
			return nil, err
		}
		out = append(out, addr)
	}
	return out, nil
}
