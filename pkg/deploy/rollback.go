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
	SHA      string
	LockWait time.Duration
	// LockPoll is Options.LockPoll.
	LockPoll    time.Duration
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
	n := newNotifications(o.Notify, em, o.Redactor)
	defer n.Wait()
	notify := func(err error) {
		m := endNotification(notify.Rollback, Options{Target: o.Target}, sum, err)
		n.Post(ctx, m)
	}
	// The hosts are reached and locked before the release is chosen and before the
	// question: a host locked by someone else fails the rollback without asking, and
	// the release read is the one current under the lock.
	c, results, err := openConn(ctx, OpenOptions{Target: o.Target, LockWait: o.LockWait, LockPoll: o.LockPoll, command: "rollback"}, em, false)
	if err != nil {
		if results != nil {
			sum.Hosts = results
			notify(err)
		}
		return sum, err
	}
	defer c.Close()
	s := c.s

	preview, shas, targets, err := s.rollbackPreflight(ctx, o)
	if err != nil {
		return sum, err
	}
	sum.SHA = preview.SHA
	if err := s.begin(ctx, o.Confirm, preview); err != nil {
		return sum, err
	}
	if err := c.start(); err != nil {
		return sum, err
	}

	me := c.me
	sum.Hosts = skipped(s, preview)
	s.each(ctx, parallel, func(ctx context.Context, i int, h *hostConn) {
		r := &rollbackRun{o: &o, project: targets[i], hostTask: hostTask{
			s: s, em: em, h: h, scrub: o.Redactor, me: me, kind: KindRollback, sha: shas[i], prev: preview.Hosts[i].Current,
		}}
		sum.Hosts[i] = r.run(ctx)
	})
	what := "rollback"
	if sum.SHA != "" {
		what += " to " + release.Short(sum.SHA)
	}
	err = sum.err(ctx, what)
	notify(err)
	return sum, err
}

// rollbackPreflight finds, on every host at once, the release to go back to and checks
// that the host can run it. The preview's SHA is "" when the hosts go back to
// different releases.
func (s *session) rollbackPreflight(ctx context.Context, o RollbackOptions) (Preview, []string, []*compose.Project, error) {
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
			return preview, nil, nil, ctx.Err()
		}
		return preview, nil, nil, o.Redactor.Error(fmt.Errorf("preflight: %w", err))
	}
	preview.SHA = shas[0]
	for _, sha := range shas[1:] {
		if sha != preview.SHA {
			preview.SHA = "" // each host goes back to its own previous release
		}
	}
	return preview, shas, targets, nil
}

// rollbackPreflight finds the release to go back to on one host and checks that the
// host can run it.
func rollbackPreflight(ctx context.Context, s *session, h *hostConn, want string) (HostPreview, string, *compose.Project, error) {
	store := s.store(h)
	current, err := store.Current(ctx)
	if err != nil {
		return HostPreview{}, "", nil, err
	}
	releases, err := store.Releases(ctx)
	if err != nil {
		return HostPreview{}, "", nil, err
	}
	sha, err := release.RollbackTarget(releases, current, want)
	if err != nil {
		return HostPreview{}, "", nil, fmt.Errorf("%w: %w", ErrNoRelease, err)
	}
	p, err := readReleaseProject(ctx, store, s.t.Project(), sha)
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
	cs, err := h.Containers(ctx, s.t.Project())
	if err != nil {
		return HostPreview{}, "", nil, err
	}
	if err := checkPlace(ctx, s, h, current, cs); err != nil {
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
			observed = append(observed, plan.Observed{Service: c.Service, Image: c.Image, ImageID: c.ImageID, ConfigHash: c.ConfigHash, Running: c.State == "running"})
		}
	}
	// Jobs do not run on a rollback: the plan leaves them out.
	planned := &compose.Project{Project: p.WithoutJobs(), Ship: p.Ship}
	s.em.info(h.name, StepPreflight, fmt.Sprintf("ready: going from %s back to %s", release.Name(current), release.Short(sha)))
	return HostPreview{Host: h.name, Current: current, Plan: plan.Diff(h.name, planned, hashes, observed)}, sha, p, nil
}

// rollbackRun is the rollback on one host.
type rollbackRun struct {
	hostTask
	o       *RollbackOptions
	project *compose.Project
}

func (r *rollbackRun) run(ctx context.Context) HostResult {
	run := r.runner(r.project, runOptions{wait: r.o.WaitTimeout})
	if err := r.h.held(); err != nil {
		return r.finish(ctx, run.Fail(ctx, StepLock, err))
	}
	if r.o.Env.Agent {
		return r.agent(ctx, run)
	}
	return r.finish(ctx, run.Run(ctx))
}
