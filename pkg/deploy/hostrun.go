package deploy

import (
	"context"
	"fmt"
	"time"

	"github.com/shipdeploy/ship/pkg/compose"
	"github.com/shipdeploy/ship/pkg/engine"
	"github.com/shipdeploy/ship/pkg/event"
	"github.com/shipdeploy/ship/pkg/redact"
	"github.com/shipdeploy/ship/pkg/release"
)

// hostTask is a deploy or rollback on one host, around the runner: what shipctl adds
// to it (the lock, the connection that may have to be made again, prune, the "done"
// event) and the HostResult it ends with.
type hostTask struct {
	s     *session
	em    *emitter
	h     *hostConn
	scrub *redact.Redactor
	me    Holder
	kind  Kind
	sha   string
	prev  string // current before; "" none
	// keep is how many releases prune keeps; 0 does not prune.
	keep int
	// listed is the host's releases, listed while the run goes on; nil: prune lists.
	listed *listing
	// pruning is closed once prune, started as current switched, is done; nil: not
	// started.
	pruning <-chan struct{}
}

func (t *hostTask) info(step event.Step, msg string) { t.em.info(t.h.name, step, msg) }
func (t *hostTask) warn(step event.Step, msg string) { t.em.warn(t.h.name, step, msg) }

// report shows a runner's note as the command's event.
func (t *hostTask) report(n Note) {
	t.em.emit(Event{Host: t.h.name, Step: n.Step, Level: n.Level, Service: n.Service, Msg: n.Msg + logText(n.Logs)})
}

// runner is the host's run of p with the engine's Up. Everything goes through the
// hostConn, so that a connection made again after a failure is the one used.
func (t *hostTask) runner(p *compose.Project, o runOptions) *Runner {
	store := t.s.store(t.h)
	events := func(step event.Step) func(engine.Event) { return engineEvents(t.em, t.h.name, step) }
	return &Runner{
		Kind: t.kind, Store: store, Engine: t.h, SHA: t.sha, Project: p, Prev: t.prev,
		Strategy: &Up{Engine: t.h, App: t.s.t.Project(), Wait: o.wait, Events: events, Report: t.report},
		Load: func(ctx context.Context, sha string) (*compose.Project, error) {
			return readReleaseProject(ctx, store, t.s.t.Project(), sha)
		},
		WaitTimeout: o.wait, JobTimeout: o.job, RestoreTimeout: o.wait + 2*time.Minute,
		Audit: release.AuditEntry{
			App: t.s.t.App, Env: t.s.t.Env.Name, Host: t.h.name, Who: t.me.Who, From: o.from,
		},
		Redact:    t.scrub.String,
		Report:    t.report,
		Failed:    t.failed,
		Ending:    t.ending,
		Unlocking: t.unlocking,
		Switched:  t.switched,
	}
}

// unlocking is the runner's Unlocking: the lock's release as steps of the run's
// last sequence (hostConn.unlockSteps), when the heartbeat knows the lock is the
// run's own. Their outcome is told as the unlock is ("unlocked"); when the move
// failed, finish releases the lock the long way.
func (t *hostTask) unlocking(ctx context.Context) ([]release.Step, func([]error)) {
	steps := t.h.unlockSteps(t.s.l)
	if steps == nil {
		return nil, nil
	}
	return steps, func(errs []error) {
		if len(errs) > 0 && errs[0] == nil {
			t.h.unlocked = true
			t.info(StepLock, "unlocked")
		}
	}
}

// switched is the runner's Switched: once current has switched, the heartbeat
// stops (the lock is released in the requests that follow), and prune starts, its
// requests out with the record's.
func (t *hostTask) switched(ctx context.Context) {
	t.h.lease.stop()
	if t.keep <= 0 || t.pruning != nil {
		return
	}
	done := make(chan struct{})
	t.pruning = done
	go func() {
		defer close(done)
		t.prune(ctx)
	}()
}

// prune removes old releases after a success, from what was listed during the run.
func (t *hostTask) prune(ctx context.Context) {
	if err := pruneListed(ctx, t.h, t.s.store(t.h), t.listed, t.keep, t.sha, t.h.name, t.em); err != nil {
		t.warn(StepPrune, err.Error())
	}
}

// ending is the runner's Ending: as the run's record begins, the lock's holder is
// read for the unlock (hostConn.readAhead); its requests go out with the record's,
// and the unlock after the record is one request.
func (t *hostTask) ending(ctx context.Context) {
	t.h.readAhead(ctx, t.s.l)
}

// runOptions are the run's timeouts and the release's origin.
type runOptions struct {
	wait, job time.Duration
	from      string
}

// failed shows the failure and makes sure the host can still be reached to put things
// back: the connection is made again when it broke.
func (t *hostTask) failed(ctx context.Context, step event.Step, err error) error {
	t.em.fail(t.h.name, step, t.scrub.Error(err).Error())
	if cerr := t.s.reconnect(ctx, t.h); cerr != nil {
		cerr = t.scrub.Error(cerr)
		t.em.fail(t.h.name, StepRestore, cerr.Error())
		return cerr
	}
	if step == StepUpload {
		// A part of the upload may be under .tmp/.
		_ = t.s.store(t.h).ClearTmp(ctx)
	}
	return nil
}

// finish ends the host's part after the run: the lock released, old releases pruned
// after a success, the "done" event; and the HostResult.
func (t *hostTask) finish(ctx context.Context, out Outcome) HostResult {
	bg := context.WithoutCancel(ctx)
	res := HostResult{Host: t.h.name, Result: out.Result, Current: out.Current, Err: t.scrub.Error(out.Err)}
	if out.Unreachable != nil {
		// Its heartbeat stops with it: the next deploy takes the lock over once stale.
		t.h.lease.stop()
		msg := fmt.Sprintf("its lock stays until its heartbeat is %s old (then the next deploy takes it over), or until shipctl unlock", StaleAfter*t.s.t.lockRefresh())
		if out.Changed {
			res.Result = ResultRestoreFailed
			msg = "the host may run a part of the new release, and " + msg
		}
		res.Err = fmt.Errorf("%w; the host cannot be reached again (%w): %s", res.Err, t.scrub.Error(out.Unreachable), msg)
		// The advice is in the event too: shipctl's last line points at the events above.
		t.em.emit(Event{Host: t.h.name, Step: StepDone, Level: LevelError, Msg: fmt.Sprintf("unreachable (%s failed; %s was current): %s", t.what(), release.Name(t.prev), msg)})
		return res
	}
	// The unlock and prune at once: their requests go out together (prune ran after
	// the unlock before, outside the lock, as it still does).
	// (Prune started as current switched, when the runner said so.)
	pruned := t.pruning
	if pruned == nil {
		p := make(chan struct{})
		pruned = p
		go func() {
			defer close(p)
			if res.Result == ResultDeployed && t.keep > 0 {
				t.prune(bg)
			}
		}()
	}
	t.unlock(bg)
	<-pruned
	t.em.emit(t.done(res, out.Changed))
	return res
}

// what is the run in a few words: "deploy of <sha>", "rollback to <sha>".
func (t *hostTask) what() string {
	if t.kind == KindRollback {
		return "rollback to " + release.Short(t.sha)
	}
	return "deploy of " + release.Short(t.sha)
}

// done is the host's last event: which release it is on.
func (t *hostTask) done(res HostResult, changed bool) Event {
	ev := Event{Host: t.h.name, Step: StepDone}
	switch {
	case res.Result == ResultDeployed && t.kind == KindRollback:
		ev.Msg = fmt.Sprintf("on %s (rolled back from %s)", release.Short(t.sha), release.Name(t.prev))
		return ev
	case res.Result == ResultDeployed:
		ev.Msg = fmt.Sprintf("on %s (deployed)", release.Short(t.sha))
		return ev
	}
	ev.Level = LevelError
	ev.Msg = fmt.Sprintf("on %s (%s failed", release.Name(res.Current), t.what())
	switch {
	case res.Result == ResultRestoreFailed:
		ev.Msg += "; restore failed: check the host)"
	case changed:
		ev.Msg += "; previous release restored)"
	default:
		ev.Msg += ")"
	}
	return ev
}

func (t *hostTask) unlock(ctx context.Context) {
	if err := t.h.unlock(ctx, t.s.l, t.me, t.em); err != nil {
		t.warn(StepLock, err.Error()+"; release it with shipctl unlock")
	}
}

// hostRun is the deploy on one host.
type hostRun struct {
	hostTask
	o   *Options
	rel *Release
}

func (r *hostRun) run(ctx context.Context) HostResult {
	run := r.runner(r.rel.Project, runOptions{wait: r.o.WaitTimeout, job: r.o.JobTimeout, from: r.o.From})
	err := ctx.Err()
	if err == nil && !r.o.Env.Agent {
		// The engine's part of the pull goes on during the upload.
		run.StartPull(ctx)
	}
	if err == nil {
		err = r.upload(ctx, run.Store)
	}
	if err != nil {
		return r.finish(ctx, run.Fail(ctx, StepUpload, err))
	}
	// The lock's holder.json was written along with the upload.
	if err := r.h.held(); err != nil {
		return r.finish(ctx, run.Fail(ctx, StepLock, err))
	}
	if r.keep > 0 {
		// What prune needs to know, asked while the engine works.
		r.listed = listReleases(context.WithoutCancel(ctx), run.Store)
	}
	if r.o.Env.Agent {
		// shipd does the rest: the upload is the last step of shipctl's own.
		if err := ctx.Err(); err != nil {
			return r.finish(ctx, run.Fail(ctx, StepApply, err))
		}
		return r.agent(ctx, run)
	}
	return r.finish(ctx, run.Run(ctx))
}

// upload writes the release's files to the host (Store.Upload: staged under .tmp/,
// renamed into releases/<name>; a release the host has keeps its compose file) through
// the run's store, which then records the result
// without reading release.json again.
func (r *hostRun) upload(ctx context.Context, store *release.Store) error {
	info := release.Info{
		SHA: r.rel.release(), Version: r.rel.SHA, Env: r.o.Env.Name, Subject: r.rel.Subject, Time: time.Now().UTC(), Who: r.me.Who, From: r.o.From,
		Result: release.Uploaded, Images: r.rel.Images, Built: r.rel.Built,
	}
	// What the preflight saw (Store.Look): the upload asks nothing again. The
	// agentless run records its result through this store: a release the host has
	// gets its release.json then, once (shipd records from what is on the host).
	look := r.h.look
	r.h.look = nil
	if err := store.UploadLooked(ctx, look, !r.o.Env.Agent, info, r.rel.File, r.rel.Files...); err != nil {
		return err
	}
	l := r.s.l
	also := ""
	for _, f := range r.rel.Files {
		also += ", " + f.Name + " (0600)"
	}
	r.info(StepUpload, fmt.Sprintf("uploaded %s (%d bytes, mode 0600)%s and release.json", l.ComposeFile(r.rel.release()), len(r.rel.File), also))
	return nil
}
