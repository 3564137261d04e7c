package deploy

import (
	"sync"
	"time"

	"github.com/shipdeploy/ship/pkg/redact"
)

// Steps an Event belongs to.
const (
	StepPreflight = "preflight" // config, registry, hosts and engines checked
	StepPlan      = "plan"      // what will change on a host (rendered by the caller from a Preview)
	StepGrace     = "grace"     // the countdown before the first change (emitted by the caller)
	StepLock      = "lock"      // the host's lock taken, waited for, or released
	StepUpload    = "upload"    // the release's files written to the host
	StepPull      = "pull"      // an image pulled through the host's engine
	StepJob       = "job"       // a pre-deploy job
	StepApply     = "apply"     // the engine creates, recreates or starts a service
	StepSwitch    = "switch"    // current points at the release (through shipd: a route switched too)
	StepHealth    = "health"    // through shipd: a new container health-checked before it gets traffic
	StepDrain     = "drain"     // through shipd: the old container drained and removed
	StepInstall   = "install"   // shipctl agent install: a file written, systemd told
	StepAudit     = "audit"     // a line appended to audit.log
	StepPrune     = "prune"     // old releases and their images removed
	StepRestore   = "restore"   // the previous release put back after a failure
	StepNotify    = "notify"    // the webhook called
	StepDone      = "done"      // a host finished: Msg says on which release it is
)

// Levels of an Event.
const (
	LevelInfo  = "info"
	LevelWarn  = "warn"
	LevelError = "error"
)

// Event is one thing a command did, for the caller to render. Its text never holds a
// secret: every event passes the Redactor before it is emitted.
type Event struct {
	Time time.Time
	// Host is the destination as written in ship.yaml; "" for the command as a whole.
	Host string
	Step string
	// Level is LevelInfo, LevelWarn or LevelError.
	Level string
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

func (e *emitter) info(host, step, msg string) {
	e.emit(Event{Host: host, Step: step, Msg: msg})
}

func (e *emitter) warn(host, step, msg string) {
	e.emit(Event{Host: host, Step: step, Level: LevelWarn, Msg: msg})
}

func (e *emitter) fail(host, step, msg string) {
	e.emit(Event{Host: host, Step: step, Level: LevelError, Msg: msg})
}
