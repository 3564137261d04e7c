package deploy

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/shipdeploy/ship/pkg/agentapi"
	"github.com/shipdeploy/ship/pkg/compose"
	"github.com/shipdeploy/ship/pkg/engine"
	"github.com/shipdeploy/ship/pkg/plan"
	"github.com/shipdeploy/ship/pkg/release"
)

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
	ids := builtImageIDs(ctx, o.Registry, rel)
	preview := Preview{App: o.App, Env: o.Env.Name, SHA: rel.release(), Subject: rel.Subject, Hosts: make([]HostPreview, len(s.hosts))}
	errs := make([]error, len(s.hosts))
	s.each(ctx, 0, func(ctx context.Context, i int, h *hostConn) {
		hp, err := hostPreflight(ctx, s, h, rel.release(), p, hashes, ids)
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

// hostPreflight asks the host everything at once (what the app's folder holds for
// the release sha, release.Store.Look, kept for the upload; the engine's version, the
// check of the release, the app's containers, shipd's status): over SSH the requests
// are in flight together, a round trip for all rather than one each. The lock's
// holder.json is written meanwhile (lockAll).
func hostPreflight(ctx context.Context, s *session, h *hostConn, sha string, p *compose.Project, hashes map[string]string, ids map[string][]string) (HostPreview, error) {
	var (
		current, version string
		look             *release.Look
		cs               []engine.Container
		st               *agentapi.Status
		errs             [5]error
		wg               sync.WaitGroup
	)
	steps := []func() error{
		func() error {
			look = s.store(h).Look(ctx, sha)
			current = look.Current
			return look.CurrentErr
		},
		func() (err error) {
			if version = h.version; version == "" { // not pinged by Open yet
				version, err = h.Ping(ctx)
			}
			return err
		},
		func() error { return h.Check(ctx, p.Project, nil) },
		func() (err error) { cs, err = h.Containers(ctx, s.t.Project()); return err },
		func() (err error) {
			if s.t.Env.Agent {
				st, err = agentPreflight(ctx, s, h)
			}
			return err
		},
	}
	for i, step := range steps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = step()
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return HostPreview{}, err
		}
	}
	h.look = look
	if err := checkPlaceInfo(ctx, s, h, current, look.CurrentInfo, look.CurrentInfoErr, cs); err != nil {
		return HostPreview{}, err
	}
	var observed []plan.Observed
	for _, c := range cs {
		if !c.OneOff {
			observed = append(observed, plan.Observed{Service: c.Service, Image: c.Image, ImageID: c.ImageID, ConfigHash: c.ConfigHash, Running: c.State == "running"})
		}
	}
	on := "no release yet"
	if current != "" {
		on = "current " + release.Short(current)
	}
	if s.t.Env.Agent {
		if err := routeClash(st, s.t.Project(), p); err != nil {
			return HostPreview{}, err
		}
		on += fmt.Sprintf("; shipd %s, up %s", agentVersion(st), st.Uptime.Std())
	}
	s.em.info(h.name, StepPreflight, fmt.Sprintf("ready: SFTP, Docker engine %s; %s", version, on))
	return HostPreview{Host: h.name, Current: current, Plan: plan.DiffImages(h.name, p, hashes, ids, observed)}, nil
}

// ImageIDs, when the Registry has it too, gives the IDs an image of the registry
// has on an engine once pulled (image.Registries.ImageIDs).
type ImageIDs interface {
	ImageIDs(ctx context.Context, ref string) ([]string, error)
}

// builtImageIDs asks the registry, when it can tell, the image IDs of the images ship
// built, by service: the plan then says which services keep running because their new
// tag is the image they run. What cannot be asked stays unknown (the plan says the
// engine decides once it has pulled).
func builtImageIDs(ctx context.Context, reg Registry, rel *Release) map[string][]string {
	lookup, ok := reg.(ImageIDs)
	if !ok || len(rel.Built) == 0 {
		return nil
	}
	byRef := map[string][]string{}
	for _, ref := range rel.Built {
		if ids, err := lookup.ImageIDs(ctx, ref); err == nil {
			byRef[ref] = ids
		}
	}
	out := map[string][]string{}
	for name, svc := range rel.Project.Services {
		if ids := byRef[svc.Image]; len(ids) > 0 {
			out[name] = ids
		}
	}
	return out
}

// lockHolder is me as a lock's holder.json says it, refreshed every refresh (0: a
// lock without a heartbeat, shipctl lock's).
func lockHolder(me Holder, refresh time.Duration) Holder {
	if refresh > 0 {
		me.Refresh = refresh.String()
	}
	return me
}

// lockAll takes the lock on every host, one after the other in the order of
// ship.yaml, so that two deploys never interleave across hosts (a host whose lock
// openConn took with its checks, the first, is taken). When one host is
// locked, the locks taken are released and nothing else happens. With refresh, each
// lock's heartbeat is kept until hostConn.unlock (or the session's close).
func (s *session) lockAll(ctx context.Context, me Holder, wait, poll, refresh time.Duration, results []HostResult) error {
	deadline := time.Now().Add(wait)
	me = lockHolder(me, refresh)
	for i, h := range s.hosts {
		p, err := h.holder, error(nil)
		if p != nil { // taken with the checks (openConn)
			p.announce(h.name, s.l, s.em)
		} else {
			p, err = startAcquire(ctx, h, s.l, h.name, me, max(0, time.Until(deadline)), poll, s.em)
		}
		if err == nil && refresh == 0 {
			// shipctl lock: the lock is all it does.
			err = p.wait()
		}
		if err == nil {
			// A deploy or a rollback goes on while holder.json is written: the host's
			// run waits for it (hostConn.held) before it changes anything.
			h.holder = p
			if refresh > 0 {
				h.lease = heartbeatAfter(ctx, p, h.conn, s.l, h.name, me, refresh, s.em)
			}
			continue
		}
		for j := range i {
			if rerr := s.hosts[j].unlock(context.WithoutCancel(ctx), s.l, me, s.em); rerr != nil {
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
