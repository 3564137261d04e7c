// Package event names, once, the steps, levels and results that shipctl's deploy
// events (pkg/deploy) and shipd's wire types (pkg/agentapi) share. It imports
// nothing: both sides and the renderers depend on it, it depends on no one. The
// values are the words on the wire (JSON events, NDJSON streams, audit.log).
package event

// Step is the part of a deploy an event belongs to.
type Step string

// Steps of a deploy, rollback or restore. shipd uses the ones marked (shipd) too.
const (
	StepPreflight Step = "preflight"  // config, registry, hosts and engines checked (shipd: the release read and checked)
	StepPlan      Step = "plan"       // what will change on a host (rendered by the caller from a preview)
	StepGrace     Step = "grace"      // the countdown before the first change (emitted by the caller)
	StepLock      Step = "lock"       // the host's lock taken, waited for, or released
	StepUpload    Step = "upload"     // the release's files written to the host
	StepPull      Step = "pull"       // an image pulled through the host's engine (shipd)
	StepJob       Step = "job"        // a pre-deploy job (shipd)
	StepJobOutput Step = "job_output" // a line a pre-deploy job wrote, as it runs (shipd)
	StepApply     Step = "apply"      // the engine creates, recreates or starts a service (shipd)
	StepHealth    Step = "health"     // a new container health-checked before it gets traffic (shipd)
	StepSwitch    Step = "switch"     // current points at the release, or a route switched (shipd)
	StepDrain     Step = "drain"      // the old container drained and removed (shipd)
	StepInstall   Step = "install"    // shipctl agent install: a file written, systemd told
	StepAudit     Step = "audit"      // a line appended to audit.log, release.json updated (shipd)
	StepPrune     Step = "prune"      // old releases and their images removed
	StepRestore   Step = "restore"    // the previous release put back after a failure (shipd)
	StepNotify    Step = "notify"     // the webhook called
	StepDone      Step = "done"       // a host finished: the message says on which release it is (shipd)
)

// Level is how an event matters.
type Level string

// Levels of an event.
const (
	LevelInfo  Level = "info"
	LevelWarn  Level = "warn"
	LevelError Level = "error"
)

// Result is how a deploy or rollback ended on a host.
type Result string

// Results of a host (shipctl's summary, shipd's answer, audit.log).
const (
	ResultDeployed      Result = "deployed"       // the release is current and healthy
	ResultFailed        Result = "failed"         // failed; the host runs its previous release (put back or never left)
	ResultRestoreFailed Result = "restore-failed" // failed, and putting the previous release back failed too
	ResultLocked        Result = "locked"         // another deploy holds the host's lock; nothing touched
	ResultSkipped       Result = "skipped"        // not started: another host was locked, or the command was cancelled
	// ResultUnknown: shipctl did not see how it ended (cancelled while shipd carries the
	// deploy on, or shipd did not answer again in time); the host knows.
	ResultUnknown Result = "unknown"
	// ResultOK is audit.log's result of what is not a deploy: lock, unlock.
	ResultOK Result = "ok"
)
