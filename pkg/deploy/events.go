package deploy

import (
	"sync"
	"time"

	"github.com/shipdeploy/ship/pkg/event"
	"github.com/shipdeploy/ship/pkg/redact"
)

// Steps an Event belongs to: pkg/event's, shared with shipd's wire types.
const (
	StepPreflight = event.StepPreflight // config, registry, hosts and engines checked
	StepPlan      = event.StepPlan      // what will change on a host (rendered by the caller from a Preview)
	StepGrace     = event.StepGrace     // the countdown before the first change (emitted by the caller)
	StepLock      = event.StepLock      // the host's lock taken, waited for, or released
	StepUpload    = event.StepUpload    // the release's files written to the host
	StepPull      = event.StepPull      // an image pulled through the host's engine
	StepJob       = event.StepJob       // a pre-deploy job
	StepJobOutput = event.StepJobOutput // a line a pre-deploy job wrote, as it runs (Service: the job)
	StepApply     = event.StepApply     // the engine creates, recreates or starts a service
	StepSwitch    = event.StepSwitch    // current points at the release (through shipd: a route switched too)
	StepHealth    = event.StepHealth    // through shipd: a new container health-checked before it gets traffic
	StepDrain     = event.StepDrain     // through shipd: the old container drained and removed
	StepInstall   = event.StepInstall   // shipctl agent install: a file written, systemd told
	StepAudit     = event.StepAudit     // a line appended to audit.log
	StepPrune     = event.StepPrune     // old releases and their images removed
	StepRestore   = event.StepRestore   // the previous release put back after a failure
	StepNotify    = event.StepNotify    // the webhook called
	StepDone      = event.StepDone      // a host finished: Msg says on which release it is
)

// Levels of an Event.
const (
	LevelInfo  = event.LevelInfo
	LevelWarn  = event.LevelWarn
	LevelError = event.LevelError
)

// Event is one thing a command did, for the caller to render. Its text never holds a
// secret: every event passes the Redactor before it is emitted.
type Event struct {
	Time time.Time
	// Host is the destination as written in ship.yaml; "" for the command as a whole.
	Host string
	Step event.Step
	// Level is LevelInfo, LevelWarn or LevelError.
	Level event.Level
	// Service is the compose service the event is about, if one.
	Service string
	// Msg is the event in a few words, without the host.
	Msg string
}

// emitter sends events to the caller's function, one at a time, redacted.
type emitter struct {
	mu     sync.Mutex
	fn     func(Event)
	redact *redact.Redactor
}

func newEmitter(fn func(Event), r *redact.Redactor) *emitter { return &emitter{fn: fn, redact: r} }

func (e *emitter) emit(ev Event) {
	if e == nil || e.fn == nil {
		return
	}
	if ev.Time.IsZero() {
		ev.Time = time.Now()
	}
	if ev.Level == "" {
		ev.Level = LevelInfo
	}
	ev.Msg = e.redact.String(ev.Msg)
	e.mu.Lock()
	defer e.mu.Unlock()
	e.fn(ev)
}

func (e *emitter) info(host string, step event.Step, msg string) {
	e.emit(Event{Host: host, Step: step, Msg: msg})
}

func (e *emitter) warn(host string, step event.Step, msg string) {
	e.emit(Event{Host: host, Step: step, Level: LevelWarn, Msg: msg})
}

func (e *emitter) fail(host string, step event.Step, msg string) {
	e.emit(Event{Host: host, Step: step, Level: LevelError, Msg: msg})
}
