package deploy

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/shipdeploy/ship/pkg/compose"
	"github.com/shipdeploy/ship/pkg/engine"
	"github.com/shipdeploy/ship/pkg/notify"
	"github.com/shipdeploy/ship/pkg/plan"
	"github.com/shipdeploy/ship/pkg/release"
)

// ErrNoRelease means a host has no release to roll back to.
var ErrNoRelease = errors.New("no such release")

// RollbackOptions say where to roll back to.
type RollbackOptions struct {
	Target
	// SHA is the release to go back to, or a unique prefix of its sha; "" is each
	// host's previous release (the one made current before the current one).
	SHA         string
	LockWait    time.Duration
	Parallel    int
	WaitTimeout time.Duration
	// AgentWait is Options.AgentWait.
	AgentWait time.Duration
	// Confirm is called after the preflight, before the first change (see Options).
	Confirm func(ctx context.Context, p Preview) error
	Notify  *notify.Webhook
}

// Rollback makes an earlier release current again on every host: its compose file,
// still on the host with its images, is applied and waited on, then current is
// switched. Pre-deploy jobs do not run (a migration is not undone by running the old
// one). A host that fails puts the release it was on back, as a deploy does.
func Rollback(ctx context.Context, o RollbackOptions) (*Summary, error) {
	em := newEmitter(o.Progress, o.Redactor)
	if o.WaitTimeout <= 0 {
		o.WaitTimeout = DefaultWaitTimeout
	}
	if o.AgentWait <= 0 {
		o.AgentWait = DefaultAgentWait
	}
	parallel := o.Parallel
	if parallel <= 0 {
		parallel = o.Env.Parallel
	}
	sum := &Summary{App: o.App, Env: o.Env.Name}
	em.info("", StepPreflight, fmt.Sprintf("connecting to %d host(s)", len(o.Env.Hosts)))
	s, err := open(ctx, o.Target, em)
	if err != nil {
		return sum, fmt.Errorf("preflight: %w", err)
	}
	defer s.close()

	targets := make([]*compose.Project, len(s.hosts))
	preview := Preview{App: o.App, Env: o.Env.Name, Hosts: make([]HostPreview, len(s.hosts))}
	shas := make([]string, len(s.hosts))
	errs := make([]error, len(s.hosts))
	s.each(ctx, 0, func(ctx context.Context, i int, h *hostConn) {
		hp, sha, p, err := rollbackPreflight(ctx, s, h, o.SHA)
		if err != nil {
			errs[i] = fmt.Errorf("%s: %w", h.name, err)
			return
		}
		preview.Hosts[i], shas[i], targets[i] = hp, sha, p
	})
	if err := errors.Join(errs...); err != nil {
		if ctx.Err() != nil {
			return sum, ctx.Err()
		}
		return sum, o.Redactor.Error(fmt.Errorf("preflight: %w", err))
	}
	preview.SHA = shas[0]
	for _, sha := range shas[1:] {
		if sha != preview.SHA {
			preview.SHA = "" // each host goes back to its own previous release
		}
	}
	sum.SHA = preview.SHA
	if o.Confirm != nil {
		if err := o.Confirm(ctx, preview); err != nil {
			return sum, err
		}
	}
	if err := ctx.Err(); err != nil {
		return sum, err
	}
	s.hold()

	me := Me("rollback", preview.SHA)
	me.Who = o.who()
	sum.Hosts = make([]HostResult, len(s.hosts))
	for i, h := range s.hosts {
		sum.Hosts[i] = HostResult{Host: h.name, Result: ResultSkipped, Current: preview.Hosts[i].Current}
	}
	n := newNotifications(o.Notify, em, o.Redactor)
	defer n.Wait()
	notify := func(err error) {
		m := endNotification(notify.Rollback, Options{Target: o.Target}, sum, err)
		n.Post(ctx, m)
	}
	if err := s.lockAll(ctx, me, o.LockWait, sum.Hosts); err != nil {
		err = o.Redactor.Error(err)
		notify(err)
		return sum, err
	}
	s.each(ctx, parallel, func(ctx context.Context, i int, h *hostConn) {
		r := &rollbackRun{o: &o, s: s, em: em, l: s.l, h: h, me: me, from: preview.Hosts[i].Current, to: shas[i], project: targets[i]}
		sum.Hosts[i] = r.run(ctx)
	})
	what := "rollback"
	if sum.SHA != "" {
		what += " to " + short(sum.SHA)
	}
	err = sum.err(ctx, what)
	notify(err)
	return sum, err
}

// rollbackPreflight finds the release to go back to on one host and checks that the
// host can run it.
func rollbackPreflight(ctx context.Context, s *session, h *hostConn, want string) (HostPreview, string, *compose.Project, error) {
	current, err := readCurrent(ctx, h, s.l)
	if err != nil {
		return HostPreview{}, "", nil, err
	}
	releases, err := readReleases(ctx, h, s.l)
	if err != nil {
		return HostPreview{}, "", nil, err
	}
	sha, err := release.RollbackTarget(releases, current, want)
	if err != nil {
		return HostPreview{}, "", nil, fmt.Errorf("%w: %w", ErrNoRelease, err)
	}
	p, err := readReleaseProject(ctx, h, s.t.App, s.l, sha)
	if err != nil {
		return HostPreview{}, "", nil, err
	}
	if _, err := h.Ping(ctx); err != nil {
		return HostPreview{}, "", nil, err
	}
	if err := h.Check(ctx, p.Project, nil); err != nil {
		return HostPreview{}, "", nil, err
	}
	if s.t.Env.Agent {
		if _, err := agentPreflight(ctx, s, h); err != nil {
			return HostPreview{}, "", nil, err
		}
	}
	cs, err := h.Containers(ctx, s.t.App)
	if err != nil {
		return HostPreview{}, "", nil, err
	}
	hashes := map[string]string{}
	for name, svc := range p.Services {
		if hashes[name], err = engine.ConfigHash(svc); err != nil {
			return HostPreview{}, "", nil, err
		}
	}
	var observed []plan.Observed
	for _, c := range cs {
		if !c.OneOff {
			observed = append(observed, plan.Observed{Service: c.Service, Image: c.Image, ConfigHash: c.ConfigHash, Running: c.State == "running"})
		}
	}
	// Jobs do not run on a rollback: the plan leaves them out.
	planned := &compose.Project{Project: withoutJobs(p), Ship: p.Ship}
	s.em.info(h.name, StepPreflight, fmt.Sprintf("ready: going from %s back to %s", releaseName(current), short(sha)))
	return HostPreview{Host: h.name, Current: current, Plan: plan.Diff(h.name, planned, hashes, observed)}, sha, p, nil
}

// rollbackRun is the rollback on one host.
type rollbackRun struct {
	o       *RollbackOptions
	s       *session
	em      *emitter
	l       release.Layout
	h       *hostConn
	me      Holder
	from    string // current before
	to      string
	project *compose.Project
}

func (r *rollbackRun) run(ctx context.Context) HostResult {
	if r.o.Env.Agent {
		return r.agent(ctx)
	}
	host := r.h.name
	r.em.info(host, StepApply, fmt.Sprintf("applying %s", short(r.to)))
	err := pullImages(ctx, r.h, r.project, r.em, host)
	if err == nil {
		err = r.h.Up(ctx, withoutJobs(r.project), engine.UpOptions{
			Wait: true, WaitTimeout: r.o.WaitTimeout, RemoveOrphans: true, Progress: engineEvents(r.em, host, StepApply),
		})
	}
	if err == nil {
		err = switchCurrent(ctx, r.h, r.l, r.to, r.em, host)
	}
	bg := context.WithoutCancel(ctx)
	res := HostResult{Host: host, Result: ResultDeployed, Current: r.to}
	if err != nil {
		err = r.o.Redactor.Error(err)
		r.em.fail(host, StepApply, err.Error())
		res = HostResult{Host: host, Result: ResultFailed, Current: r.from, Err: err}
		rerr := r.s.reconnect(bg, r.h)
		switch {
		case rerr != nil:
		case r.from == "":
			rerr = r.h.Down(bg, r.o.App, engine.DownOptions{Progress: engineEvents(r.em, host, StepRestore)})
		default:
			rctx, cancel := context.WithTimeout(bg, r.o.WaitTimeout+2*time.Minute)
			rerr = reapply(rctx, r.h, r.o.App, r.l, r.from, r.o.WaitTimeout, r.em, host)
			cancel()
		}
		if rerr != nil {
			rerr = r.o.Redactor.Error(rerr)
			r.em.fail(host, StepRestore, rerr.Error())
			res.Result = ResultRestoreFailed
			res.Err = fmt.Errorf("%w; restoring %s failed: %w", err, releaseName(r.from), rerr)
		}
	} else if uerr := updateRelease(bg, r.h, r.l, r.to, func(info *release.Info) {
		info.Result = release.Deployed
		info.CurrentSince = time.Now().UTC()
	}); uerr != nil {
		r.em.warn(host, StepSwitch, uerr.Error())
	}
	e := release.AuditEntry{
		Event: release.AuditRollback, App: r.o.App, Env: r.o.Env.Name, Host: host, SHA: r.to, Prev: r.from,
		Who: r.me.Who, Result: res.Result, Current: res.Current,
	}
	if res.Err != nil {
		e.Error = res.Err.Error()
	}
	if aerr := appendAudit(bg, r.h, r.l, e, r.o.Redactor); aerr != nil {
		r.em.warn(host, StepAudit, aerr.Error())
	}
	if lerr := releaseLock(bg, r.h, r.l, host, r.me, r.em); lerr != nil {
		r.em.warn(host, StepLock, lerr.Error()+"; release it with shipctl unlock")
	}
	level, msg := LevelInfo, fmt.Sprintf("on %s (rolled back from %s)", short(r.to), releaseName(r.from))
	if res.Result != ResultDeployed {
		level, msg = LevelError, fmt.Sprintf("on %s (rollback to %s failed)", releaseName(res.Current), short(r.to))
	}
	r.em.emit(Event{Host: host, Step: StepDone, Level: level, Msg: msg})
	return res
}
