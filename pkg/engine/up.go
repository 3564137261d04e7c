package engine

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/compose-spec/compose-go/v2/types"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/image"
	"github.com/moby/moby/client"
	"golang.org/x/sync/errgroup"
)

// Up makes the engine run the project: it pulls missing images, creates the project's
// networks and volumes, then creates, recreates or starts each service's container in
// dependency order (independent services in parallel), leaving alone the containers
// whose configuration and image have not changed. With o.Wait it then waits until
// every container is healthy, or running when it has no health check.
//
// What the engine does not support is refused, by name, before anything is touched.
func (e *Engine) Up(ctx context.Context, p *types.Project, o UpOptions) error {
	if p == nil {
		return errors.New("up: no project")
	}
	rep := newReporter(o.Progress)
	timeout := o.WaitTimeout
	if timeout <= 0 {
		timeout = defaultWaitTimeout
	}

	services, apiVersion, err := e.prepare(ctx, p, o.Services)
	if err != nil {
		return err
	}
	hashes, err := createHashes(p, services, apiVersion)
	if err != nil {
		return err
	}

	r := &run{
		e: e, p: p, rep: rep, apiVersion: apiVersion, timeout: timeout,
		hashes: hashes, ids: map[string]string{}, names: map[string]string{}, ready: map[string]chan struct{}{},
		conditions: map[string]func() error{}, seen: map[string]container.Summary{},
	}
	// What the engine has (images, volumes, networks, the project's containers) is
	// asked all at once: on a far host, one round trip instead of one per request.
	var (
		vols map[string]volumeRead
		nets map[string]networkRead
		all  []container.Summary
	)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() (err error) { r.images, err = e.ensureImages(gctx, p, services, rep); return err })
	g.Go(func() error { vols = e.inspectVolumes(gctx, p, volumeKeys(p, services)); return nil })
	g.Go(func() error { nets = e.findNetworks(gctx, p, networkKeys(p, services)); return nil })
	g.Go(func() (err error) { all, err = e.list(gctx, p.Name, true); return err })
	if err := g.Wait(); err != nil {
		return err
	}
	// Volumes first: a changed one without consent is refused before any other change.
	whole := len(o.Services) == 0
	removedVols, err := e.ensureVolumes(ctx, p, services, whole, rep, vols)
	if err != nil {
		return err
	}
	removedNets, err := e.ensureNetworks(ctx, p, services, whole, rep, nets)
	if err != nil {
		return err
	}
	if removedVols || removedNets {
		// Containers went with a diverged volume or network: the list is out of date.
		if all, err = e.list(ctx, p.Name, true); err != nil {
			return err
		}
	}
	var orphans []container.Summary
	r.existing, orphans = byService(p, all)
	if o.RemoveOrphans {
		for _, c := range orphans {
			if err := ctx.Err(); err != nil {
				return err
			}
			if err := e.stopRemoveOwn(ctx, c.ID, c.Labels[labelService], containerLabelName(c), rep); err != nil {
				return err
			}
		}
	}

	err = r.converge(ctx, services)
	if err == nil && o.Wait {
		r.http = o.HTTPHealth
		err = r.waitAll(ctx, services)
	}
	// The renames of recreated containers overlap the wait; Up ends after them.
	if rerr := r.renamed(); err == nil {
		err = rerr
	} else if rerr != nil {
		err = errors.Join(err, rerr)
	}
	return err
}

// createHashes is the config hash of each of services; a service that cannot be
// turned into a create request fails here, before anything changes.
func createHashes(p *types.Project, services []string, apiVersion string) (map[string]string, error) {
	hashes := map[string]string{}
	for _, name := range services {
		h, err := ConfigHash(p.Services[name])
		if err != nil {
			return nil, err
		}
		hashes[name] = h
		if _, err := buildCreate(createInput{project: p, service: p.Services[name], number: 1, apiVersion: apiVersion}); err != nil {
			return nil, fmt.Errorf("up %s: %w", p.Name, err)
		}
	}
	return hashes, nil
}

// byService sorts the project's containers: by service (each service's by number),
// one-off ones left out; and the orphans, as docker compose tells them.
func byService(p *types.Project, all []container.Summary) (map[string][]container.Summary, []container.Summary) {
	existing := map[string][]container.Summary{}
	var orphans []container.Summary
	for _, c := range all {
		if isOrphan(p, c) {
			orphans = append(orphans, c)
			continue
		}
		if c.Labels[labelOneOff] != "True" {
			svc := c.Labels[labelService]
			existing[svc] = append(existing[svc], c)
		}
	}
	for _, cs := range existing {
		sort.Slice(cs, func(i, j int) bool { return containerNumber(cs[i]) < containerNumber(cs[j]) })
	}
	return existing, orphans
}

// run is one Up in progress.
type run struct {
	e          *Engine
	p          *types.Project
	rep        *reporter
	apiVersion string
	timeout    time.Duration
	hashes     map[string]string
	images     map[string]image.InspectResponse // by service
	existing   map[string][]container.Summary   // the project's containers, by service
	http       map[string]HTTPHealth            // by service: checked beside the engine's health
	// seen are the containers Up left running, by service, as its list showed them.
	seen map[string]container.Summary

	mu    sync.Mutex
	ids   map[string]string // service -> its container, once converged
	names map[string]string // service -> its container's name, once converged
	ready map[string]chan struct{}
	// conditions runs each depends_on condition (service + condition) once, however
	// many services wait on it.
	conditions map[string]func() error
	// renames are the renames of recreated containers under way (see replace), and
	// renameErr what failed of them.
	renames   sync.WaitGroup
	renameErr error
}

// started returns the container of a converged service.
func (r *run) started(service string) target {
	r.mu.Lock()
	defer r.mu.Unlock()
	return target{service: service, id: r.ids[service], name: r.names[service]}
}

// converge brings every service's container up, each after its dependencies have
// met their conditions; independent services go in parallel.
func (r *run) converge(ctx context.Context, services []string) error {
	for _, name := range services {
		r.ready[name] = make(chan struct{})
	}
	g, ctx := errgroup.WithContext(ctx)
	for _, name := range services {
		s := r.p.Services[name]
		g.Go(func() error {
			for _, dep := range dependencies(r.p, s) {
				select {
				case <-r.ready[dep]:
				case <-ctx.Done():
					return ctx.Err()
				}
				if err := r.condition(ctx, dep, s.DependsOn[dep].Condition); err != nil {
					return fmt.Errorf("start %s: dependency %s: %w", name, dep, err)
				}
			}
			c, err := r.service(ctx, s)
			if err != nil {
				return err
			}
			r.mu.Lock()
			r.ids[name], r.names[name] = c.id, c.name
			r.mu.Unlock()
			close(r.ready[name])
			return nil
		})
	}
	return g.Wait()
}

// condition waits, once per dependency and condition, until dep meets it.
func (r *run) condition(ctx context.Context, dep, cond string) error {
	switch cond {
	case types.ServiceConditionHealthy, types.ServiceConditionCompletedSuccessfully:
	default: // service_started: it has been started
		return nil
	}
	r.mu.Lock()
	fn, ok := r.conditions[dep+"\x00"+cond]
	if !ok {
		fn = sync.OnceValue(func() error {
			c := r.started(dep)
			if cond == types.ServiceConditionHealthy {
				return r.e.waitHealthy(ctx, c, r.timeout, true, r.rep)
			}
			return r.e.waitCompleted(ctx, c, r.timeout, r.rep)
		})
		r.conditions[dep+"\x00"+cond] = fn
	}
	r.mu.Unlock()
	return fn()
}

// service converges one service's container and returns it.
func (r *run) service(ctx context.Context, s types.ServiceConfig) (target, error) {
	e := r.e
	r.mu.Lock()
	cs := r.existing[s.Name] // sorted by number
	r.mu.Unlock()
	// One container per service: extra ones (a scaled-up compose project) go.
	for _, c := range cs[min(1, len(cs)):] {
		if err := ctx.Err(); err != nil {
			return target{}, err
		}
		if err := e.stopRemoveOwn(ctx, c.ID, s.Name, containerLabelName(c), r.rep); err != nil {
			return target{}, err
		}
	}
	img := r.images[s.Name]
	networkMode := ""
	if dep, ok := strings.CutPrefix(s.NetworkMode, types.ServicePrefix); ok {
		networkMode = "container:" + r.started(dep).id
	}
	in := createInput{
		project: r.p, service: s, number: 1, hash: r.hashes[s.Name], imageID: img.ID,
		apiVersion: r.apiVersion, networkMode: networkMode,
	}
	if networkMode != "" {
		h, err := r.hash(s)
		if err != nil {
			return target{}, err
		}
		in.hash = h
	}
	if len(cs) == 0 {
		return r.create(ctx, in)
	}

	old := cs[0]
	oldName := containerLabelName(old)
	in.number = max(containerNumber(old), 1)
	c := target{service: s.Name, id: old.ID, name: containerName(r.p.Name, s, in.number)}
	var why string
	unchanged := "running"
	switch {
	case old.Labels[labelConfigHash] != in.hash:
		why = "configuration changed"
		if r.sameImage(ctx, s, old, img.ID) {
			why, unchanged = "", "same image"
		}
	case old.Labels[labelImage] != img.ID:
		why = "image changed"
	case oldName != c.name:
		why = "container name changed"
	case networkMode != "" && old.HostConfig.NetworkMode != networkMode:
		why = "network_mode service was recreated"
	case old.State == container.StateDead:
		why = "container is dead"
	}
	if why == "" {
		if err := r.keep(ctx, s.Name, c.name, old, unchanged); err != nil {
			return target{}, err
		}
		return c, nil
	}

	r.rep.event(s.Name, oldName, "recreate", why)
	if err := r.stopDependents(ctx, s.Name); err != nil {
		return target{}, err
	}
	return r.recreate(ctx, in, old, c.name, img)
}

// keep leaves old, which needs no recreate, running as name: started or unpaused
// when it is not (unchanged says why it is left as it is).
func (r *run) keep(ctx context.Context, service, name string, old container.Summary, unchanged string) error {
	switch old.State {
	case container.StateRunning, container.StateRestarting:
		r.rep.event(service, name, "unchanged", unchanged)
		r.mu.Lock()
		r.seen[service] = old
		r.mu.Unlock()
		return nil
	case container.StatePaused:
		if _, err := r.e.api.ContainerUnpause(ctx, old.ID, client.ContainerUnpauseOptions{}); err != nil {
			return fmt.Errorf("unpause container %s: %w", name, err)
		}
		r.rep.event(service, name, "start", "unpaused")
		return nil
	}
	if _, err := r.e.api.ContainerStart(ctx, old.ID, client.ContainerStartOptions{}); err != nil {
		return fmt.Errorf("start container %s: %w", name, err)
	}
	r.rep.event(service, name, "start", "started")
	return nil
}

// create creates and starts the container described by in.
func (r *run) create(ctx context.Context, in createInput) (target, error) {
	c, err := r.createOnly(ctx, in, "")
	if err != nil {
		return target{}, err
	}
	if _, err := r.e.api.ContainerStart(ctx, c.id, client.ContainerStartOptions{}); err != nil {
		return target{}, fmt.Errorf("start container %s: %w", c.name, err)
	}
	r.rep.event(c.service, c.name, "start", "started")
	return c, nil
}

// createOnly creates the container described by in, without starting it; name, when
// set, replaces its name (the network aliases keep the service's container name).
func (r *run) createOnly(ctx context.Context, in createInput, name string) (target, error) {
	e, s := r.e, in.service
	in.proxy = e.Proxy
	spec, err := buildCreate(in)
	if err != nil {
		return target{}, err
	}
	if name != "" {
		spec.name = name
	}
	resp, err := e.api.ContainerCreate(ctx, client.ContainerCreateOptions{
		Config: spec.config, HostConfig: spec.host, NetworkingConfig: spec.network, Platform: spec.platform, Name: spec.name,
	})
	if err != nil {
		return target{}, fmt.Errorf("create container %s: %w", spec.name, err)
	}
	for _, ep := range spec.connect {
		if _, err := e.api.NetworkConnect(ctx, ep.network, client.NetworkConnectOptions{Container: resp.ID, EndpointConfig: ep.settings}); err != nil {
			return target{}, fmt.Errorf("connect container %s to network %s: %w", spec.name, ep.network, err)
		}
	}
	r.rep.event(s.Name, spec.name, "create", "created")
	return target{service: s.Name, id: resp.ID, name: spec.name}, nil
}

// waitAll waits, in parallel, until each service's container is healthy (with a
// health check) or running (without); a service another one waits on to complete
// successfully must have exited 0 instead.
func (r *run) waitAll(ctx context.Context, services []string) error {
	completes := map[string]bool{}
	for _, name := range services {
		for dep, d := range r.p.Services[name].DependsOn {
			if d.Condition == types.ServiceConditionCompletedSuccessfully {
				completes[dep] = true
			}
		}
	}
	deadline := time.Now().Add(r.timeout)
	g, ctx := errgroup.WithContext(ctx)
	for _, name := range services {
		c := r.started(name)
		g.Go(func() error {
			if completes[name] {
				return r.e.waitCompleted(ctx, c, r.timeout, r.rep)
			}
			return r.waitReady(ctx, c, deadline)
		})
	}
	return g.Wait()
}

// Check refuses what Up could not run of services (all when none are named): unknown
// services, dependency cycles, and settings the engine's API version lacks. It
// changes nothing, so callers run it before building images.
func (e *Engine) Check(ctx context.Context, p *types.Project, services []string) error {
	_, _, err := e.prepare(ctx, p, services)
	return err
}

func (e *Engine) prepare(ctx context.Context, p *types.Project, wanted []string) ([]string, string, error) {
	apiVersion, err := e.connect(ctx)
	if err != nil {
		return nil, "", err
	}
	services, err := selectServices(p, wanted)
	if err == nil {
		err = checkDependencies(p, services)
	}
	if err == nil {
		err = check(p, services, apiVersion)
	}
	if err != nil {
		return nil, "", fmt.Errorf("up %s: %w", p.Name, err)
	}
	return services, apiVersion, nil
}
