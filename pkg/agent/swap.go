package agent

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/compose-spec/compose-go/v2/types"
	"github.com/shipdeploy/ship/pkg/agentapi"
	"github.com/shipdeploy/ship/pkg/compose"
	"github.com/shipdeploy/ship/pkg/deploy"
	"github.com/shipdeploy/ship/pkg/engine"
	"github.com/shipdeploy/ship/pkg/event"
	"github.com/shipdeploy/ship/pkg/release"
)

// swap is shipd's apply step (a deploy.Strategy): each service replaced in dependency
// order, a routed one blue-green behind shipd's proxy, then what the release no
// longer has removed. It owns what only shipd has: the routes, and the state file's
// record of the deploy under way (Deploying) and of each route.
type swap struct {
	a   *agent
	req request // the run's request; each Apply runs its own release
	eng *engine.Engine
	em  *emitter
	// p is the release whose events Progress reads (a job's events are not changes).
	p *compose.Project
	// changed is set once a running container was replaced or removed, or a route
	// switched: from then on a failure puts the previous release back.
	changed bool
	// pending are the drains and removals of the containers Apply replaced, run
	// once it is done (retireAll).
	pending []func(context.Context)
}

var _ deploy.Strategy = (*swap)(nil)

// Progress turns the engine's events into the deploy's, and notes a change to a
// running service.
func (s *swap) Progress(step event.Step) func(engine.Event) {
	return s.progress(s.p, step)
}

func (s *swap) progress(p *compose.Project, step event.Step) func(engine.Event) {
	return func(e engine.Event) {
		switch e.Action {
		case "recreate", "remove":
			if p.Ship[e.Service].Job == "" {
				s.changed = true
			}
		}
		msg := e.Msg
		if e.Container != "" {
			msg = e.Container + ": " + msg
		}
		s.em.info(step, e.Service, msg)
	}
}

// retiring is the app's drains and removals of replaced containers under way.
func (a *agent) retiringOf(app string) *sync.WaitGroup {
	wg, _ := a.retiring.LoadOrStore(app, new(sync.WaitGroup))
	return wg.(*sync.WaitGroup)
}

// waitRetired waits until the app's replaced containers are drained and removed: the
// host is then as it looks (no stop in flight) for the step that follows.
func (a *agent) waitRetired(app string) { a.retiringOf(app).Wait() }

// waitAllRetired waits until every app's replaced containers are drained and removed
// (shipd stopping or handing over).
func (a *agent) waitAllRetired() {
	a.retiring.Range(func(_, wg any) bool {
		wg.(*sync.WaitGroup).Wait()
		return true
	})
}

// retire keeps fn (a replaced container's drain and removal) for the end of Apply.
func (s *swap) retire(fn func(context.Context)) { s.pending = append(s.pending, fn) }

// retireAll runs the kept drains and removals in the background, one after the other,
// under a context of its own: the run's result does not wait for them (the engine
// stopping a container would hold up the listing of the containers that follows); a
// restore and the app's next run do (waitRetired).
func (s *swap) retireAll(ctx context.Context) {
	fns := s.pending
	s.pending = nil
	if len(fns) == 0 {
		return
	}
	wg := s.a.retiringOf(s.req.app)
	wg.Add(1)
	go func() {
		defer wg.Done()
		own, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Minute)
		defer cancel()
		for _, fn := range fns {
			fn(own)
		}
	}()
}

// Apply replaces each service of p (the release sha) and removes what p no longer has.
// It starts once the replaced containers of an earlier step or run are gone.
func (s *swap) Apply(ctx context.Context, step event.Step, sha string, p *compose.Project) error {
	s.a.waitRetired(s.req.app)
	req := s.req
	req.sha = sha
	if step == agentapi.StepRestore {
		req.kind = kindRestore
		announce(s.em, req, p)
	}
	d := &deployment{a: s.a, req: req, p: p, eng: s.eng, em: s.em, sw: s}
	defer s.retireAll(ctx)
	return d.run(ctx)
}

// Down removes the app's routes and containers (not its volumes).
func (s *swap) Down(ctx context.Context) error {
	s.a.waitRetired(s.req.app)
	for _, lr := range s.a.appRoutes(s.req.app) {
		s.em.info(agentapi.StepRestore, lr.service, "stop serving "+lr.listen)
		s.a.dropRoute(ctx, lr)
	}
	s.a.saveState(func(st *State) { st.app(s.req.app, s.req.path).Routes = map[string]*RouteState{} })
	return s.eng.Down(ctx, s.req.app, engine.DownOptions{Progress: func(e engine.Event) {
		s.em.info(agentapi.StepRestore, e.Service, strings.TrimPrefix(e.Container+": "+e.Msg, ": "))
	}})
}

// Changed implements deploy.Strategy.
func (s *swap) Changed() bool { return s.changed }

// announce says which release is replaced how.
func announce(em *emitter, req request, p *compose.Project) {
	var plan []string
	for _, name := range serviceOrder(p) {
		mode, _ := replaceMode(p, name)
		plan = append(plan, name+" ("+mode+")")
	}
	em.info(agentapi.StepPreflight, "", fmt.Sprintf("%s %s of %s: %s", req.kind, release.Short(req.sha), req.app, strings.Join(plan, ", ")))
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

// deployment is one release being made to run by the swap.
type deployment struct {
	a   *agent
	sw  *swap
	req request
	p   *compose.Project
	eng *engine.Engine
	em  *emitter
}

// failure is a deploy step that failed, with the container's last log lines if one
// failed.
type failure struct {
	err  error
	logs []string
}

func (f *failure) Error() string { return f.err.Error() }
func (f *failure) Unwrap() error { return f.err }

// run replaces each service, then cleans up.
func (d *deployment) run(ctx context.Context) error {
	for _, name := range serviceOrder(d.p) {
		if err := ctx.Err(); err != nil {
			return err
		}
		mode, why := replaceMode(d.p, name)
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
	return nil
}

func (d *deployment) progress(step event.Step) func(engine.Event) { return d.sw.progress(d.p, step) }

// started notes a container the deploy started, in the state: a restart in the middle
// of the deploy finds it.
func (d *deployment) started(name string, r engine.Replica) {
	d.a.saveState(func(s *State) {
		if dep := s.app(d.req.app, d.req.path).Deploying; dep != nil {
			dep.Service = name
			dep.Created = append(dep.Created, r.ID)
		}
	})
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
		Labels: d.a.containerLabels(d.req.sha), Progress: d.progress(agentapi.StepApply),
	})
	if err != nil {
		return fmt.Errorf("start a new container of %s: %w", name, err)
	}
	d.started(name, nr)
	if err := d.eng.WaitReplica(ctx, nr, d.req.wait, d.progress(agentapi.StepHealth)); err != nil {
		return d.unhealthy(ctx, name, nr, err, true)
	}
	d.sw.changed = true
	return d.removeOthers(ctx, name, reps, nr.ID)
}

// removeOthers removes the service's containers but keep.
func (d *deployment) removeOthers(ctx context.Context, name string, reps []engine.Replica, keep string) error {
	for _, r := range reps {
		if r.ID == keep {
			continue
		}
		d.sw.changed = true
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
	err = d.eng.Up(ctx, d.p.WithoutJobs(), engine.UpOptions{
		Services: []string{name}, Wait: true, WaitTimeout: d.req.wait, Progress: d.progress(agentapi.StepApply),
	})
	d.sw.changed = true
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
			d.sw.changed = true
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
	for _, lr := range d.a.appRoutes(d.req.app) {
		if !routed[lr.service] {
			d.sw.changed = true
			d.em.info(agentapi.StepSwitch, lr.service, "no longer routed: stop serving "+lr.listen)
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
