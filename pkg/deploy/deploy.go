package deploy

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/shipdeploy/ship/pkg/engine"
	"github.com/shipdeploy/ship/pkg/event"
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
	// ErrOutcomeUnknown: shipctl did not see how a deploy or rollback through shipd
	// ended on a host (cancelled while shipd carries it on, or shipd did not answer
	// again in time); `shipctl agent status ENV` shows it.
	ErrOutcomeUnknown = errors.New("outcome unknown")
	// ErrNotInRegistry: an image of the release is not in the registry (not pushed).
	ErrNotInRegistry = errors.New("image not in the registry")
)

// Defaults of Options.
const (
	DefaultWaitTimeout = 2 * time.Minute
	DefaultJobTimeout  = engine.DefaultJobTimeout
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
	// LockPoll is how often a waiting deploy tries the lock again; 0 is
	// DefaultLockPoll.
	LockPoll time.Duration
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
	// Conn, when set, is the hosts opened and locked by Open (shipctl ship opens
	// them before it builds): Run uses its connections and its locks, and does not
	// close it. nil: Run opens and closes its own.
	Conn *Conn
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

// Results of a host, in HostResult.Result and audit.log: pkg/event's.
const (
	ResultDeployed      = event.ResultDeployed      // the release is current and healthy
	ResultFailed        = event.ResultFailed        // failed; the host runs its previous release (put back or never left)
	ResultRestoreFailed = event.ResultRestoreFailed // failed, and putting the previous release back failed too
	ResultLocked        = event.ResultLocked        // another deploy holds the host's lock; nothing touched
	ResultSkipped       = event.ResultSkipped       // not started: another host was locked, or the command was cancelled
	ResultUnknown       = event.ResultUnknown       // shipd carries it on, or did not answer again: how it ended was not seen
)

// HostResult is how a command ended on one host.
type HostResult struct {
	Host   string
	Result event.Result
	// Current is the release current on the host at the end ("" none).
	Current string
	// Err is why it failed (redacted); nil when deployed.
	Err error
	// Took is how long the host's run took, from the upload to its end (0: it never
	// started).
	Took time.Duration
}

// Summary is how a deploy or rollback ended, host by host.
type Summary struct {
	App, Env string
	SHA      string
	Hosts    []HostResult
}

// Run deploys a release to every host of the environment:
//
//  1. preflight, before anything interactive: every image ship built is in the
//     registry, every host answers over SSH with SFTP and its engine, and the lock
//     is taken on every host, one after the other (Open; or o.Conn, opened before);
//     then the engine must be able to run the release, and the plan per host;
//  2. o.Confirm (the confirmation and the grace countdown), with the locks held;
//  3. on each host (o.Parallel at once): upload, pull, pre-deploy jobs, apply, wait
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
	sum := &Summary{App: o.App, Env: o.Env.Name, SHA: rel.release()}
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
	c := o.Conn
	var opened *OpenOptions
	if c == nil {
		var err error
		var results []HostResult
		opened = &OpenOptions{Target: o.Target, SHA: rel.SHA, LockWait: o.LockWait, LockPoll: o.LockPoll}
		c, results, err = openConn(ctx, *opened, em, false)
		if err != nil {
			sum.Hosts = results
			return sum, err
		}
		defer c.Close()
	}
	s := c.s
	preview, err := s.preflight(ctx, rel, o)
	if opened != nil && err == nil {
		// The locks' holder.json went out with the preflight's requests.
		err = c.heldAll(*opened)
	}
	if err != nil {
		return sum, err
	}
	if err := s.begin(ctx, o.Confirm, preview); err != nil {
		return sum, err
	}
	if err := c.start(); err != nil {
		return sum, err
	}

	n := newNotifications(o.Notify, em, o.Redactor)
	defer n.Wait()
	n.Post(ctx, notify.Message{Event: notify.Start, App: o.App, Env: o.Env.Name, SHA: rel.SHA, Subject: rel.Subject, Hosts: hostNames(s), Who: o.who()})

	me := c.me
	sum.Hosts = skipped(s, preview)
	s.each(ctx, parallel, func(ctx context.Context, i int, h *hostConn) {
		r := &hostRun{o: &o, rel: rel, hostTask: hostTask{
			s: s, em: em, h: h, scrub: o.Redactor, me: me, kind: KindDeploy, sha: rel.release(),
			prev: preview.Hosts[i].Current, keep: max(o.Env.Keep, 1),
		}}
		began := time.Now()
		sum.Hosts[i] = r.run(ctx)
		sum.Hosts[i].Took = time.Since(began)
	})
	err = sum.err(ctx, "deploy of "+release.Short(rel.release()))
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

// JobError says that a pre-deploy job failed, with its last log lines.
type JobError = engine.JobError

// begin asks for the confirmation of preview; from then on hosts change: a
// cancellation stops the current step, and the host puts its previous release back
// over the connection it still has.
func (s *session) begin(ctx context.Context, confirm func(context.Context, Preview) error, preview Preview) error {
	if confirm != nil {
		if err := confirm(ctx, preview); err != nil {
			return err
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	s.hold()
	return nil
}

// skipped is every host's result before its run: skipped, on its current release.
func skipped(s *session, preview Preview) []HostResult {
	out := make([]HostResult, len(s.hosts))
	for i, h := range s.hosts {
		out[i] = HostResult{Host: h.name, Result: ResultSkipped, Current: preview.Hosts[i].Current}
	}
	return out
}

func hostNames(s *session) []string {
	out := make([]string, len(s.hosts))
	for i, h := range s.hosts {
		out[i] = h.name
	}
	return out
}

// newNotifications posts a command\'s notifications in order, in the background: a
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
		hr := notify.Result{Host: h.Host, Result: string(h.Result), Current: h.Current}
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
