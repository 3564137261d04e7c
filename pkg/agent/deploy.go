package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/compose-spec/compose-go/v2/types"

	"github.com/shipdeploy/ship/pkg/agentapi"
	"github.com/shipdeploy/ship/pkg/compose"
	"github.com/shipdeploy/ship/pkg/engine"
	"github.com/shipdeploy/ship/pkg/proxy"
	"github.com/shipdeploy/ship/pkg/release"
)

// A deploy inside shipd (for `agent: true` environments). shipctl has uploaded
// <path>/releases/<sha>/docker-compose.yml; shipd then:
//
//  1. reads the release (refusing, before anything is touched, a routed service that
//     publishes ports, has a container_name, a network_mode, or a writable named
//     volume, and a listen address another app serves);
//  2. pulls its images through the local engine with the request's credentials;
//  3. runs its pre-deploy jobs (engine Up of the job, then its exit code): a failure
//     aborts before any switch;
//  4. replaces each service, in dependency order:
//     - a routed service blue-green: a new container beside the old one (the next
//     container number, the same compose labels), health-checked on its address on
//     the project network (x-ship.health, else the image's HEALTHCHECK and a TCP
//     connect, else a TCP connect), the route switched to it in one step, the old
//     container drained (x-ship.drain) and removed;
//     - a service with named volumes, published ports, a container_name or a
//     network_mode stop-first, through the engine's Up (never two copies at once);
//     - any other service start-first: the new container waited on until healthy,
//     then the old one removed;
//  5. removes the containers of services the release no longer has (and the finished
//     jobs), and the routes of services no longer routed;
//  6. points <path>/current at the release, sets release.json's result, appends a line
//     to <path>/audit.log, saves the state.
//
// A new container that fails its health check never receives traffic: it is removed,
// the old one keeps serving untouched, and the events carry its last log lines. When a
// failure comes after some service was already replaced, the previous release is put
// back the same way (blue-green); if that fails too the result is "restore-failed".

// Kinds of deploy.
const (
	kindDeploy   = "deploy"
	kindRollback = "rollback"
	kindRestore  = "restore"
)

// ReleaseLabel is set on the containers shipd starts: the release they run.
const ReleaseLabel = "dev.ship.release"

const failLogLines = 20

var (
	appName = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]*$`)
	shaName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)
)

// request is a deploy, rollback or restore as shipd carries it out.
type request struct {
	kind           string
	app, path, sha string
	auth           map[string]string
	health         proxy.HealthCheck // timing only; the path is per service
	wait, job      time.Duration
	origin         agentapi.Origin
}

// emitter sends a deploy's events to its client and to the log.
type emitter struct {
	mu  sync.Mutex
	fn  func(agentapi.Event)
	log *slog.Logger
}

func (e *emitter) emit(ev agentapi.Event) {
	if ev.Time.IsZero() {
		ev.Time = time.Now().UTC()
	}
	if ev.Level == "" {
		ev.Level = agentapi.LevelInfo
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	level := slog.LevelInfo
	switch ev.Level {
	case agentapi.LevelWarn:
		level = slog.LevelWarn
	case agentapi.LevelError:
		level = slog.LevelError
	}
	attrs := []any{"step", ev.Step}
	if ev.Service != "" {
		attrs = append(attrs, "service", ev.Service)
	}
	if len(ev.Logs) > 0 {
		attrs = append(attrs, "logs", ev.Logs)
	}
	e.log.Log(context.Background(), level, ev.Msg, attrs...)
	if e.fn != nil {
		e.fn(ev)
	}
}

func (e *emitter) info(step, service, msg string) {
	e.emit(agentapi.Event{Step: step, Service: service, Msg: msg})
}

func (e *emitter) warn(step, service, msg string) {
	e.emit(agentapi.Event{Step: step, Service: service, Level: agentapi.LevelWarn, Msg: msg})
}

// checkRequest refuses a request that cannot name an app's release.
func checkRequest(app, path, sha string, needSHA bool) error {
	var problems []string
	if !appName.MatchString(app) {
		problems = append(problems, fmt.Sprintf("app %q is not a compose project name (lower-case letters, digits, - and _)", app))
	}
	if !filepath.IsAbs(path) || filepath.Clean(path) != path || path == "/" {
		problems = append(problems, fmt.Sprintf("path %q is not a clean absolute folder", path))
	}
	if (needSHA || sha != "") && !shaName.MatchString(sha) {
		problems = append(problems, fmt.Sprintf("sha %q is not a release name", sha))
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "; "))
	}
	return nil
}

// loadRelease reads a release's compose file as the agentless deploy reads it
// (compose.LoadResolved): no interpolation (the file is already resolved, and a "$" in a
// value is literal), the app as the project name, the release's folder as the working
// directory; so the config hashes match and a later agentless deploy leaves shipd's
// containers alone. ship's support check ran when shipctl made the file.
func loadRelease(ctx context.Context, app string, dir appDir, sha string) (*compose.Project, error) {
	file := dir.ComposeFile(sha)
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	return compose.LoadResolved(ctx, app, dir.Release(sha), file, data)
}

// checkRelease refuses, by service and all at once, what shipd cannot deploy: the
// rules of compose's CheckAgent (the same that shipctl checks before it uploads), and
// a listen address another app serves.
func (a *agent) checkRelease(app string, dir appDir, sha string, p *compose.Project) error {
	var problems []string
	for _, pr := range p.AgentProblems(dir.ComposeFile(sha)) {
		problems = append(problems, pr.String())
	}
	for _, name := range p.ServicesInOrder() {
		ship := p.Ship[name]
		if !ship.Routed() || ship.Job != "" {
			continue
		}
		if other := a.listenConflict(app, name, ship.Listen); other != "" {
			problems = append(problems, fmt.Sprintf("service %q: listen %s is already served by %s", name, ship.Listen, other))
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("shipd cannot deploy this release:\n  %s", strings.Join(problems, "\n  "))
	}
	return nil
}

// serviceOrder lists the services to replace (jobs left out), each after what it
// depends on; ties by name.
func serviceOrder(p *compose.Project) []string {
	var out []string
	state := map[string]int{} // 1 visiting, 2 done
	var visit func(name string)
	visit = func(name string) {
		if state[name] != 0 {
			return
		}
		state[name] = 1
		deps := make([]string, 0, len(p.Services[name].DependsOn))
		for dep := range p.Services[name].DependsOn {
			if _, ok := p.Services[dep]; ok && p.Ship[dep].Job == "" {
				deps = append(deps, dep)
			}
		}
		sort.Strings(deps)
		for _, dep := range deps {
			visit(dep)
		}
		state[name] = 2
		out = append(out, name)
	}
	for _, name := range p.ServicesInOrder() {
		if p.Ship[name].Job == "" {
			visit(name)
		}
	}
	return out
}

// Ways to replace a service.
const (
	modeBlueGreen  = "blue-green"
	modeStartFirst = "start-first"
	modeStopFirst  = "stop-first"
)

// replaceMode says how a service is replaced, and why when stop-first.
func replaceMode(p *compose.Project, name string) (string, string) {
	s := p.Services[name]
	if p.Ship[name].Routed() {
		return modeBlueGreen, ""
	}
	switch {
	case len(s.Ports) > 0:
		return modeStopFirst, "it publishes ports"
	case s.ContainerName != "":
		return modeStopFirst, "it has a container_name"
	case s.NetworkMode != "":
		return modeStopFirst, "it has a network_mode"
	}
	for _, v := range s.Volumes {
		if v.Type == types.VolumeTypeVolume && v.Source != "" {
			return modeStopFirst, "it mounts the named volume " + v.Source
		}
	}
	for other, svc := range p.Services {
		if d, ok := svc.DependsOn[name]; ok && d.Condition == types.ServiceConditionCompletedSuccessfully && other != name {
			return modeStopFirst, "service " + other + " waits for it to complete"
		}
	}
	return modeStartFirst, ""
}

// deployment is one release being made to run.
type deployment struct {
	a   *agent
	req request
	p   *compose.Project
	eng *engine.Engine
	em  *emitter
	// changed is set once a running container was replaced or removed, or a route
	// switched: from then on a failure puts the previous release back.
	changed bool
	// step is the step running, for the failure's event.
	step string
}

// failure is a deploy step that failed, with the container's last log lines if one
// failed.
type failure struct {
	err  error
	logs []string
}

func (f *failure) Error() string { return f.err.Error() }
func (f *failure) Unwrap() error { return f.err }

// run makes the release run: pull, jobs (when runJobs), each service, clean-up.
func (d *deployment) run(ctx context.Context, runJobs bool) error {
	p, em := d.p, d.em
	order := serviceOrder(p)
	var plan []string
	for _, name := range order {
		mode, _ := replaceMode(p, name)
		plan = append(plan, name+" ("+mode+")")
	}
	em.info(agentapi.StepPreflight, "", fmt.Sprintf("%s %s of %s: %s", d.req.kind, short(d.req.sha), d.req.app, strings.Join(plan, ", ")))

	all := append([]string(nil), order...)
	if runJobs {
		all = append(all, jobs(p)...)
	}
	d.step = agentapi.StepPull
	if err := d.eng.PullImages(ctx, p.Project, all, d.progress(agentapi.StepPull)); err != nil {
		return fmt.Errorf("pull: %w", err)
	}
	if runJobs {
		d.step = agentapi.StepJob
		for _, job := range jobs(p) {
			if err := d.runJob(ctx, job); err != nil {
				return err
			}
		}
	}
	for _, name := range order {
		if err := ctx.Err(); err != nil {
			return err
		}
		mode, why := replaceMode(p, name)
		d.step = agentapi.StepApply
		var err error
		switch mode {
		case modeBlueGreen:
			err = d.blueGreen(ctx, name)
		case modeStartFirst:
			err = d.startFirst(ctx, name)
		default:
			err = d.stopFirst(ctx, name, why)
		}
		if err != nil {
			return err
		}
	}
	d.cleanup(ctx)
	d.step = ""
	return nil
}

// progress turns the engine's events into the deploy's, and notes a change to a
// running service.
func (d *deployment) progress(step string) func(engine.Event) {
	return func(e engine.Event) {
		switch e.Action {
		case "recreate", "remove":
			if d.p.Ship[e.Service].Job == "" {
				d.changed = true
			}
		}
		msg := e.Msg
		if e.Container != "" {
			msg = e.Container + ": " + msg
		}
		d.em.info(step, e.Service, msg)
	}
}

func jobs(p *compose.Project) []string {
	var out []string
	for _, name := range p.ServicesInOrder() {
		if p.Ship[name].Job == compose.JobPreDeploy {
			out = append(out, name)
		}
	}
	return out
}

// runJob runs a pre-deploy job to its end.
func (d *deployment) runJob(ctx context.Context, job string) error {
	d.em.info(agentapi.StepJob, job, "running pre-deploy job "+job)
	if err := d.eng.Up(ctx, d.p.Project, engine.UpOptions{Services: []string{job}, WaitTimeout: d.req.wait, Progress: d.progress(agentapi.StepJob)}); err != nil {
		return fmt.Errorf("start pre-deploy job %s: %w", job, err)
	}
	jctx, cancel := context.WithTimeout(ctx, d.req.job)
	code, err := d.eng.Wait(jctx, d.req.app, job)
	cancel()
	if err != nil {
		if jctx.Err() != nil && ctx.Err() == nil {
			return fmt.Errorf("pre-deploy job %s did not finish within %s", job, d.req.job)
		}
		return fmt.Errorf("pre-deploy job %s: %w", job, err)
	}
	if code != 0 {
		var logs []string
		_ = d.eng.Logs(context.WithoutCancel(ctx), d.req.app, engine.LogOptions{Services: []string{job}, Tail: fmt.Sprint(failLogLines)}, func(l engine.LogLine) {
			logs = append(logs, l.Text)
		})
		err := fmt.Errorf("pre-deploy job %s exited with code %d; nothing was switched", job, code)
		d.em.emit(agentapi.Event{Step: agentapi.StepJob, Service: job, Level: agentapi.LevelError, Msg: err.Error(), Logs: logs})
		return &failure{err: err, logs: logs}
	}
	d.em.info(agentapi.StepJob, job, "pre-deploy job "+job+" succeeded")
	return nil
}

// upToDate returns the replica Up would leave alone (same configuration and image,
// running), if the service has one.
func (d *deployment) upToDate(ctx context.Context, name string, reps []engine.Replica) (*engine.Replica, error) {
	for i := len(reps) - 1; i >= 0; i-- {
		why, err := d.eng.Outdated(ctx, d.p.Project, name, reps[i])
		if err != nil {
			return nil, err
		}
		if why == "" {
			return &reps[i], nil
		}
	}
	return nil, nil
}

// healthCheck is the check of a routed service's new container.
func (d *deployment) healthCheck(ship compose.Ship) proxy.HealthCheck {
	hc := d.req.health
	hc.Path = ship.Health
	return hc
}

func describeCheck(hc proxy.HealthCheck, addr string) string {
	return fmt.Sprintf("%s on %s: every %s, %s per attempt, up to %s", hc, addr, hc.Interval, hc.Timeout, hc.Deadline)
}

// blueGreen replaces a routed service: the new container beside the old one, the
// route switched once it is healthy, the old one drained and removed.
func (d *deployment) blueGreen(ctx context.Context, name string) error {
	a, em, app := d.a, d.em, d.req.app
	ship := d.p.Ship[name]
	network := engine.ServiceNetwork(d.p.Project, name)
	drain := ship.Drain
	if drain <= 0 {
		drain = a.cfg.Drain
	}
	reps, err := d.eng.Replicas(ctx, app, name)
	if err != nil {
		return err
	}
	// The route: the service's own, or a new one when it is new or its listen changed.
	lr := a.route(app, name)
	var fresh *liveRoute
	if lr == nil || lr.listen != ship.Listen {
		if fresh, err = a.newRoute(app, name, ship.Listen); err != nil {
			return err
		}
		em.info(agentapi.StepSwitch, name, "opening "+ship.Listen+"; it serves once a container passes")
	}
	target := lr
	if fresh != nil {
		target = fresh
	}
	dropFresh := func() {
		if fresh != nil {
			a.dropRoute(context.WithoutCancel(ctx), fresh)
		}
	}

	cur, err := d.upToDate(ctx, name, reps)
	if err != nil {
		dropFresh()
		return err
	}
	if cur != nil && len(reps) == 1 {
		addr, err := cur.Addr(network, ship.Port)
		if err == nil && target.route.Target() == addr {
			em.info(agentapi.StepApply, name, cur.Name+": unchanged, serving")
			d.recordRoute(name, ship, network, *cur, addr)
			return nil
		}
		if err == nil {
			// Running as wanted but not routed yet (or elsewhere): route it.
			hc := d.healthCheck(ship)
			em.info(agentapi.StepHealth, name, cur.Name+": unchanged; checking "+describeCheck(hc, addr))
			if err := d.switchRoute(ctx, target, name, ship, network, *cur, addr, hc, drain); err != nil {
				dropFresh()
				return d.unhealthy(ctx, name, *cur, err, false)
			}
			d.finishRoute(ctx, lr, fresh)
			return nil
		}
	}

	nr, err := d.eng.StartReplica(ctx, d.p.Project, name, engine.ReplicaOptions{
		Labels: map[string]string{ReleaseLabel: d.req.sha}, Progress: d.progress(agentapi.StepApply),
	})
	if err != nil {
		dropFresh()
		return fmt.Errorf("start a new container of %s: %w", name, err)
	}
	a.saveState(func(s *State) {
		if dep := s.app(app, d.req.path).Deploying; dep != nil {
			dep.Service = name
			dep.Created = append(dep.Created, nr.ID)
		}
	})
	var olds []string
	for _, r := range reps {
		olds = append(olds, r.Name)
	}
	if len(olds) > 0 {
		em.info(agentapi.StepApply, name, fmt.Sprintf("%s started beside %s", nr.Name, strings.Join(olds, ", ")))
	}
	addr, err := nr.Addr(network, ship.Port)
	if err != nil {
		dropFresh()
		return d.unhealthy(ctx, name, nr, err, true)
	}
	hc := d.healthCheck(ship)
	if ship.Health == "" && nr.Health != "" {
		// No HTTP path: the image's HEALTHCHECK decides, then a TCP connect.
		em.info(agentapi.StepHealth, name, nr.Name+": waiting for the image's health check")
		if err := d.eng.WaitReplica(ctx, nr, hc.Deadline, nil); err != nil {
			dropFresh()
			return d.unhealthy(ctx, name, nr, err, true)
		}
	}
	em.info(agentapi.StepHealth, name, nr.Name+": checking "+describeCheck(hc, addr))
	if err := d.switchRoute(ctx, target, name, ship, network, nr, addr, hc, drain); err != nil {
		dropFresh()
		return d.unhealthy(ctx, name, nr, err, true)
	}
	// A route on a listen address that changed goes first (its requests finish),
	// then the old containers.
	d.finishRoute(ctx, lr, fresh)
	for _, r := range reps {
		if err := d.eng.RemoveReplica(context.WithoutCancel(ctx), r, nil); err != nil {
			em.warn(agentapi.StepDrain, name, fmt.Sprintf("%s: could not be removed: %v", r.Name, err))
			continue
		}
		em.info(agentapi.StepDrain, name, r.Name+": stopped and removed")
	}
	return nil
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

// switchRoute health-checks addr and makes it the route's target (Route.Swap), saves
// the state the moment the route switches, then drains the target it replaced.
func (d *deployment) switchRoute(ctx context.Context, lr *liveRoute, name string, ship compose.Ship, network string, r engine.Replica, addr string, hc proxy.HealthCheck, drain time.Duration) error {
	old, err := lr.route.Swap(ctx, addr, hc)
	if err != nil {
		return err
	}
	// From here on the release serves: a later failure must undo it.
	d.changed = true
	d.recordRoute(name, ship, network, r, addr)
	msg := fmt.Sprintf("%s: healthy; %s now routes to %s", r.Name, ship.Listen, addr)
	if old != nil {
		msg += fmt.Sprintf(" (was %s); draining the old container for up to %s", old.Addr(), drain)
	}
	d.em.info(agentapi.StepSwitch, name, msg)
	// A caller that goes away now does not cut the requests in flight on the old target.
	old.Drain(context.WithoutCancel(ctx), drain)
	return nil
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
		app.Routes[name] = &RouteState{
			Service: name, Listen: ship.Listen, Port: ship.Port, Network: network, Health: ship.Health,
			Drain: agentapi.Duration(ship.Drain), Container: r.ID, Name: r.Name, Target: addr,
			Release: release, Since: since,
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

// startFirst replaces a stateless service that is not routed: the new container
// waited on until healthy, then the old one removed.
func (d *deployment) startFirst(ctx context.Context, name string) error {
	reps, err := d.eng.Replicas(ctx, d.req.app, name)
	if err != nil {
		return err
	}
	cur, err := d.upToDate(ctx, name, reps)
	if err != nil {
		return err
	}
	if cur != nil {
		d.em.info(agentapi.StepApply, name, cur.Name+": unchanged, running")
		return d.removeOthers(ctx, name, reps, cur.ID)
	}
	nr, err := d.eng.StartReplica(ctx, d.p.Project, name, engine.ReplicaOptions{
		Labels: map[string]string{ReleaseLabel: d.req.sha}, Progress: d.progress(agentapi.StepApply),
	})
	if err != nil {
		return fmt.Errorf("start a new container of %s: %w", name, err)
	}
	d.a.saveState(func(s *State) {
		if dep := s.app(d.req.app, d.req.path).Deploying; dep != nil {
			dep.Service = name
			dep.Created = append(dep.Created, nr.ID)
		}
	})
	if err := d.eng.WaitReplica(ctx, nr, d.req.wait, d.progress(agentapi.StepHealth)); err != nil {
		return d.unhealthy(ctx, name, nr, err, true)
	}
	d.changed = true
	return d.removeOthers(ctx, name, reps, nr.ID)
}

// removeOthers removes the service's containers but keep.
func (d *deployment) removeOthers(ctx context.Context, name string, reps []engine.Replica, keep string) error {
	for _, r := range reps {
		if r.ID == keep {
			continue
		}
		d.changed = true
		if err := d.eng.RemoveReplica(ctx, r, d.progress(agentapi.StepApply)); err != nil {
			return err
		}
	}
	return nil
}

// stopFirst replaces a service through the engine's Up: the old container stops
// before the new one starts.
func (d *deployment) stopFirst(ctx context.Context, name, why string) error {
	reps, err := d.eng.Replicas(ctx, d.req.app, name)
	if err != nil {
		return err
	}
	if cur, err := d.upToDate(ctx, name, reps); err != nil {
		return err
	} else if cur != nil && len(reps) == 1 {
		d.em.info(agentapi.StepApply, name, cur.Name+": unchanged, running")
		return nil
	}
	if len(reps) > 0 {
		d.em.info(agentapi.StepApply, name, "replacing stop-first: "+why)
	}
	err = d.eng.Up(ctx, withoutJobs(d.p), engine.UpOptions{
		Services: []string{name}, Wait: true, WaitTimeout: d.req.wait, Progress: d.progress(agentapi.StepApply),
	})
	d.changed = true
	if err != nil {
		var he *engine.HealthError
		if errors.As(err, &he) {
			d.em.emit(agentapi.Event{Step: agentapi.StepHealth, Service: name, Level: agentapi.LevelError, Msg: he.Container + ": " + he.Status, Logs: he.Logs})
			return &failure{err: fmt.Errorf("service %s: %w", name, err), logs: he.Logs}
		}
		return fmt.Errorf("service %s: %w", name, err)
	}
	return nil
}

// withoutJobs is the project without its pre-deploy jobs.
func withoutJobs(p *compose.Project) *types.Project {
	cp := *p.Project
	cp.Services = types.Services{}
	for name, s := range p.Services {
		if p.Ship[name].Job == "" {
			cp.Services[name] = s
		}
	}
	return &cp
}

// cleanup removes what the release no longer has: containers of services it lacks,
// finished jobs and exited one-off containers, routes of services no longer routed.
func (d *deployment) cleanup(ctx context.Context) {
	bg := context.WithoutCancel(ctx)
	cs, err := d.eng.Containers(bg, d.req.app)
	if err != nil {
		d.em.warn(agentapi.StepApply, "", "list containers for clean-up: "+err.Error())
	}
	for _, c := range cs {
		if _, disabled := d.p.DisabledServices[c.Service]; disabled {
			continue // a service of a profile the release does not enable: not ours to remove
		}
		_, inProject := d.p.Services[c.Service]
		job := inProject && d.p.Ship[c.Service].Job != ""
		exited := c.State == "exited" || c.State == "dead" || c.State == "created"
		if (inProject && !job && !c.OneOff) || ((job || c.OneOff) && !exited) {
			continue
		}
		if !inProject && !c.OneOff {
			d.changed = true
		}
		if err := d.eng.RemoveReplica(bg, engine.Replica{Container: c}, d.progress(agentapi.StepApply)); err != nil {
			d.em.warn(agentapi.StepApply, c.Service, fmt.Sprintf("%s: could not be removed: %v", c.Name, err))
		}
	}
	routed := map[string]bool{}
	for name, s := range d.p.Ship {
		if s.Routed() && s.Job == "" {
			routed[name] = true
		}
	}
	for service, lr := range d.a.appRoutes(d.req.app) {
		if !routed[service] {
			d.changed = true
			d.em.info(agentapi.StepSwitch, service, "no longer routed: stop serving "+lr.listen)
			d.a.dropRoute(bg, lr)
		}
	}
	d.a.saveState(func(s *State) {
		app := s.app(d.req.app, d.req.path)
		for service := range app.Routes {
			if !routed[service] {
				delete(app.Routes, service)
			}
		}
	})
}

// deploy carries out a deploy or rollback of a loaded release and returns its result.
// The caller holds the app's lock.
func (a *agent) deploy(ctx context.Context, req request, p *compose.Project, em *emitter) agentapi.Result {
	start := time.Now()
	dir := newAppDir(req.path)
	bg := context.WithoutCancel(ctx)
	prev, err := dir.readCurrent()
	if err != nil {
		em.warn(agentapi.StepPreflight, "", err.Error())
	}
	res := agentapi.Result{App: req.app, SHA: req.sha, Previous: prev, Current: prev}
	a.saveState(func(s *State) {
		app := s.app(req.app, req.path)
		app.Deploying = &Deploying{Kind: req.kind, Release: req.sha, From: prev, Started: time.Now().UTC()}
	})

	d := &deployment{a: a, req: req, p: p, eng: a.engine(req.auth), em: em}
	err = d.run(ctx, req.kind == kindDeploy)
	if err == nil {
		if err = dir.switchCurrent(req.sha); err != nil {
			d.changed = true
		}
	}
	if err == nil {
		res.Result, res.Current = agentapi.ResultDeployed, req.sha
		em.info(agentapi.StepSwitch, "", fmt.Sprintf("%s -> %s", dir.Current(), release.CurrentLink(req.sha)))
		if err := dir.setReleaseResult(req.sha, release.Deployed, true); err != nil {
			em.warn(agentapi.StepAudit, "", err.Error())
		}
	} else {
		res.Result, res.Error = agentapi.ResultFailed, err.Error()
		var f *failure
		if errors.As(err, &f) {
			res.Logs = f.logs
		}
		step := d.step
		if step == "" {
			step = agentapi.StepSwitch // only switching current can fail after run
		}
		em.emit(agentapi.Event{Step: step, Level: agentapi.LevelError, Msg: fmt.Sprintf("%s of %s failed: %v", req.kind, short(req.sha), err)})
		if d.changed {
			if rerr := a.restore(bg, req, prev, em); rerr != nil {
				res.Result = agentapi.ResultRestoreFailed
				res.Error = fmt.Sprintf("%v; restoring %s failed: %v", err, releaseName(prev), rerr)
				res.Current = prev
			} else {
				res.Error = fmt.Sprintf("%v; %s was put back", err, releaseName(prev))
			}
		} else {
			em.info(agentapi.StepRestore, "", fmt.Sprintf("nothing was switched: %s keeps serving", releaseName(prev)))
			res.Error = fmt.Sprintf("%v; nothing was switched, %s keeps serving", err, releaseName(prev))
		}
		if req.kind == kindDeploy {
			if err := dir.setReleaseResult(req.sha, release.Failed, false); err != nil {
				em.warn(agentapi.StepAudit, "", err.Error())
			}
		}
	}
	res.Duration = agentapi.Duration(time.Since(start).Round(time.Millisecond))

	entry := release.AuditEntry{
		Event: req.kind, App: req.app, Env: req.origin.Env, Host: req.origin.Host, SHA: req.sha, Prev: prev,
		Who: req.origin.Who, From: req.origin.From, Result: res.Result, Current: res.Current, Error: res.Error, Agent: "shipd",
	}
	if err := dir.appendAudit(entry); err != nil {
		em.warn(agentapi.StepAudit, "", err.Error())
	}
	a.saveState(func(s *State) {
		app := s.app(req.app, req.path)
		app.Deploying = nil
		app.LastResult, app.LastError, app.LastTime = res.Result, res.Error, time.Now().UTC()
		if res.Result == agentapi.ResultDeployed {
			if prev != req.sha {
				app.Previous = prev
			}
			app.Release, app.Since = req.sha, time.Now().UTC()
		} else {
			app.Release = res.Current
		}
	})
	switch res.Result {
	case agentapi.ResultDeployed:
		em.info(agentapi.StepDone, "", fmt.Sprintf("on %s (%s in %s)", short(req.sha), req.kind+"ed", time.Duration(res.Duration)))
	case agentapi.ResultFailed:
		em.emit(agentapi.Event{Step: agentapi.StepDone, Level: agentapi.LevelError, Msg: fmt.Sprintf("on %s (%s of %s failed; previous release kept)", releaseName(res.Current), req.kind, short(req.sha))})
	default:
		em.emit(agentapi.Event{Step: agentapi.StepDone, Level: agentapi.LevelError, Msg: fmt.Sprintf("%s of %s failed and %s could not be put back: check the host", req.kind, short(req.sha), releaseName(prev))})
	}
	return res
}

// restore puts the previous release back after a failed deploy, the same way (its
// jobs do not run). Without a previous release, the app's containers and routes go.
func (a *agent) restore(ctx context.Context, failed request, prev string, em *emitter) error {
	ctx, cancel := context.WithTimeout(ctx, failed.wait+failed.health.Deadline+2*time.Minute)
	defer cancel()
	eng := a.engine(failed.auth)
	if prev == "" || prev == failed.sha {
		em.warn(agentapi.StepRestore, "", "no previous release to go back to: removing the new release's containers (volumes are kept)")
		for service, lr := range a.appRoutes(failed.app) {
			em.info(agentapi.StepRestore, service, "stop serving "+lr.listen)
			a.dropRoute(ctx, lr)
		}
		a.saveState(func(s *State) { s.app(failed.app, failed.path).Routes = map[string]*RouteState{} })
		return eng.Down(ctx, failed.app, engine.DownOptions{Progress: func(e engine.Event) {
			em.info(agentapi.StepRestore, e.Service, strings.TrimPrefix(e.Container+": "+e.Msg, ": "))
		}})
	}
	em.info(agentapi.StepRestore, "", "putting back "+short(prev))
	p, err := loadRelease(ctx, failed.app, newAppDir(failed.path), prev)
	if err != nil {
		return err
	}
	req := failed
	req.kind, req.sha = kindRestore, prev
	d := &deployment{a: a, req: req, p: p, eng: eng, em: em}
	if err := d.run(ctx, false); err != nil {
		return err
	}
	em.info(agentapi.StepRestore, "", short(prev)+" is serving again")
	return nil
}
