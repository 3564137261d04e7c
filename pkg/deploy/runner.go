package deploy

import (
	"context"
	"fmt"
	"time"

	"github.com/compose-spec/compose-go/v2/types"

	"github.com/shipdeploy/ship/pkg/compose"
	"github.com/shipdeploy/ship/pkg/engine"
	"github.com/shipdeploy/ship/pkg/event"
	"github.com/shipdeploy/ship/pkg/release"
)

// Kind is what a run does on a host.
type Kind string

// Kinds of run: the words of audit.log's event and shipd's state.
const (
	// KindDeploy: pull, pre-deploy jobs, apply, switch current, record.
	KindDeploy Kind = release.AuditDeploy
	// KindRollback: pull, apply, switch current, record; no jobs.
	KindRollback Kind = release.AuditRollback
	// KindRestore: pull and apply a release that is current already (shipd after a
	// restart cut a deploy off); no switch and no record.
	KindRestore Kind = "restore"
)

// Strategy is the apply step of a run: how the host's engine comes to run a release.
// Up (this package) applies the project with the engine's Up; shipd's swap (pkg/agent)
// replaces service by service, blue-green behind its proxy. A strategy is used by one
// run, from one goroutine.
type Strategy interface {
	// Progress turns the engine's events of step into the run's. The runner asks for
	// it before the engine works for the step (pull, job): a strategy that counts a
	// job's start as a change notes it there.
	Progress(step event.Step) func(engine.Event)
	// Apply makes the host run p's services (not its jobs), the release sha, and
	// waits until they are healthy. step is StepApply, or StepRestore when it puts
	// the previous release back.
	Apply(ctx context.Context, step event.Step, sha string, p *compose.Project) error
	// Down removes the app's containers (not its volumes): a failed run with no
	// release to go back to.
	Down(ctx context.Context) error
	// Changed reports whether the host may run something else than before the run:
	// a failure then puts the previous release back.
	Changed() bool
}

// JobEngine is what the runner asks of the host's engine besides the strategy:
// *engine.Engine and the SSH host are ones.
type JobEngine interface {
	PullImages(ctx context.Context, p *types.Project, services []string, progress func(engine.Event)) error
	RunJob(ctx context.Context, p *types.Project, service string, o engine.JobOptions) error
}

// Note is one thing a run did, for the caller to turn into its own event.
type Note struct {
	Step    event.Step
	Level   event.Level
	Service string
	Msg     string
	// Logs are a failed job's last log lines.
	Logs []string
}

// Runner is one run on one host: "pull -> pre-deploy jobs -> apply -> health ->
// switch current -> record; on failure put the previous release back (or take the app
// down if there was none)", written once for shipctl's agentless deploy and rollback
// and for shipd's deploy, rollback and restore. What differs between them is the
// Strategy and the hooks; the lock, the connection and shipd's state stay with the
// callers.
type Runner struct {
	Kind     Kind
	Store    *release.Store
	Engine   JobEngine
	Strategy Strategy
	// SHA and Project are the release to run; Prev the release current before the
	// run ("" none), which a failure puts back.
	SHA     string
	Project *compose.Project
	Prev    string
	// Load reads a release the host has (the previous one, for a restore).
	Load func(ctx context.Context, sha string) (*compose.Project, error)
	// WaitTimeout bounds a job's dependencies; JobTimeout each job; RestoreTimeout
	// the putting back of the previous release after a failure.
	WaitTimeout, JobTimeout, RestoreTimeout time.Duration
	// Audit is the run's audit.log line, filled in by the runner (event, sha, prev,
	// result, current, error).
	Audit release.AuditEntry
	// Redact scrubs the error before it is written to audit.log; may be nil.
	Redact func(string) string
	// Report receives the run's notes; may be nil.
	Report func(Note)
	// Failed is told of the failure at step, before anything is put back; an error
	// from it (shipctl: the host cannot be reached again) ends the run there,
	// unrecorded, with Outcome.Unreachable set. May be nil.
	Failed func(ctx context.Context, step event.Step, err error) error
	// Ending, when set, is called as the run's record begins, and must return at
	// once: what it starts goes out with the record's requests. shipctl reads its
	// lock's holder then, for the unlock that follows the record. May be nil.
	Ending func(ctx context.Context)
	// Unlocking, when set, gives the steps that release the caller's lock, sent
	// last in the sequence that switches current and records the run (end), and
	// done, told of their errors; no steps: the caller releases its lock after the
	// run. shipctl gives them when its heartbeat knows the lock is its own. May be
	// nil.
	Unlocking func(ctx context.Context) (steps []release.Step, done func(errs []error))
	// Switched, when set, is called once current has switched, before the record's
	// steps go out, and must return at once: shipctl stops its heartbeat there and
	// starts prune. May be nil.
	Switched func(ctx context.Context)

	changed      bool
	uploadFailed bool // the release's files are not all on the host
	// staged gives the release's release.json as deployed, staged while the
	// release is applied (stageResult; nil when its write failed): the end puts it
	// in place. nil: none, or taken (then st is it).
	staged chan *release.Staged
	st     *release.Staged
	// pulled gives the pull's outcome, when StartPull began it; stopPull cancels it.
	pulled   chan error
	stopPull context.CancelFunc
}

// Outcome is how a run ended.
type Outcome struct {
	Result event.Result
	// Current is the release current at the end ("" none).
	Current string
	// Err is why the run failed, with the restore's failure if that failed too.
	Err error
	// Cause is the failure itself; Step where it happened.
	Cause error
	Step  event.Step
	// Changed says that the host's containers were touched (and put back).
	Changed bool
	// Unreachable is why the host could not be reached after the failure: nothing was
	// put back or recorded.
	Unreachable error
}

func (r *Runner) note(step event.Step, level event.Level, msg string) {
	if r.Report != nil {
		r.Report(Note{Step: step, Level: level, Msg: msg})
	}
}

// Run carries the run out. Once a change to the host has started, a cancellation of
// ctx only stops the step under way: what follows (putting the previous release
// back, the record) runs under its own context.
func (r *Runner) Run(ctx context.Context) Outcome {
	step, err := r.forward(ctx)
	if err != nil {
		return r.Fail(ctx, step, err)
	}
	if r.Kind != KindRestore {
		if err := ctx.Err(); err != nil {
			return r.Fail(ctx, StepSwitch, err)
		}
		if err := r.end(ctx); err != nil {
			// The release runs: a failure now must put the previous one back.
			r.changed = true
			return r.Fail(ctx, StepSwitch, err)
		}
	}
	return Outcome{Result: ResultDeployed, Current: r.SHA, Changed: true}
}

// Fail ends a run that failed at step: Run's own failures, and those of a step the
// caller runs before Run (shipctl's upload). The Failed hook is told; the previous
// release is put back if the run changed anything (a restore run puts nothing back);
// then the record. It runs under a context of its own.
func (r *Runner) Fail(ctx context.Context, step event.Step, err error) Outcome {
	bg := context.WithoutCancel(ctx)
	r.uploadFailed = step == StepUpload
	if r.pulled != nil {
		// A pull begun before the upload is not waited for to its end.
		r.stopPull()
		_ = r.waitPull()
	}
	out := Outcome{Result: ResultFailed, Current: r.Prev, Err: err, Cause: err, Step: step, Changed: r.changed}
	if r.Failed != nil {
		if uerr := r.Failed(bg, step, err); uerr != nil {
			out.Unreachable = uerr
			return out
		}
	}
	if r.Kind == KindRestore {
		return out
	}
	if r.changed {
		current, rerr := r.restore(bg)
		out.Current = current
		if rerr != nil {
			r.note(StepRestore, LevelError, rerr.Error())
			out.Result = ResultRestoreFailed
			out.Err = fmt.Errorf("%w; restoring %s failed: %w", err, release.Name(r.Prev), rerr)
		}
	} else {
		r.note(StepRestore, LevelInfo, fmt.Sprintf("nothing was changed: %s is still current", release.Name(r.Prev)))
	}
	r.Record(bg, out.Result, out.Current, out.Err)
	return out
}

// forward runs the steps up to the switch; the error says at which step it failed.
// r.changed says whether a failure must put the previous release back.
func (r *Runner) forward(ctx context.Context) (event.Step, error) {
	defer func() { r.changed = r.changed || r.Strategy.Changed() }()
	p := r.Project
	if err := ctx.Err(); err != nil {
		return StepPull, err
	}
	var jobs []string
	if r.Kind == KindDeploy {
		jobs = p.Jobs()
	}
	if r.pulled == nil {
		r.StartPull(ctx)
	}
	if err := r.waitPull(); err != nil {
		return StepPull, fmt.Errorf("pull: %w", err)
	}
	for _, job := range jobs {
		if err := ctx.Err(); err != nil {
			return StepJob, err
		}
		if r.Report != nil {
			r.Report(Note{Step: StepJob, Service: job, Msg: "running pre-deploy job " + job})
		}
		out := &jobOutput{}
		err := r.Engine.RunJob(ctx, p.Project, job, engine.JobOptions{
			WaitTimeout: r.WaitTimeout, Timeout: r.JobTimeout, Progress: r.Strategy.Progress(StepJob),
			Output: func(l engine.LogLine) {
				out.add(l.Text)
				if r.Report != nil {
					r.Report(Note{Step: StepJobOutput, Service: job, Msg: l.Text})
				}
			},
		})
		r.recordJob(context.WithoutCancel(ctx), job, err, out)
		if err != nil {
			return StepJob, err
		}
		if r.Report != nil {
			r.Report(Note{Step: StepJob, Service: job, Msg: "pre-deploy job " + job + " succeeded"})
		}
	}
	if err := ctx.Err(); err != nil {
		return StepApply, err
	}
	if r.Kind != KindRestore {
		r.stageResult(ctx)
	}
	if err := r.Strategy.Apply(ctx, StepApply, r.SHA, p); err != nil {
		return StepApply, err
	}
	return "", nil
}

// StartPull begins the run's pull (the release's images, its jobs' too for a
// deploy) in the background; Run waits for it. shipctl's agentless deploy starts it
// before its upload, so that the engine's questions and the pull go on while the
// release's files are written: pulling changes nothing the app runs. A run that
// fails before Run (Fail) stops it and waits for it.
func (r *Runner) StartPull(ctx context.Context) {
	if r.pulled != nil {
		return
	}
	services := r.Project.WithoutJobs().ServiceNames()
	if r.Kind == KindDeploy {
		services = nil
	}
	ctx, cancel := context.WithCancel(ctx)
	pulled := make(chan error, 1)
	r.pulled, r.stopPull = pulled, cancel
	progress := r.Strategy.Progress(StepPull)
	go func() { pulled <- r.Engine.PullImages(ctx, r.Project.Project, services, progress) }()
}

// waitPull waits for the pull StartPull began.
func (r *Runner) waitPull() error {
	err := <-r.pulled
	r.pulled <- err // for a second wait
	r.stopPull()
	return err
}

// stageResult stages the release's release.json as deployed (Store.StageInfo) in
// the background while the engine applies the release, so that the end puts it in
// place with one rename, sent with the switch's sequence. It stays under .tmp/
// until then: the result never says deployed before current has switched. A
// failed run discards it; a failed staging costs nothing but that: the record
// writes release.json itself. CurrentSince is when the release was applied.
func (r *Runner) stageResult(ctx context.Context) {
	staged := make(chan *release.Staged, 1)
	r.staged = staged
	go func() {
		st, err := r.Store.StageInfo(ctx, r.SHA, func(info *release.Info) {
			info.Result = release.Deployed
			info.CurrentSince = time.Now().UTC()
		})
		if err != nil {
			st = nil
		}
		staged <- st
	}()
}

// takeStaged waits for the release.json staged by stageResult; nil: none.
func (r *Runner) takeStaged() *release.Staged {
	if ch := r.staged; ch != nil {
		r.staged = nil
		r.st = <-ch
	}
	st := r.st
	r.st = nil
	return st
}

// restore puts the previous release back after a failure, with the strategy (its
// jobs do not run; current never moved), under its own timeout. Without a previous
// release the app is taken down (volumes are kept). It returns the release current
// afterwards.
func (r *Runner) restore(ctx context.Context) (string, error) {
	if r.RestoreTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, r.RestoreTimeout)
		defer cancel()
	}
	if r.Prev == "" {
		r.note(StepRestore, LevelWarn, "no previous release to go back to: removing the new release's containers (volumes are kept)")
		if err := r.Strategy.Down(ctx); err != nil {
			return "", err
		}
		r.note(StepRestore, LevelInfo, "removed; the host runs no release of "+r.Project.Name)
		return "", nil
	}
	r.note(StepRestore, LevelInfo, "putting back "+release.Short(r.Prev))
	p, err := r.Load(ctx, r.Prev)
	if err != nil {
		return r.Prev, err
	}
	if err := r.Engine.PullImages(ctx, p.Project, p.WithoutJobs().ServiceNames(), r.Strategy.Progress(StepRestore)); err != nil {
		return r.Prev, fmt.Errorf("pull: %w", err)
	}
	if err := r.Strategy.Apply(ctx, StepRestore, r.Prev, p); err != nil {
		return r.Prev, err
	}
	r.note(StepRestore, LevelInfo, release.Short(r.Prev)+" is running and healthy again")
	return r.Prev, nil
}

// Record writes the run's outcome: release.json's result (a deploy's release, or the
// release a rollback made current) and a line in audit.log. Failures are warnings.
// Fail records (Run records with its switch: end); a caller records an outcome it
// learnt elsewhere (shipd refused a request).
func (r *Runner) Record(ctx context.Context, result event.Result, current string, err error) {
	e := r.auditEntry(result, current, err)
	if r.Ending != nil {
		r.Ending(ctx)
	}
	// release.json and audit.log at once: their requests go out together.
	var aerr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		aerr = r.Store.AppendAudit(ctx, e)
	}()
	defer func() {
		<-done
		if aerr != nil {
			r.note(StepAudit, LevelWarn, aerr.Error())
		}
	}()
	staged := r.takeStaged()
	var serr error
	switch {
	case result == ResultDeployed && staged != nil:
		serr = r.Store.Commit(ctx, staged)
	case result == ResultDeployed:
		serr = r.Store.SetResult(ctx, r.SHA, release.Deployed, true)
	case r.Kind == KindDeploy && !r.uploadFailed:
		r.Store.Discard(ctx, staged)
		serr = r.Store.SetResult(ctx, r.SHA, release.Failed, false)
	default:
		r.Store.Discard(ctx, staged)
	}
	if serr != nil {
		r.note(StepAudit, LevelWarn, serr.Error())
	}
}

// auditEntry is the run's audit.log line for its outcome.
func (r *Runner) auditEntry(result event.Result, current string, err error) release.AuditEntry {
	e := r.Audit
	e.Event, e.SHA, e.Prev, e.Result, e.Current = string(r.Kind), r.SHA, r.Prev, result, current
	if err != nil {
		e.Error = err.Error()
	}
	if r.Redact != nil {
		e.Error, e.Reason = r.Redact(e.Error), r.Redact(e.Reason)
	}
	return e
}
