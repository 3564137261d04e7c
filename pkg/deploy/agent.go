package deploy

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/shipdeploy/ship/pkg/agentapi"
	"github.com/shipdeploy/ship/pkg/compose"
	"github.com/shipdeploy/ship/pkg/release"
)

// The agent path (environments with agent: true): see doc.go, "Through shipd".

// Shipd is shipd's API on one host, as the agent path uses it; *agentapi.Client is the
// real one.
type Shipd interface {
	Status(ctx context.Context) (*agentapi.Status, error)
	Deploy(ctx context.Context, req agentapi.DeployRequest, fn func(agentapi.Event)) (*agentapi.Result, error)
	Rollback(ctx context.Context, req agentapi.RollbackRequest, fn func(agentapi.Event)) (*agentapi.Result, error)
}

// AgentHost is a Host that reaches shipd on it: the SSH Host does, through its own
// connection (direct-streamlocal to shipd's socket).
type AgentHost interface {
	Shipd() Shipd
}

// ErrNoAgent means shipd does not answer on a host of an agent environment.
var ErrNoAgent = errors.New("shipd does not answer")

// DefaultAgentWait is how long a deploy whose answer from shipd was cut waits for shipd
// to answer again (systemd restarts it within a second) before it gives up on learning
// the outcome.
const DefaultAgentWait = 2 * time.Minute

// shipdOf is the host's shipd.
func shipdOf(h Host) (Shipd, error) {
	if a, ok := h.(AgentHost); ok {
		if sh := a.Shipd(); sh != nil {
			return sh, nil
		}
	}
	return nil, errors.New("this connection cannot reach shipd")
}

// agentStatus asks the host's shipd for its status, within a few seconds.
func agentStatus(ctx context.Context, h Host) (*agentapi.Status, error) {
	sh, err := shipdOf(h)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	return sh.Status(ctx)
}

// agentPreflight checks that shipd answers on a host before anything changes, and notes
// the app's last result there: how a deploy whose answer is cut tells whether shipd got
// to it.
func agentPreflight(ctx context.Context, s *session, h *hostConn) (*agentapi.Status, error) {
	st, err := agentStatus(ctx, h.Host)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("%w (%v): the environment has agent: true; install and start shipd with `shipctl agent install %s` (or set SHIP_AGENT_SOCKET where it serves another socket)",
			ErrNoAgent, err, s.t.Env.Name)
	}
	if app := findApp(st, s.t.Project()); app != nil {
		h.shipdLast = app.LastTime
	}
	return st, nil
}

func findApp(st *agentapi.Status, app string) *agentapi.App {
	if st == nil {
		return nil
	}
	for i := range st.Apps {
		if st.Apps[i].App == app {
			return &st.Apps[i]
		}
	}
	return nil
}

// registryAuth is what shipd pulls the project's images with: the X-Registry-Auth of
// each image that has credentials.
func registryAuth(t Target, p *compose.Project) (map[string]string, error) {
	if t.RegistryAuth == nil || p == nil {
		return nil, nil
	}
	var refs []string
	for _, s := range p.Services {
		if s.Image != "" {
			refs = append(refs, s.Image)
		}
	}
	sort.Strings(refs)
	out := map[string]string{}
	for _, ref := range refs {
		if _, ok := out[ref]; ok {
			continue
		}
		auth, err := t.RegistryAuth(ref)
		if err != nil {
			return nil, fmt.Errorf("registry credentials for %s: %w", ref, err)
		}
		if auth != "" {
			out[ref] = auth
		}
	}
	return out, nil
}

// agentCall is one deploy or rollback through shipd on one host: the call, its events
// shown as the command's, and its outcome as a HostResult.
type agentCall struct {
	s    *session
	h    *hostConn
	em   *emitter
	kind string // release.AuditDeploy or release.AuditRollback
	sha  string // the release asked for
	prev string // current before
	// wait bounds the wait for shipd to answer again after a cut answer; settle the
	// wait for the deploy (or the restore after a restart) to end once it does.
	wait, settle time.Duration
	// pruned and unlocked are set when shipd's answer says it pruned after the
	// deploy, and released shipctl's lock.
	pruned, unlocked bool
}

// call is the request to shipd: a deploy or a rollback.
type call func(ctx context.Context, sh Shipd, fn func(agentapi.Event)) (*agentapi.Result, error)

// run makes the call and returns the host's result, and whether shipd recorded the
// outcome (audit.log, release.json): it did when it ran the deploy, not when it refused
// it before starting.
func (c *agentCall) run(ctx context.Context, fn call) (HostResult, bool) {
	host := c.h.name
	sh, err := shipdOf(c.h.Host)
	if err != nil {
		return HostResult{Host: host, Result: ResultFailed, Current: c.prev, Err: err}, false
	}
	c.em.info(host, StepApply, fmt.Sprintf("asking shipd to %s %s blue-green", c.kind, release.Short(c.sha)))
	res, err := fn(ctx, sh, c.event)
	c.pruned = res != nil && res.Pruned != nil
	c.unlocked = res != nil && res.Unlocked
	var ae *agentapi.Error
	switch {
	case err == nil:
		return HostResult{Host: host, Result: ResultDeployed, Current: res.Current}, true
	case errors.Is(err, agentapi.ErrDeployFailed):
		return HostResult{Host: host, Result: ResultFailed, Current: res.Current, Err: resultErr(res)}, true
	case errors.Is(err, agentapi.ErrRestoreFailed):
		return HostResult{Host: host, Result: ResultRestoreFailed, Current: res.Current, Err: resultErr(res)}, true
	case errors.Is(err, agentapi.ErrLocked):
		return HostResult{Host: host, Result: ResultLocked, Current: c.prev, Err: fmt.Errorf("%w: %v", ErrLocked, err)}, false
	case errors.As(err, &ae) && ae.Result == nil:
		// Refused before anything started: a bad request, an unknown release, a
		// shipd that is stopping.
		return HostResult{Host: host, Result: ResultFailed, Current: c.prev, Err: fmt.Errorf("shipd refused the %s, nothing was changed: %w", c.kind, err)}, false
	case ctx.Err() != nil:
		// shipd goes on without its client: how the run ends is shipd's to say, and
		// shipctl has not seen it.
		c.em.warn(host, StepApply, fmt.Sprintf("cancelled: shipd carries the %s on to its end (it cannot be stopped from here)", c.kind))
		return c.unknown("still running on the host: shipctl was cancelled (%v) while shipd ran it", ctx.Err()), true
	}
	return c.outcome(ctx, err)
}

// event shows one of shipd's events as the command's own. shipd's "done" is left out:
// the command says where each host ends once it has released the lock.
func (c *agentCall) event(ev agentapi.Event) {
	if ev.Step == agentapi.StepDone {
		return
	}
	c.em.emit(Event{Host: c.h.name, Step: ev.Step, Level: ev.Level, Service: ev.Service, Msg: ev.Msg + logText(ev.Logs)})
}

// logText is a container's last log lines, as the engine's errors show them.
func logText(logs []string) string {
	if len(logs) == 0 {
		return ""
	}
	return "; its last log lines:\n    " + strings.Join(logs, "\n    ")
}

// resultErr is a failed Result as an error, with the failed container's log lines.
func resultErr(res *agentapi.Result) error {
	msg := res.Error
	if msg == "" {
		msg = string(res.Result)
	}
	return errors.New(msg + logText(res.Logs))
}

// outcome learns how a deploy ended whose answer was cut (shipd restarted, or the
// connection broke): it asks shipd until it answers again and the deploy, or the
// restore shipd runs after a restart, is over. shipd recorded that outcome itself.
func (c *agentCall) outcome(ctx context.Context, cause error) (HostResult, bool) {
	host := c.h.name
	c.em.warn(host, StepApply, fmt.Sprintf("shipd's answer was cut (%v); asking shipd how the %s ended", cause, c.kind))
	unknown := func(why string) (HostResult, bool) {
		return c.unknown("%s", why), true
	}
	deadline := time.Now().Add(c.wait)
	answered, waiting := false, false
	for {
		if err := ctx.Err(); err != nil {
			return unknown("cancelled while waiting for shipd")
		}
		st, err := agentStatus(ctx, c.h.Host)
		if err != nil {
			if time.Now().After(deadline) {
				return unknown(fmt.Sprintf("shipd did not answer again within %s (%v)", c.wait, err))
			}
			// The connection itself may be what broke.
			_ = c.s.reconnect(context.WithoutCancel(ctx), c.h)
			sleep(ctx, 250*time.Millisecond)
			continue
		}
		if !answered {
			answered = true
			c.em.info(host, StepApply, fmt.Sprintf("shipd answers again (pid %d, up %s)", st.PID, st.Uptime.Std()))
			deadline = time.Now().Add(c.settle)
		}
		app := findApp(st, c.s.t.Project())
		switch {
		case app != nil && app.Deploying != "":
			if time.Now().After(deadline) {
				return unknown(fmt.Sprintf("shipd still runs a %s of %s after %s", c.kind, release.Short(app.Deploying), c.settle))
			}
			if !waiting {
				waiting = true
				c.em.info(host, StepApply, fmt.Sprintf("shipd is at work on %s; waiting for it to finish", release.Short(app.Deploying)))
			}
			sleep(ctx, 250*time.Millisecond)
			continue
		case app == nil || app.LastTime.Equal(c.h.shipdLast):
			// Nothing ended since the preflight: the request never reached shipd.
			current := c.currentNow(ctx, app)
			return HostResult{Host: host, Result: ResultFailed, Current: current,
				Err: fmt.Errorf("shipd has no record of the %s (%v): nothing was changed", c.kind, cause)}, false
		}
		current := c.currentNow(ctx, app)
		switch app.LastResult {
		case agentapi.ResultDeployed:
			if current == c.sha {
				return HostResult{Host: host, Result: ResultDeployed, Current: current}, true
			}
			return HostResult{Host: host, Result: ResultFailed, Current: current, Err: fmt.Errorf("shipd's last %s is of another release; current is %s", c.kind, release.Name(current))}, true
		case agentapi.ResultRestoreFailed:
			return HostResult{Host: host, Result: ResultRestoreFailed, Current: current, Err: errors.New(app.LastError)}, true
		default:
			return HostResult{Host: host, Result: ResultFailed, Current: current, Err: errors.New(app.LastError)}, true
		}
	}
}

// unknown is the host's result when shipctl did not see how shipd's run ended: never
// a failure or a success it did not observe; the error says where to look.
func (c *agentCall) unknown(format string, a ...any) HostResult {
	env := c.s.t.Env.Name
	err := fmt.Errorf("how the %s of %s ends is unknown, %s; `shipctl agent status %s` shows whether shipd is still at it, `shipctl history %s` how it ended",
		c.kind, release.Short(c.sha), fmt.Sprintf(format, a...), env, env)
	return HostResult{Host: c.h.name, Result: ResultUnknown, Current: c.prev, Err: err}
}

// currentNow is the release current points at on the host, read again (shipd's state
// as a fallback).
func (c *agentCall) currentNow(ctx context.Context, app *agentapi.App) string {
	bg := context.WithoutCancel(ctx)
	if err := c.s.reconnect(bg, c.h); err == nil {
		if cur, err := c.s.store(c.h).Current(bg); err == nil {
			return cur
		}
	}
	if app != nil {
		return app.Release
	}
	return c.prev
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// agent is a host's deploy through shipd, after the upload: shipd pulls, runs the jobs,
// swaps blue-green, switches current, writes release.json and audit.log, prunes old
// releases and releases the lock (DeployRequest.Keep and Unlock: on the host its file
// writes cost no round trip). run records what shipd did not, and prunes and unlocks
// when shipd did not (it refused, its answer was cut, or it is from before Keep and
// Unlock).
func (r *hostRun) agent(ctx context.Context, run *Runner) HostResult {
	auth, err := registryAuth(r.o.Target, r.rel.Project)
	if err != nil {
		return r.finish(ctx, run.Fail(ctx, StepApply, err))
	}
	c := &agentCall{
		s: r.s, h: r.h, em: r.em, kind: release.AuditDeploy, sha: r.sha, prev: r.prev,
		wait: r.o.AgentWait, settle: r.o.WaitTimeout + r.o.JobTimeout + 2*time.Minute,
	}
	req := agentapi.DeployRequest{
		App: r.o.Project(), Path: r.o.Env.Path, SHA: r.sha, RegistryAuth: auth,
		WaitTimeout: agentapi.Duration(r.o.WaitTimeout), JobTimeout: agentapi.Duration(r.o.JobTimeout),
		Keep: r.keep, Unlock: r.me.Token,
		Origin: agentapi.Origin{Env: r.o.Env.Name, Host: r.h.name, Who: r.me.Who, From: r.o.From},
	}
	res, recorded := c.run(ctx, func(ctx context.Context, sh Shipd, fn func(agentapi.Event)) (*agentapi.Result, error) {
		return sh.Deploy(ctx, req, fn)
	})
	return r.agentEnd(ctx, run, res, recorded, c, "deployed")
}

// agentEnd ends a host's deploy or rollback through shipd: what shipd did not record
// (it refused the request) is recorded as the agentless path records a failure that
// changed nothing; the lock is released and, after a deploy shipd did not prune
// after, old releases pruned, both at once as the agentless path does (their requests
// go out together). When shipd released the lock, only its heartbeat is stopped.
func (t *hostTask) agentEnd(ctx context.Context, run *Runner, res HostResult, recorded bool, c *agentCall, ok string) HostResult {
	res.Err = t.scrub.Error(res.Err)
	bg := context.WithoutCancel(ctx)
	if !recorded {
		t.em.fail(t.h.name, StepApply, res.Err.Error())
		run.Record(bg, res.Result, res.Current, res.Err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if res.Result == ResultDeployed && t.keep > 0 && !c.pruned {
			if err := pruneListed(bg, t.h, t.s.store(t.h), t.listed, t.keep, t.sha, t.h.name, t.em); err != nil {
				t.warn(StepPrune, err.Error())
			}
		}
	}()
	if c.unlocked {
		// A heartbeat under way may meet the lock gone: the lease's cancellation comes
		// first (shipd's answer arrives before that heartbeat's), so it says nothing.
		t.h.lease.stop()
		t.h.lease = nil
	} else {
		t.unlock(bg)
	}
	<-done
	t.em.emit(agentDone(t.h.name, res, t.what(), ok))
	return res
}

// agentDone is the last event of a host: which release it is on.
func agentDone(host string, res HostResult, what, ok string) Event {
	switch res.Result {
	case ResultDeployed:
		return Event{Host: host, Step: StepDone, Msg: fmt.Sprintf("on %s (%s)", release.Short(res.Current), ok)}
	case ResultRestoreFailed:
		return Event{Host: host, Step: StepDone, Level: LevelError, Msg: fmt.Sprintf("on %s (%s failed; restore failed: check the host)", release.Name(res.Current), what)}
	case ResultLocked:
		return Event{Host: host, Step: StepDone, Level: LevelError, Msg: fmt.Sprintf("on %s (%s refused: shipd is busy with the app; nothing changed)", release.Name(res.Current), what)}
	case ResultUnknown:
		return Event{Host: host, Step: StepDone, Level: LevelWarn, Msg: fmt.Sprintf("%s: unknown, still running on the host (it was on %s)", what, release.Name(res.Current))}
	}
	return Event{Host: host, Step: StepDone, Level: LevelError, Msg: fmt.Sprintf("on %s (%s failed; previous release kept)", release.Name(res.Current), what)}
}

// agent is a host's rollback through shipd: shipd puts the release back blue-green and
// records it; the lock is released.
func (r *rollbackRun) agent(ctx context.Context, run *Runner) HostResult {
	auth, err := registryAuth(r.o.Target, r.project)
	if err != nil {
		return HostResult{Host: r.h.name, Result: ResultFailed, Current: r.prev, Err: r.scrub.Error(err)}
	}
	c := &agentCall{
		s: r.s, h: r.h, em: r.em, kind: release.AuditRollback, sha: r.sha, prev: r.prev,
		wait: r.o.AgentWait, settle: r.o.WaitTimeout + 2*time.Minute,
	}
	req := agentapi.RollbackRequest{
		App: r.o.Project(), Path: r.o.Env.Path, SHA: r.sha, RegistryAuth: auth, WaitTimeout: agentapi.Duration(r.o.WaitTimeout),
		Unlock: r.me.Token,
		Origin: agentapi.Origin{Env: r.o.Env.Name, Host: r.h.name, Who: r.me.Who},
	}
	res, recorded := c.run(ctx, func(ctx context.Context, sh Shipd, fn func(agentapi.Event)) (*agentapi.Result, error) {
		return sh.Rollback(ctx, req, fn)
	})
	return r.agentEnd(ctx, run, res, recorded, c, "rolled back from "+release.Name(r.prev))
}

// HostAgent is shipd on one host, as `shipctl agent status` shows it.
type HostAgent struct {
	Host string
	// Status is shipd's answer: version, uptime, routes, apps.
	Status *agentapi.Status
	// Err is why the host or shipd could not be asked.
	Err error
}

// AgentStatus asks shipd on every host for its status. A host that cannot be reached,
// or whose shipd does not answer, is reported in its HostAgent.
func AgentStatus(ctx context.Context, t Target) ([]HostAgent, error) {
	em := newEmitter(t.Progress, t.Redactor)
	s, err := openEach(ctx, t, em)
	if err != nil {
		return nil, err
	}
	defer s.close()
	out := make([]HostAgent, len(s.hosts))
	s.each(ctx, 0, func(ctx context.Context, i int, h *hostConn) {
		ha := HostAgent{Host: t.Env.Hosts[i].String()}
		if h == nil || h.Host == nil {
			ha.Err = s.dialErrs[i]
			out[i] = ha
			return
		}
		st, err := agentStatus(ctx, h.Host)
		if err != nil {
			err = fmt.Errorf("%w: %v; install and start it with `shipctl agent install %s`", ErrNoAgent, err, t.Env.Name)
		}
		ha.Status, ha.Err = st, t.Redactor.Error(err)
		out[i] = ha
	})
	return out, nil
}

// agentVersion is shipd's version without the Go and platform details.
func agentVersion(st *agentapi.Status) string {
	v := strings.TrimPrefix(st.Version, "shipd ")
	if i := strings.Index(v, " go"); i > 0 {
		v = v[:i]
	}
	return v
}
