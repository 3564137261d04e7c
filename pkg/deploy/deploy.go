package deploy

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/compose-spec/compose-go/v2/types"

	"github.com/shipdeploy/ship/pkg/compose"
	"github.com/shipdeploy/ship/pkg/engine"
	"github.com/shipdeploy/ship/pkg/notify"
	"github.com/shipdeploy/ship/pkg/plan"
	"github.com/shipdeploy/ship/pkg/redact"
	"github.com/shipdeploy/ship/pkg/release"
)

// Sentinel errors, checked with errors.Is; the errors that match them name the hosts.
var (
	// ErrDeployFailed: the deploy failed on a host, which runs the release it ran
	// before (put back, or never left).
	ErrDeployFailed = errors.New("deploy failed")
	// ErrRestoreFailed: the deploy failed on a host, and so did putting its previous
	// release back.
	ErrRestoreFailed = errors.New("deploy failed and the previous release could not be restored")
	// ErrNotInRegistry: an image of the release is not in the registry (not pushed).
	ErrNotInRegistry = errors.New("image not in the registry")
)

// Defaults of Options.
const (
	DefaultWaitTimeout = 2 * time.Minute
	DefaultJobTimeout  = 10 * time.Minute
	jobLogLines        = 20
)

// Registry says whether a registry holds an image (a HEAD of its manifest, with the
// registry's credentials).
type Registry interface {
	HasManifest(ctx context.Context, ref string) (bool, error)
}

// Options say what to deploy where.
type Options struct {
	Target
	Release *Release
	// Registry is asked for every image ship built before any host is touched; nil
	// skips the check.
	Registry Registry
	// From is where the release came from: the git remote branch, or the machine.
	From string
	// LockWait is how long to wait for a host's lock held by someone else; 0 fails at once.
	LockWait time.Duration
	// Parallel is how many hosts are deployed at once; 0 takes the environment's
	// parallel (0 there: all).
	Parallel int
	// WaitTimeout bounds the wait until the release is healthy on a host; default 2m.
	WaitTimeout time.Duration
	// JobTimeout bounds each pre-deploy job; default 10m.
	JobTimeout time.Duration
	// AgentWait bounds, in agent environments, the wait for shipd to answer again when
	// its answer was cut (shipd restarted, the connection broke); default
	// DefaultAgentWait.
	AgentWait time.Duration
	// Confirm is called once every host has passed the preflight, before the first
	// change to any host: it shows the preview, asks, counts down. An error (or the
	// context ending) stops the deploy with nothing touched.
	Confirm func(ctx context.Context, p Preview) error
	// Notify, when set, is told of the start and the end of the deploy.
	Notify *notify.Webhook
}

// Preview is what a deploy is about to do, for the confirmation.
type Preview struct {
	App, Env     string
	SHA, Subject string
	Hosts        []HostPreview
}

// HostPreview is one host in a Preview.
type HostPreview struct {
	Host string
	// Current is the release current on the host ("" none).
	Current string
	Plan    plan.Plan
}

// Results of a host, in HostResult.Result and audit.log.
const (
	ResultDeployed      = "deployed"       // the release is current and healthy
	ResultFailed        = "failed"         // failed; the host runs its previous release (put back or never left)
	ResultRestoreFailed = "restore-failed" // failed, and putting the previous release back failed too
	ResultLocked        = "locked"         // another deploy holds the host's lock; nothing touched
	ResultSkipped       = "skipped"        // not started: another host was locked, or the command was cancelled
)

// HostResult is how a command ended on one host.
type HostResult struct {
	Host   string
	Result string
	// Current is the release current on the host at the end ("" none).
	Current string
	// Err is why it failed (redacted); nil when deployed.
	Err error
}

// Summary is how a deploy or rollback ended, host by host.
type Summary struct {
	App, Env string
	SHA      string
	Hosts    []HostResult
}

// Run deploys a release to every host of the environment:
//
//  1. preflight, before any host is changed: every image ship built is in the
//     registry, every host answers over SSH with SFTP and its engine, and the engine
//     can run the release; then the plan per host;
//  2. o.Confirm (the confirmation and the grace countdown);
//  3. the lock on every host, one after the other;
//  4. on each host (o.Parallel at once): upload, pull, pre-deploy jobs, apply, wait
//     until healthy, switch current, audit.log, unlock, prune. A host that fails
//     puts its previous release back; the others go on.
//
// The Summary says which host is on which release. The error matches
// ErrRestoreFailed, ErrDeployFailed or ErrLocked, the worst that happened, or
// context.Canceled.
func Run(ctx context.Context, o Options) (*Summary, error) {
	rel := o.Release
	if rel == nil || rel.Project == nil {
		return nil, errors.New("deploy: no release")
	}
	em := newEmitter(o.Progress, o.Redactor)
	sum := &Summary{App: o.App, Env: o.Env.Name, SHA: rel.SHA}
	if o.WaitTimeout <= 0 {
		o.WaitTimeout = DefaultWaitTimeout
	}
	if o.JobTimeout <= 0 {
		o.JobTimeout = DefaultJobTimeout
	}
	if o.AgentWait <= 0 {
		o.AgentWait = DefaultAgentWait
	}
	parallel := o.Parallel
	if parallel <= 0 {
		parallel = o.Env.Parallel
	}

	if err := checkRegistry(ctx, o.Registry, rel.Built, em); err != nil {
		return sum, o.Redactor.Error(err)
	}
	em.info("", StepPreflight, fmt.Sprintf("connecting to %d host(s)", len(o.Env.Hosts)))
	s, err := open(ctx, o.Target, em)
	if err != nil {
		return sum, fmt.Errorf("preflight: %w", err)
	}
	defer s.close()
	preview, err := s.preflight(ctx, rel, o)
	if err != nil {
		return sum, err
	}
	if o.Confirm != nil {
		if err := o.Confirm(ctx, preview); err != nil {
			return sum, err
		}
	}
	if err := ctx.Err(); err != nil {
		return sum, err
	}
	// From here on hosts change: a cancellation stops the current step, and the host
	// puts its previous release back over the connection it still has.
	s.hold()

	n := newNotifications(o.Notify, em, o.Redactor)
	defer n.Wait()
	n.Post(ctx, notify.Message{Event: notify.Start, App: o.App, Env: o.Env.Name, SHA: rel.SHA, Subject: rel.Subject, Hosts: hostNames(s), Who: o.who()})

	me := Me("deploy", rel.SHA)
	me.Who = o.who()
	sum.Hosts = make([]HostResult, len(s.hosts))
	for i, h := range s.hosts {
		sum.Hosts[i] = HostResult{Host: h.name, Result: ResultSkipped, Current: preview.Hosts[i].Current}
	}
	if err := s.lockAll(ctx, me, o.LockWait, sum.Hosts); err != nil {
		err = o.Redactor.Error(err)
		n.Post(ctx, endNotification(notify.Failure, o, sum, err))
		return sum, err
	}
	s.each(ctx, parallel, func(ctx context.Context, i int, h *hostConn) {
		r := &hostRun{o: &o, s: s, em: em, l: s.l, h: h, prev: preview.Hosts[i].Current, me: me, rel: rel}
		sum.Hosts[i] = r.run(ctx)
	})
	err = sum.err(ctx, "deploy of "+short(rel.SHA))
	event := notify.Success
	if err != nil {
		event = notify.Failure
	}
	n.Post(ctx, endNotification(event, o, sum, err))
	return sum, err
}

// checkRegistry asks the registry for every image ship built, all at once.
func checkRegistry(ctx context.Context, reg Registry, refs []string, em *emitter) error {
	if reg == nil || len(refs) == 0 {
		return nil
	}
	em.info("", StepPreflight, fmt.Sprintf("checking the registry for %s", strings.Join(refs, ", ")))
	var errs []error
	for _, ref := range refs {
		ok, err := reg.HasManifest(ctx, ref)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("check %s in the registry: %w", ref, err))
		case !ok:
			errs = append(errs, fmt.Errorf("%w: %s; push it first (shipctl push)", ErrNotInRegistry, ref))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("preflight: %w", errors.Join(errs...))
	}
	return nil
}

// preflight checks every host at once: SFTP (reading current), the engine (a ping
// and Check of the release), and plans the release against what the host runs. The
// error names every host that failed.
func (s *session) preflight(ctx context.Context, rel *Release, o Options) (Preview, error) {
	p := rel.Project
	hashes := map[string]string{}
	for name, svc := range p.Services {
		h, err := engine.ConfigHash(svc)
		if err != nil {
			return Preview{}, err
		}
		hashes[name] = h
	}
	preview := Preview{App: o.App, Env: o.Env.Name, SHA: rel.SHA, Subject: rel.Subject, Hosts: make([]HostPreview, len(s.hosts))}
	errs := make([]error, len(s.hosts))
	s.each(ctx, 0, func(ctx context.Context, i int, h *hostConn) {
		hp, err := hostPreflight(ctx, s, h, p, hashes)
		if err != nil {
			errs[i] = fmt.Errorf("%s: %w", h.name, err)
			return
		}
		preview.Hosts[i] = hp
	})
	if err := errors.Join(errs...); err != nil {
		if ctx.Err() != nil {
			return preview, ctx.Err()
		}
		return preview, o.Redactor.Error(fmt.Errorf("preflight: %w", err))
	}
	return preview, nil
}

func hostPreflight(ctx context.Context, s *session, h *hostConn, p *compose.Project, hashes map[string]string) (HostPreview, error) {
	current, err := readCurrent(ctx, h, s.l)
	if err != nil {
		return HostPreview{}, err
	}
	version, err := h.Ping(ctx)
	if err != nil {
		return HostPreview{}, err
	}
	if err := h.Check(ctx, p.Project, nil); err != nil {
		return HostPreview{}, err
	}
	cs, err := h.Containers(ctx, s.t.App)
	if err != nil {
		return HostPreview{}, err
	}
	var observed []plan.Observed
	for _, c := range cs {
		if !c.OneOff {
			observed = append(observed, plan.Observed{Service: c.Service, Image: c.Image, ConfigHash: c.ConfigHash, Running: c.State == "running"})
		}
	}
	on := "no release yet"
	if current != "" {
		on = "current " + short(current)
	}
	if s.t.Env.Agent {
		st, err := agentPreflight(ctx, s, h)
		if err != nil {
			return HostPreview{}, err
		}
		on += fmt.Sprintf("; shipd %s, up %s", agentVersion(st), st.Uptime.Std())
	}
	s.em.info(h.name, StepPreflight, fmt.Sprintf("ready: SFTP, Docker engine %s; %s", version, on))
	return HostPreview{Host: h.name, Current: current, Plan: plan.Diff(h.name, p, hashes, observed)}, nil
}

// lockAll takes the lock on every host, one after the other in the order of
// ship.yaml, so that two deploys never interleave across hosts. When one host is
// locked, the locks taken are released and nothing else happens.
func (s *session) lockAll(ctx context.Context, me Holder, wait time.Duration, results []HostResult) error {
	deadline := time.Now().Add(wait)
	for i, h := range s.hosts {
		err := acquire(ctx, h, s.l, h.name, me, max(0, time.Until(deadline)), s.em)
		if err == nil {
			continue
		}
		for j := range i {
			if rerr := releaseLock(context.WithoutCancel(ctx), s.hosts[j], s.l, s.hosts[j].name, me, s.em); rerr != nil {
				s.em.warn(s.hosts[j].name, StepLock, rerr.Error()+"; release it with shipctl unlock")
			}
		}
		results[i].Err = err
		if errors.Is(err, ErrLocked) {
			results[i].Result = ResultLocked
			s.em.fail(h.name, StepLock, err.Error())
		} else {
			s.em.fail(h.name, StepLock, err.Error())
			err = fmt.Errorf("%s: %w", h.name, err)
		}
		return err
	}
	return nil
}

// hostRun is the deploy on one host.
type hostRun struct {
	o    *Options
	s    *session
	em   *emitter
	l    release.Layout
	h    *hostConn
	rel  *Release
	prev string // current before the deploy; "" none
	me   Holder

	uploaded bool // releases/<sha> holds the new files
	touched  bool // the engine may have changed a container
}

func (r *hostRun) info(step, msg string) { r.em.info(r.h.name, step, msg) }
func (r *hostRun) warn(step, msg string) { r.em.warn(r.h.name, step, msg) }

func (r *hostRun) run(ctx context.Context) HostResult {
	steps := []struct {
		name string
		fn   func(context.Context) error
	}{
		{StepUpload, r.upload},
		{StepPull, r.pull},
		{StepJob, r.jobs},
		{StepApply, r.apply},
		{StepSwitch, r.switchCurrent},
	}
	if r.o.Env.Agent {
		// shipd does the rest: the upload is the last step of shipctl's own.
		steps = steps[:1]
	}
	for _, step := range steps {
		if err := ctx.Err(); err != nil {
			return r.fail(ctx, step.name, err)
		}
		if err := step.fn(ctx); err != nil {
			return r.fail(ctx, step.name, err)
		}
	}
	if r.o.Env.Agent {
		if err := ctx.Err(); err != nil {
			return r.fail(ctx, StepApply, err)
		}
		return r.agent(ctx)
	}
	// The release is current: what follows cannot undo that, and its failures are
	// warnings.
	bg := context.WithoutCancel(ctx)
	r.setResult(bg, release.Deployed, true)
	r.audit(bg, ResultDeployed, r.rel.SHA, nil)
	r.unlock(bg)
	if err := prune(bg, r.h, r.l, r.o.Env.Keep, r.rel.SHA, r.h.name, r.em); err != nil {
		r.warn(StepPrune, err.Error())
	}
	r.em.emit(Event{Host: r.h.name, Step: StepDone, Msg: fmt.Sprintf("on %s (deployed)", short(r.rel.SHA))})
	return HostResult{Host: r.h.name, Result: ResultDeployed, Current: r.rel.SHA}
}

// fail ends a host's deploy that failed at step: the previous release is put back
// if anything was touched, then release.json, audit.log and the lock.
func (r *hostRun) fail(ctx context.Context, step string, err error) HostResult {
	err = r.o.Redactor.Error(err)
	r.em.fail(r.h.name, step, err.Error())
	res := HostResult{Host: r.h.name, Result: ResultFailed, Current: r.prev, Err: err}
	bg := context.WithoutCancel(ctx)
	if cerr := r.s.reconnect(bg, r.h); cerr != nil {
		cerr = r.o.Redactor.Error(cerr)
		r.em.fail(r.h.name, StepRestore, cerr.Error())
		msg := "its lock stays; release it with shipctl unlock once the host answers"
		if r.touched {
			res.Result = ResultRestoreFailed
			msg = "the host may run a part of the new release, and " + msg
		}
		res.Err = fmt.Errorf("%w; the host cannot be reached again (%w): %s", err, cerr, msg)
		r.em.emit(Event{Host: r.h.name, Step: StepDone, Level: LevelError, Msg: fmt.Sprintf("unreachable (deploy of %s failed; %s was current)", short(r.rel.SHA), releaseName(r.prev))})
		return res
	}
	if !r.uploaded {
		// A part of the upload may be under .tmp/.
		_ = r.h.RemoveAll(bg, r.l.Tmp())
	}
	if r.touched {
		current, rerr := r.restore(bg)
		res.Current = current
		if rerr != nil {
			rerr = r.o.Redactor.Error(rerr)
			r.em.fail(r.h.name, StepRestore, rerr.Error())
			res.Result = ResultRestoreFailed
			res.Err = fmt.Errorf("%w; restoring %s failed: %w", err, releaseName(r.prev), rerr)
		}
	} else {
		r.info(StepRestore, fmt.Sprintf("nothing was changed: %s is still current", releaseName(r.prev)))
	}
	if r.uploaded {
		r.setResult(bg, release.Failed, false)
	}
	r.audit(bg, res.Result, res.Current, res.Err)
	r.unlock(bg)
	msg := fmt.Sprintf("on %s (deploy of %s failed", releaseName(res.Current), short(r.rel.SHA))
	switch {
	case res.Result == ResultRestoreFailed:
		msg += "; restore failed: check the host)"
	case r.touched:
		msg += "; previous release restored)"
	default:
		msg += ")"
	}
	r.em.emit(Event{Host: r.h.name, Step: StepDone, Level: LevelError, Msg: msg})
	return res
}

func releaseName(sha string) string {
	if sha == "" {
		return "no release"
	}
	return short(sha)
}

// upload writes releases/<sha>/docker-compose.yml (mode 0600) and release.json. Both
// are staged under .tmp/ and renamed into place, so that releases/ never holds a
// partial file, even when the connection is cut in the middle.
func (r *hostRun) upload(ctx context.Context) error {
	f, l, sha := r.h, r.l, r.rel.SHA
	if err := f.RemoveAll(ctx, l.Tmp()); err != nil {
		return fmt.Errorf("empty %s: %w", l.Tmp(), err)
	}
	for _, dir := range []string{l.Tmp(), l.Releases()} {
		if err := f.MkdirAll(ctx, dir); err != nil {
			return fmt.Errorf("create %s: %w", dir, err)
		}
	}
	info := release.Info{
		SHA: sha, Subject: r.rel.Subject, Time: time.Now().UTC(), Who: r.me.Who, From: r.o.From,
		Result: release.Uploaded, Images: r.rel.Images, Built: r.rel.Built,
	}
	if old, err := readReleaseInfo(ctx, f, l, sha); err == nil {
		info.CurrentSince = old.CurrentSince
	}
	infoJSON, err := json.MarshalIndent(info, "", "  ")
	if err != nil {
		return err
	}
	stage := path.Join(l.Tmp(), "release-"+randomSuffix())
	if err := f.Mkdir(ctx, stage); err != nil {
		return fmt.Errorf("create %s: %w", stage, err)
	}
	files := []struct {
		name string
		data []byte
		mode fs.FileMode
	}{
		{"docker-compose.yml", r.rel.File, 0o600},
		{"release.json", append(infoJSON, '\n'), 0o644},
	}
	for _, file := range files {
		if err := f.WriteFile(ctx, path.Join(stage, file.name), file.data, file.mode); err != nil {
			return fmt.Errorf("upload %s: %w", file.name, err)
		}
	}
	_, err = f.ReadDir(ctx, l.Release(sha))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := f.Rename(ctx, stage, l.Release(sha)); err != nil {
			return fmt.Errorf("move the upload to %s: %w", l.Release(sha), err)
		}
	case err != nil:
		return fmt.Errorf("read %s: %w", l.Release(sha), err)
	default:
		// A redeploy of a release the host has: each file is replaced in one step.
		for _, file := range files {
			if err := f.Rename(ctx, path.Join(stage, file.name), path.Join(l.Release(sha), file.name)); err != nil {
				return fmt.Errorf("replace %s: %w", path.Join(l.Release(sha), file.name), err)
			}
		}
		_ = f.RemoveAll(ctx, stage)
	}
	r.uploaded = true
	r.info(StepUpload, fmt.Sprintf("uploaded %s (%d bytes, mode 0600) and release.json", l.ComposeFile(sha), len(r.rel.File)))
	return nil
}

// pull pulls the release's images that the host's engine lacks, as docker compose up
// would: pull_policy always pulls every time, never and build never.
func (r *hostRun) pull(ctx context.Context) error {
	return pullImages(ctx, r.h, r.rel.Project, r.em, r.h.name)
}

func pullImages(ctx context.Context, h Host, p *compose.Project, em *emitter, host string) error {
	policy := map[string]string{}
	for _, s := range p.Services {
		if s.Image == "" {
			continue
		}
		pol := s.PullPolicy
		switch pol {
		case "", types.PullPolicyIfNotPresent:
			pol = types.PullPolicyMissing
		}
		if old, ok := policy[s.Image]; !ok || pol == types.PullPolicyAlways || old == types.PullPolicyNever || old == types.PullPolicyBuild {
			policy[s.Image] = pol
		}
	}
	refs := make([]string, 0, len(policy))
	for ref := range policy {
		refs = append(refs, ref)
	}
	sort.Strings(refs)
	for _, ref := range refs {
		switch policy[ref] {
		case types.PullPolicyNever, types.PullPolicyBuild:
			continue
		case types.PullPolicyAlways:
		default:
			has, err := h.HasImage(ctx, ref)
			if err != nil {
				return err
			}
			if has {
				em.info(host, StepPull, ref+" is on the host")
				continue
			}
		}
		em.info(host, StepPull, "pulling "+ref)
		if err := h.Pull(ctx, ref); err != nil {
			return fmt.Errorf("pull %s: %w", ref, err)
		}
		em.info(host, StepPull, "pulled "+ref)
	}
	return nil
}

// JobError says that a pre-deploy job failed, with its last log lines.
type JobError struct {
	Service string
	Code    int
	Logs    []string
}

func (e *JobError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "pre-deploy job %s exited with code %d", e.Service, e.Code)
	if len(e.Logs) > 0 {
		b.WriteString("; its last log lines:")
		for _, l := range e.Logs {
			b.WriteString("\n    " + l)
		}
	}
	return b.String()
}

// jobs runs each pre-deploy job (with what it depends on) with the new images and
// waits for it to exit; a job that fails stops the deploy before any switch.
func (r *hostRun) jobs(ctx context.Context) error {
	p := r.rel.Project
	for _, job := range jobs(p) {
		r.em.emit(Event{Host: r.h.name, Step: StepJob, Service: job, Msg: "running pre-deploy job " + job})
		r.touched = true
		if err := r.h.Up(ctx, p.Project, engine.UpOptions{Services: []string{job}, WaitTimeout: r.o.WaitTimeout, Progress: r.engineEvents(StepJob)}); err != nil {
			return fmt.Errorf("start pre-deploy job %s: %w", job, err)
		}
		jctx, cancel := context.WithTimeout(ctx, r.o.JobTimeout)
		code, err := r.h.Wait(jctx, r.o.App, job)
		cancel()
		if err != nil {
			if jctx.Err() != nil && ctx.Err() == nil {
				return fmt.Errorf("pre-deploy job %s did not finish within %s", job, r.o.JobTimeout)
			}
			return fmt.Errorf("pre-deploy job %s: %w", job, err)
		}
		if code != 0 {
			je := &JobError{Service: job, Code: code}
			_ = r.h.Logs(context.WithoutCancel(ctx), r.o.App, engine.LogOptions{Services: []string{job}, Tail: fmt.Sprint(jobLogLines)}, func(l engine.LogLine) {
				je.Logs = append(je.Logs, l.Text)
			})
			return je
		}
		r.em.emit(Event{Host: r.h.name, Step: StepJob, Service: job, Msg: "pre-deploy job " + job + " succeeded"})
	}
	return nil
}

// apply makes the engine run the release (without its jobs, whose containers it
// removes) and waits until every service is healthy.
func (r *hostRun) apply(ctx context.Context) error {
	r.touched = true
	r.info(StepApply, "applying "+short(r.rel.SHA))
	return r.h.Up(ctx, withoutJobs(r.rel.Project), engine.UpOptions{
		Wait: true, WaitTimeout: r.o.WaitTimeout, RemoveOrphans: true, Progress: r.engineEvents(StepApply),
	})
}

func (r *hostRun) engineEvents(step string) func(engine.Event) {
	return engineEvents(r.em, r.h.name, step)
}

func engineEvents(em *emitter, host, step string) func(engine.Event) {
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

// switchCurrent points current at the release in one step: a new symlink under
// .tmp/, renamed over current.
func (r *hostRun) switchCurrent(ctx context.Context) error {
	return switchCurrent(ctx, r.h, r.l, r.rel.SHA, r.em, r.h.name)
}

func switchCurrent(ctx context.Context, f Files, l release.Layout, sha string, em *emitter, host string) error {
	if err := f.MkdirAll(ctx, l.Tmp()); err != nil {
		return fmt.Errorf("create %s: %w", l.Tmp(), err)
	}
	tmp := path.Join(l.Tmp(), "current-"+randomSuffix())
	if err := f.Symlink(ctx, release.CurrentLink(sha), tmp); err != nil {
		return fmt.Errorf("create the symlink %s: %w", tmp, err)
	}
	if err := f.Rename(ctx, tmp, l.Current()); err != nil {
		_ = f.RemoveAll(context.WithoutCancel(ctx), tmp)
		return fmt.Errorf("switch %s: %w", l.Current(), err)
	}
	em.info(host, StepSwitch, fmt.Sprintf("%s -> %s", l.Current(), release.CurrentLink(sha)))
	return nil
}

// restore puts the previous release back after a failure: its compose file applied
// again (its images are on the host) and waited on; current never moved. Without a
// previous release, the new release's containers are stopped and removed (volumes are
// kept). It returns the release current afterwards.
func (r *hostRun) restore(ctx context.Context) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, r.o.WaitTimeout+2*time.Minute)
	defer cancel()
	if r.prev == "" {
		r.warn(StepRestore, "no previous release to go back to: stopping the new release's containers (volumes are kept)")
		if err := r.h.Down(ctx, r.o.App, engine.DownOptions{Progress: r.engineEvents(StepRestore)}); err != nil {
			return "", err
		}
		r.info(StepRestore, "stopped; the host runs no release of "+r.o.App)
		return "", nil
	}
	return r.prev, reapply(ctx, r.h, r.o.App, r.l, r.prev, r.o.WaitTimeout, r.em, r.h.name)
}

// reapply applies a release the host has again and waits until it is healthy.
func reapply(ctx context.Context, h Host, app string, l release.Layout, sha string, wait time.Duration, em *emitter, host string) error {
	em.info(host, StepRestore, "putting back "+short(sha))
	p, err := readReleaseProject(ctx, h, app, l, sha)
	if err != nil {
		return err
	}
	if err := pullImages(ctx, h, p, em, host); err != nil {
		return err
	}
	if err := h.Up(ctx, withoutJobs(p), engine.UpOptions{
		Wait: true, WaitTimeout: wait, RemoveOrphans: true, Progress: engineEvents(em, host, StepRestore),
	}); err != nil {
		return err
	}
	em.info(host, StepRestore, short(sha)+" is running and healthy again")
	return nil
}

func readReleaseInfo(ctx context.Context, f Files, l release.Layout, sha string) (release.Info, error) {
	data, err := f.ReadFile(ctx, l.Info(sha))
	if err != nil {
		return release.Info{}, err
	}
	var info release.Info
	if err := json.Unmarshal(data, &info); err != nil {
		return release.Info{}, fmt.Errorf("%s: %w", l.Info(sha), err)
	}
	return info, nil
}

// setResult rewrites the release's release.json with its result; failures are
// warnings.
func (r *hostRun) setResult(ctx context.Context, result string, current bool) {
	if err := updateRelease(ctx, r.h, r.l, r.rel.SHA, func(info *release.Info) {
		info.Result = result
		if current {
			info.CurrentSince = time.Now().UTC()
		}
	}); err != nil {
		r.warn(StepUpload, err.Error())
	}
}

// updateRelease changes a release's release.json in one step (staged in .tmp/).
func updateRelease(ctx context.Context, f Files, l release.Layout, sha string, change func(*release.Info)) error {
	info, err := readReleaseInfo(ctx, f, l, sha)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("update release.json: %w", err)
		}
		info = release.Info{SHA: sha}
	}
	change(&info)
	data, err := json.MarshalIndent(info, "", "  ")
	if err != nil {
		return err
	}
	return writeAtomic(ctx, f, l, l.Info(sha), append(data, '\n'), 0o644)
}

// writeAtomic writes name through a temporary file under .tmp/ renamed over it.
func writeAtomic(ctx context.Context, f Files, l release.Layout, name string, data []byte, mode fs.FileMode) error {
	if err := f.MkdirAll(ctx, l.Tmp()); err != nil {
		return fmt.Errorf("create %s: %w", l.Tmp(), err)
	}
	tmp := path.Join(l.Tmp(), path.Base(name)+"-"+randomSuffix())
	if err := f.WriteFile(ctx, tmp, data, mode); err != nil {
		_ = f.RemoveAll(context.WithoutCancel(ctx), tmp)
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err := f.Rename(ctx, tmp, name); err != nil {
		_ = f.RemoveAll(context.WithoutCancel(ctx), tmp)
		return fmt.Errorf("write %s: %w", name, err)
	}
	return nil
}

func (r *hostRun) audit(ctx context.Context, result, current string, err error) {
	e := release.AuditEntry{
		Event: release.AuditDeploy, App: r.o.App, Env: r.o.Env.Name, Host: r.h.name, SHA: r.rel.SHA, Prev: r.prev,
		Who: r.me.Who, From: r.o.From, Result: result, Current: current,
	}
	if err != nil {
		e.Error = err.Error()
	}
	if aerr := appendAudit(ctx, r.h, r.l, e, r.o.Redactor); aerr != nil {
		r.warn(StepAudit, aerr.Error())
	}
}

func (r *hostRun) unlock(ctx context.Context) {
	if err := releaseLock(ctx, r.h, r.l, r.h.name, r.me, r.em); err != nil {
		r.warn(StepLock, err.Error()+"; release it with shipctl unlock")
	}
}

// err is the command's error from its hosts' results: nil when every host is
// deployed, else one that matches the worst sentinel and names each host.
func (s *Summary) err(ctx context.Context, what string) error {
	var lines []string
	worst := error(nil)
	rank := func(e error) int {
		switch e {
		case ErrRestoreFailed:
			return 3
		case ErrDeployFailed:
			return 2
		case ErrLocked:
			return 1
		}
		return 0
	}
	failed := 0
	for _, h := range s.Hosts {
		var sentinel error
		switch h.Result {
		case ResultDeployed:
			continue
		case ResultRestoreFailed:
			sentinel = ErrRestoreFailed
		case ResultFailed:
			sentinel = ErrDeployFailed
		case ResultLocked:
			sentinel = ErrLocked
		}
		failed++
		if sentinel != nil && rank(sentinel) > rank(worst) {
			worst = sentinel
		}
		line := fmt.Sprintf("%s: %s, on %s", h.Host, h.Result, releaseName(h.Current))
		if h.Err != nil {
			line += ": " + h.Err.Error()
		}
		lines = append(lines, line)
	}
	if failed == 0 {
		return nil
	}
	if worst == nil {
		worst = ErrDeployFailed
	}
	err := fmt.Errorf("%w: %s failed on %d of %d host(s):\n  %s", worst, what, failed, len(s.Hosts), strings.Join(lines, "\n  "))
	if ctx.Err() != nil {
		return errors.Join(ctx.Err(), err)
	}
	return err
}

func hostNames(s *session) []string {
	out := make([]string, len(s.hosts))
	for i, h := range s.hosts {
		out[i] = h.name
	}
	return out
}

// short is a sha as output shows it: 12 characters (a dirty version keeps its suffix).
func short(sha string) string {
	if i := strings.Index(sha, "-dirty-"); i >= 0 {
		return short(sha[:i]) + sha[i:]
	}
	if len(sha) > 12 {
		return sha[:12]
	}
	return sha
}

// Short is how output names a release: its sha's first 12 characters.
func Short(sha string) string { return short(sha) }

func randomSuffix() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// newNotifications posts a command's notifications in order, in the background: a
// notification that fails is a warning, never the command's failure.
func newNotifications(w *notify.Webhook, em *emitter, r *redact.Redactor) *notify.Queue {
	return notify.NewQueue(w, r.String, func(m notify.Message, err error) {
		if err != nil {
			em.warn("", StepNotify, r.String(err.Error()))
		} else {
			em.info("", StepNotify, "notified "+w.Host()+" of "+m.Event)
		}
	})
}

func endNotification(event string, o Options, s *Summary, err error) notify.Message {
	m := notify.Message{Event: event, App: o.App, Env: o.Env.Name, SHA: s.SHA, Who: o.who()}
	if o.Release != nil {
		m.Subject = o.Release.Subject
	}
	for _, h := range s.Hosts {
		m.Hosts = append(m.Hosts, h.Host)
		hr := notify.Result{Host: h.Host, Result: h.Result, Current: h.Current}
		if h.Err != nil {
			hr.Error = h.Err.Error()
		}
		m.Results = append(m.Results, hr)
	}
	if err != nil {
		m.Error = err.Error()
	}
	return m
}
