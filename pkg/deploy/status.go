package deploy

import (
	"context"
	"errors"
	"fmt"

	"github.com/shipdeploy/ship/pkg/agentapi"
	"github.com/shipdeploy/ship/pkg/compose"
	"github.com/shipdeploy/ship/pkg/engine"
	"github.com/shipdeploy/ship/pkg/release"
)

// HostStatus is what runs on one host.
type HostStatus struct {
	Host string
	// Current is the release current points at ("" none); Release its release.json
	// (nil when unreadable).
	Current string
	Release *release.Info
	// Containers are the app's containers with their state and health.
	Containers []engine.Container
	// Lock is who holds the host's lock, if anyone.
	Lock *Holder
	// Agent is shipd's status, in agent environments: its routes and apps. AgentErr
	// is why shipd could not be asked (the rest of the status stands).
	Agent    *agentapi.Status
	AgentErr error
	// Drift is where the containers do not run what current says: each service
	// whose container's configuration is not the current release's. Fix is the
	// command that makes them agree ("" without drift).
	Drift []Drift
	Fix   string
	// Err is why the host could not be read.
	Err error
}

// Drift is a service whose containers do not run the current release: a deploy cut
// off between starting the new containers and switching current, a container
// changed by hand.
type Drift struct {
	Service string
	// Container is the container's name ("" when the service has none).
	Container string
	// Release is the release the container was created from (its compose working
	// directory), "" when unknown.
	Release string
	// Msg says what differs.
	Msg string
}

// Status reads every host: its current release, who deployed it and when, its
// containers and their health, and its lock. A host that cannot be reached is
// reported in its HostStatus; the error is only for the whole command.
func Status(ctx context.Context, t Target) ([]HostStatus, error) {
	em := newEmitter(t.Progress, t.Redactor)
	s, err := openEach(ctx, t, em)
	if err != nil {
		return nil, err
	}
	defer s.close()
	out := make([]HostStatus, len(s.hosts))
	s.each(ctx, 0, func(ctx context.Context, i int, h *hostConn) {
		st := HostStatus{Host: t.Env.Hosts[i].String()}
		if h == nil || h.Host == nil {
			st.Err = s.dialErrs[i]
			out[i] = st
			return
		}
		st.Err = t.Redactor.Error(hostStatus(ctx, s, h, &st))
		out[i] = st
	})
	return out, nil
}

func hostStatus(ctx context.Context, s *session, h *hostConn, st *HostStatus) error {
	store := s.store(h)
	current, err := store.Current(ctx)
	if err != nil {
		return err
	}
	st.Current = current
	if current != "" {
		if info, err := store.Info(ctx, current); err == nil {
			st.Release = &info
		}
	}
	if holder, _, held, err := readHolder(ctx, h, s.l); err == nil && held {
		st.Lock = &holder
	}
	if s.t.Env.Agent {
		as, err := agentStatus(ctx, h.Host)
		if err != nil {
			err = fmt.Errorf("%w: %v; install and start it with `shipctl agent install %s`", ErrNoAgent, err, s.t.Env.Name)
		}
		st.Agent, st.AgentErr = as, s.t.Redactor.Error(err)
	}
	if _, err := h.Ping(ctx); err != nil {
		return err
	}
	if st.Containers, err = h.Containers(ctx, s.t.Project()); err != nil {
		return err
	}
	if current == "" {
		return nil
	}
	p, err := readReleaseProject(ctx, store, s.t.Project(), current)
	if err != nil {
		// The rest of the status stands; what runs cannot be told to be current.
		st.Drift = []Drift{{Msg: fmt.Sprintf("cannot compare the containers with current release %s: %v", release.Short(current), err)}}
		st.Fix = "shipctl deploy " + s.t.Env.Name
		return nil
	}
	if st.Drift, err = drift(s.l, current, p, st.Containers); err != nil {
		return err
	}
	if legacy, err := legacyProject(ctx, s, h, current, st.Containers); err == nil && legacy {
		st.Drift = []Drift{{Msg: fmt.Sprintf("the host runs environment %s as compose project %s, not %s (named before projects were per environment)", s.t.Env.Name, s.t.App, s.t.Project())}}
		st.Fix = fmt.Sprintf("add \"project: %s\" to environments.%s in ship.yaml", s.t.App, s.t.Env.Name)
		return nil
	}
	if len(st.Drift) > 0 {
		st.Fix = fmt.Sprintf("shipctl rollback %s %s (runs the current release again), or shipctl deploy %s", s.t.Env.Name, release.Short(current), s.t.Env.Name)
	}
	return nil
}

// drift compares each container with the current release p: its service must be
// one of p's, its config hash p's for that service; and each of p's services must
// have a container. Jobs and one-off containers are left out.
func drift(l release.Layout, current string, p *compose.Project, cs []engine.Container) ([]Drift, error) {
	services := p.WithoutJobs().Services
	want := map[string]string{}
	for name, svc := range services {
		h, err := engine.ConfigHash(svc)
		if err != nil {
			return nil, err
		}
		want[name] = h
	}
	var out []Drift
	seen := map[string]bool{}
	for _, c := range cs {
		if c.OneOff || p.Ship[c.Service].Job != "" {
			continue
		}
		seen[c.Service] = true
		rel := releaseOf(l, c.WorkingDir)
		from := ""
		if rel != "" && rel != current {
			from = " (created by release " + release.Short(rel) + ")"
		}
		hash, ok := want[c.Service]
		switch {
		case !ok:
			out = append(out, Drift{Service: c.Service, Container: c.Name, Release: rel,
				Msg: fmt.Sprintf("%s runs service %s%s, which current release %s does not have", c.Name, c.Service, from, release.Short(current))})
		case c.ConfigHash != hash:
			out = append(out, Drift{Service: c.Service, Container: c.Name, Release: rel,
				Msg: fmt.Sprintf("%s runs another configuration of %s than current release %s%s", c.Name, c.Service, release.Short(current), from)})
		}
	}
	for _, name := range p.WithoutJobs().ServiceNames() {
		if !seen[name] {
			out = append(out, Drift{Service: name, Msg: fmt.Sprintf("service %s of current release %s has no container", name, release.Short(current))})
		}
	}
	return out, nil
}

// HostHistory is a host's releases and audit.log.
type HostHistory struct {
	Host    string
	Current string
	// Releases are newest first.
	Releases []release.Info
	// Audit is the end of audit.log, oldest first.
	Audit []release.AuditEntry
	Err   error
}

// History reads every host's releases and the last limit lines of its audit.log (0:
// all).
func History(ctx context.Context, t Target, limit int) ([]HostHistory, error) {
	em := newEmitter(t.Progress, t.Redactor)
	s, err := openEach(ctx, t, em)
	if err != nil {
		return nil, err
	}
	defer s.close()
	out := make([]HostHistory, len(s.hosts))
	s.each(ctx, 0, func(ctx context.Context, i int, h *hostConn) {
		hh := HostHistory{Host: t.Env.Hosts[i].String()}
		if h == nil || h.Host == nil {
			hh.Err = s.dialErrs[i]
			out[i] = hh
			return
		}
		var err error
		store := s.store(h)
		if hh.Current, err = store.Current(ctx); err == nil {
			if hh.Releases, err = store.Releases(ctx); err == nil {
				hh.Audit, err = store.Audit(ctx, limit)
			}
		}
		hh.Err = t.Redactor.Error(err)
		out[i] = hh
	})
	return out, nil
}

// Logs streams the app's container logs from every host at once; host is the host
// each line comes from. With follow it runs until ctx ends.
func Logs(ctx context.Context, t Target, o engine.LogOptions, fn func(host string, l engine.LogLine)) error {
	em := newEmitter(t.Progress, t.Redactor)
	s, err := open(ctx, t, em)
	if err != nil {
		return err
	}
	defer s.close()
	errs := make([]error, len(s.hosts))
	s.each(ctx, 0, func(ctx context.Context, i int, h *hostConn) {
		o := o
		// A job named is shown from its last run's record (its container is gone).
		runs, rest, err := lastJobRuns(ctx, s, h, o.Services)
		if err != nil {
			errs[i] = fmt.Errorf("%s: %w", h.name, err)
			return
		}
		showJobRuns(h, runs, em, func(host string, l engine.LogLine) {
			l.Text = t.Redactor.String(l.Text)
			fn(host, l)
		})
		if len(runs) > 0 && len(rest) == 0 {
			return
		}
		if len(runs) > 0 {
			o.Services = rest
		}
		err = h.Logs(ctx, t.Project(), o, func(l engine.LogLine) {
			l.Text = t.Redactor.String(l.Text)
			fn(h.name, l)
		})
		if err != nil && ctx.Err() == nil {
			errs[i] = fmt.Errorf("%s: %w", h.name, err)
		}
	})
	if ctx.Err() != nil && o.Follow {
		return nil
	}
	return t.Redactor.Error(errors.Join(errs...))
}

// openEach is open that keeps going when some hosts cannot be reached: their
// connections are nil and their errors in dialErrs.
func openEach(ctx context.Context, t Target, em *emitter) (*session, error) {
	if t.Env == nil || len(t.Env.Hosts) == 0 {
		return nil, errors.New("the environment has no hosts")
	}
	if t.Dial == nil {
		return nil, errors.New("no way to reach the hosts (Dial is nil)")
	}
	life, stop := context.WithCancel(context.WithoutCancel(ctx))
	s := &session{t: t, em: em, l: release.Layout(t.Env.Path), life: life, stopLife: stop}
	s.detach = context.AfterFunc(ctx, stop)
	s.hosts = make([]*hostConn, len(t.Env.Hosts))
	s.dialErrs = make([]error, len(t.Env.Hosts))
	s.each(ctx, 0, func(_ context.Context, i int, _ *hostConn) {
		name := t.Env.Hosts[i].String()
		c, err := t.Dial(life, name)
		if err != nil {
			s.dialErrs[i] = t.Redactor.Error(err)
			return
		}
		s.hosts[i] = &hostConn{name: name, Host: c}
	})
	if ctx.Err() != nil {
		s.close()
		return nil, ctx.Err()
	}
	return s, nil
}
