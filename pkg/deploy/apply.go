package deploy

import (
	"context"
	"time"

	"github.com/shipdeploy/ship/pkg/compose"
	"github.com/shipdeploy/ship/pkg/engine"
	"github.com/shipdeploy/ship/pkg/event"
	"github.com/shipdeploy/ship/pkg/release"
)

// Up is the agentless apply step: the engine's Up of the project without its jobs
// (removing orphans, so the finished job containers go), waited on until every service
// is healthy, or running when it has no health check. Any engine work counts as a
// change, a job's start too: a failure puts the previous release back. A service's
// x-ship.health is waited for too (a GET through the engine's host, see
// engine.UpOptions.HTTPHealth), so that success is reported once the app answers.
type Up struct {
	Engine Engine
	App    string
	// Wait bounds the wait until healthy.
	Wait time.Duration
	// Events turns the engine's events of a step into the command's.
	Events func(step event.Step) func(engine.Event)
	// Report tells of the apply's start.
	Report func(Note)

	touched bool
}

var _ Strategy = (*Up)(nil)

// Progress implements Strategy.
func (u *Up) Progress(step event.Step) func(engine.Event) {
	if step == StepJob {
		u.touched = true
	}
	return u.Events(step)
}

// Apply implements Strategy.
func (u *Up) Apply(ctx context.Context, step event.Step, sha string, p *compose.Project) error {
	u.touched = true
	if step == StepApply && u.Report != nil {
		u.Report(Note{Step: step, Level: LevelInfo, Msg: "applying " + release.Short(sha)})
	}
	return u.Engine.Up(ctx, p.WithoutJobs(), engine.UpOptions{
		Wait: true, WaitTimeout: u.Wait, RemoveOrphans: true, Progress: u.Events(step),
		HTTPHealth: httpHealth(p),
	})
}

// httpHealth is the x-ship.health of each service that has one, with the port it is
// checked on (compose's HealthPort): without shipd, the deploy waits for it too.
func httpHealth(p *compose.Project) map[string]engine.HTTPHealth {
	out := map[string]engine.HTTPHealth{}
	for name, ship := range p.Ship {
		if port := p.HealthPort(name); ship.Health != "" && port > 0 {
			out[name] = engine.HTTPHealth{Path: ship.Health, Port: port}
		}
	}
	return out
}

// Down implements Strategy.
func (u *Up) Down(ctx context.Context) error {
	return u.Engine.Down(ctx, u.App, engine.DownOptions{Progress: u.Events(StepRestore)})
}

// Changed implements Strategy.
func (u *Up) Changed() bool { return u.touched }

// engineEvents shows the engine's events of step as the command's.
func engineEvents(em *emitter, host string, step event.Step) func(engine.Event) {
	return func(e engine.Event) {
		msg := e.Msg
		switch e.Action {
		case "recreate":
			msg = "recreating: " + e.Msg
		case "unchanged":
			msg = "unchanged, " + e.Msg
		case "network", "volume":
			msg = e.Action + " " + e.Msg
		}
		em.emit(Event{Host: host, Step: step, Service: e.Service, Msg: msg})
	}
}
