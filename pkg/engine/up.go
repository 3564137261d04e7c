package engine

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/compose-spec/compose-go/v2/types"
	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/image"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
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
	hashes := map[string]string{}
	for _, name := range services {
		h, err := ConfigHash(p.Services[name])
		if err != nil {
			return err
		}
		hashes[name] = h
		// What cannot be turned into a create request fails here, before anything changes.
		if _, err := buildCreate(createInput{project: p, service: p.Services[name], number: 1, apiVersion: apiVersion}); err != nil {
			return fmt.Errorf("up %s: %w", p.Name, err)
		}
	}

	r := &run{
		e: e, p: p, rep: rep, apiVersion: apiVersion, timeout: timeout,
		hashes: hashes, ids: map[string]string{}, names: map[string]string{}, ready: map[string]chan struct{}{},
		conditions: map[string]func() error{},
	}
	if r.images, err = e.ensureImages(ctx, p, services, rep); err != nil {
		return err
	}
	if err := e.ensureNetworks(ctx, p, services, rep); err != nil {
		return err
	}
	if err := e.ensureVolumes(ctx, p, services, rep); err != nil {
		return err
	}

	all, err := e.list(ctx, p.Name, true)
	if err != nil {
		return err
	}
	r.existing = map[string][]container.Summary{}
	var orphans []container.Summary
	for _, c := range all {
		if isOrphan(p, c) {
			orphans = append(orphans, c)
			continue
		}
		if c.Labels[labelOneOff] != "True" {
			svc := c.Labels[labelService]
			r.existing[svc] = append(r.existing[svc], c)
		}
	}
	for _, cs := range r.existing {
		sort.Slice(cs, func(i, j int) bool { return containerNumber(cs[i]) < containerNumber(cs[j]) })
	}
	if o.RemoveOrphans {
		for _, c := range orphans {
			if err := e.stopRemove(ctx, c.ID, c.Labels[labelService], containerLabelName(c), false, rep); err != nil {
				return err
			}
		}
	}

	if err := r.converge(ctx, services); err != nil {
		return err
	}
	if o.Wait {
		return r.waitAll(ctx, services)
	}
	return nil
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

	mu    sync.Mutex
	ids   map[string]string // service -> its container, once converged
	names map[string]string // service -> its container's name, once converged
	ready map[string]chan struct{}
	// conditions runs each depends_on condition (service + condition) once, however
	// many services wait on it.
	conditions map[string]func() error
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
	cs := r.existing[s.Name] // sorted by number
	// One container per service: extra ones (a scaled-up compose project) go.
	for _, c := range cs[min(1, len(cs)):] {
		if err := e.stopRemove(ctx, c.ID, s.Name, containerLabelName(c), false, r.rep); err != nil {
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
	if len(cs) == 0 {
		return r.create(ctx, in)
	}

	old := cs[0]
	oldName := containerLabelName(old)
	in.number = max(containerNumber(old), 1)
	c := target{service: s.Name, id: old.ID, name: containerName(r.p.Name, s, in.number)}
	var why string
	switch {
	case old.Labels[labelConfigHash] != in.hash:
		why = "configuration changed"
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
		switch old.State {
		case container.StateRunning, container.StateRestarting:
			r.rep.event(s.Name, c.name, "unchanged", "running")
			return c, nil
		case container.StatePaused:
			if _, err := e.api.ContainerUnpause(ctx, old.ID, client.ContainerUnpauseOptions{}); err != nil {
				return target{}, fmt.Errorf("unpause container %s: %w", c.name, err)
			}
			r.rep.event(s.Name, c.name, "start", "unpaused")
			return c, nil
		}
		if _, err := e.api.ContainerStart(ctx, old.ID, client.ContainerStartOptions{}); err != nil {
			return target{}, fmt.Errorf("start container %s: %w", c.name, err)
		}
		r.rep.event(s.Name, c.name, "start", "started")
		return c, nil
	}

	r.rep.event(s.Name, oldName, "recreate", why)
	inspect, err := e.inspect(ctx, old.ID)
	if err != nil {
		return target{}, fmt.Errorf("inspect container %s: %w", oldName, err)
	}
	in.inherit = anonymousVolumes(s, inspect, img)
	// Stop first: never two copies of a service on its volumes and ports.
	if err := e.stopRemove(ctx, old.ID, s.Name, oldName, false, r.rep); err != nil {
		return target{}, err
	}
	return r.create(ctx, in)
}

// create creates and starts the container described by in.
func (r *run) create(ctx context.Context, in createInput) (target, error) {
	e, s := r.e, in.service
	spec, err := buildCreate(in)
	if err != nil {
		return target{}, err
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
	if _, err := e.api.ContainerStart(ctx, resp.ID, client.ContainerStartOptions{}); err != nil {
		return target{}, fmt.Errorf("start container %s: %w", spec.name, err)
	}
	r.rep.event(s.Name, spec.name, "start", "started")
	return target{service: s.Name, id: resp.ID, name: spec.name}, nil
}

// anonymousVolumes finds the anonymous volumes the old container has at places the
// service or its image declare one, so the new container keeps their data.
func anonymousVolumes(s types.ServiceConfig, old container.InspectResponse, img image.InspectResponse) map[string]string {
	declared := map[string]bool{}
	if img.Config != nil {
		for target := range img.Config.Volumes {
			declared[target] = true
		}
	}
	for _, v := range s.Volumes {
		if v.Type == types.VolumeTypeVolume && v.Source == "" {
			declared[v.Target] = true
		} else {
			declared[v.Target] = false // mounted from elsewhere now
		}
	}
	out := map[string]string{}
	for _, m := range old.Mounts {
		if m.Type == "volume" && m.Name != "" && declared[m.Destination] {
			out[m.Destination] = m.Name
		}
	}
	return out
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
	g, ctx := errgroup.WithContext(ctx)
	for _, name := range services {
		c := r.started(name)
		g.Go(func() error {
			if completes[name] {
				return r.e.waitCompleted(ctx, c, r.timeout, r.rep)
			}
			return r.e.waitHealthy(ctx, c, r.timeout, false, r.rep)
		})
	}
	return g.Wait()
}

// ensureImages makes sure every service's image is on the engine, pulling by the
// services' pull_policy, and returns each service's image.
func (e *Engine) ensureImages(ctx context.Context, p *types.Project, services []string, rep *reporter) (map[string]image.InspectResponse, error) {
	type want struct {
		ref, platform string
		services      []string
		always, pull  bool
		policy        string // of the first service, for the error when it may not pull
	}
	byRef := map[string]*want{}
	var refs []string
	for _, name := range services {
		s := p.Services[name]
		ref := imageRef(p.Name, s)
		key := ref + "\x00" + s.Platform
		w := byRef[key]
		if w == nil {
			w = &want{ref: ref, platform: s.Platform}
			byRef[key] = w
			refs = append(refs, key)
		}
		w.services = append(w.services, name)
		policy, _ := pullPolicy(s) // checked already
		if w.policy == "" {
			w.policy = policy
		}
		switch policy {
		case types.PullPolicyAlways:
			w.always, w.pull = true, true
		case types.PullPolicyMissing:
			w.pull = true
		}
	}
	sort.Strings(refs)

	var mu sync.Mutex
	out := map[string]image.InspectResponse{}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(4)
	for _, key := range refs {
		w := byRef[key]
		g.Go(func() error {
			who := strings.Join(w.services, ",")
			img, err := e.imageInspect(gctx, w.ref)
			missing := cerrdefs.IsNotFound(err)
			if err != nil && !missing {
				return fmt.Errorf("inspect image %s: %w", w.ref, err)
			}
			if missing && !w.pull {
				return fmt.Errorf("image %s for service %s is not on the engine and pull_policy is %s", w.ref, who, w.policy)
			}
			if missing || w.always {
				rep.event(who, "", "pull", "pulling "+w.ref)
				if err := e.pull(gctx, w.ref, w.platform); err != nil {
					return fmt.Errorf("pull %s for service %s: %w", w.ref, who, err)
				}
				rep.event(who, "", "pull", "pulled "+w.ref)
				if img, err = e.imageInspect(gctx, w.ref); err != nil {
					return fmt.Errorf("inspect image %s: %w", w.ref, err)
				}
			}
			mu.Lock()
			for _, s := range w.services {
				out[s] = img
			}
			mu.Unlock()
			return nil
		})
	}
	return out, g.Wait()
}

// Check refuses what Up could not run of services (all when none are named): unknown
// services, dependency cycles, and settings the engine's API version lacks. It
// changes nothing, so callers run it before building images.
func (e *Engine) Check(ctx context.Context, p *types.Project, services []string) error {
	_, _, err := e.prepare(ctx, p, services)
	return err
}

func (e *Engine) prepare(ctx context.Context, p *types.Project, wanted []string) ([]string, string, error) {
	if _, err := e.api.Ping(ctx, client.PingOptions{NegotiateAPIVersion: true}); err != nil {
		return nil, "", fmt.Errorf("connect to the docker engine: %w", err)
	}
	apiVersion := e.api.ClientVersion()
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

// pull pulls ref and reads the engine's progress to its end, failing on its errors.
func (e *Engine) pull(ctx context.Context, ref, platform string) error {
	var opts client.ImagePullOptions
	if platform != "" {
		pl, err := parsePlatform(platform)
		if err != nil {
			return err
		}
		opts.Platforms = []ocispec.Platform{*pl}
	}
	if e.RegistryAuth != nil {
		auth, err := e.RegistryAuth(ref)
		if err != nil {
			return fmt.Errorf("registry credentials: %w", err)
		}
		opts.RegistryAuth = auth
	}
	resp, err := e.api.ImagePull(ctx, ref, opts)
	if err != nil {
		return err
	}
	defer resp.Close()
	// Read the progress to its end; an error message in it is the pull's error.
	return resp.Wait(ctx)
}

// ensureNetworks creates the networks the services join that do not exist yet, and
// checks that the external ones do.
func (e *Engine) ensureNetworks(ctx context.Context, p *types.Project, services []string, rep *reporter) error {
	keys := map[string]bool{}
	for _, name := range services {
		for _, key := range serviceNetworks(p.Services[name]) {
			keys[key] = true
		}
	}
	sorted := make([]string, 0, len(keys))
	for key := range keys {
		sorted = append(sorted, key)
	}
	sort.Strings(sorted)
	for _, key := range sorted {
		n := p.Networks[key] // the zero value for an undeclared default network
		name := networkName(p, key)
		found, err := e.findNetwork(ctx, name)
		if err != nil {
			return err
		}
		if n.External {
			if !found {
				return fmt.Errorf("network %s is declared external but does not exist", name)
			}
			continue
		}
		if found {
			continue
		}
		labels := map[string]string{}
		for k, v := range n.Labels {
			labels[k] = v
		}
		for k, v := range n.CustomLabels {
			labels[k] = v
		}
		labels[labelNetwork] = key
		labels[labelProject] = p.Name
		labels[labelVersion] = composeVersion
		opts := client.NetworkCreateOptions{
			Driver:     n.Driver,
			Options:    n.DriverOpts,
			Internal:   n.Internal,
			Attachable: n.Attachable,
			EnableIPv6: n.EnableIPv6,
			Labels:     labels,
		}
		ipam, err := ipamConfig(n.Ipam)
		if err != nil {
			return fmt.Errorf("network %s: %w", name, err)
		}
		opts.IPAM = ipam
		if _, err := e.api.NetworkCreate(ctx, name, opts); err != nil {
			// Another Up of the same project may have just created it.
			if found, ferr := e.findNetwork(ctx, name); ferr == nil && found {
				continue
			}
			return fmt.Errorf("create network %s: %w", name, err)
		}
		rep.event("", "", "network", "created "+name)
	}
	return nil
}

// findNetwork reports whether a network has exactly this name (the engine's name
// filter matches substrings, and inspecting by name also matches ID prefixes).
func (e *Engine) findNetwork(ctx context.Context, name string) (bool, error) {
	res, err := e.api.NetworkList(ctx, client.NetworkListOptions{Filters: make(client.Filters).Add("name", name)})
	if err != nil {
		return false, fmt.Errorf("list networks: %w", err)
	}
	for _, n := range res.Items {
		if n.Name == name {
			return true, nil
		}
	}
	return false, nil
}

// ensureVolumes creates the named volumes the services mount that do not exist yet,
// and checks that the external ones do.
func (e *Engine) ensureVolumes(ctx context.Context, p *types.Project, services []string, rep *reporter) error {
	keys := map[string]bool{}
	for _, name := range services {
		for _, v := range p.Services[name].Volumes {
			if v.Type == types.VolumeTypeVolume && v.Source != "" {
				keys[v.Source] = true
			}
		}
	}
	sorted := make([]string, 0, len(keys))
	for key := range keys {
		sorted = append(sorted, key)
	}
	sort.Strings(sorted)
	for _, key := range sorted {
		v := p.Volumes[key]
		name := volumeName(p, key)
		_, err := e.api.VolumeInspect(ctx, name, client.VolumeInspectOptions{})
		if err == nil {
			continue
		}
		if !cerrdefs.IsNotFound(err) {
			return fmt.Errorf("inspect volume %s: %w", name, err)
		}
		if v.External {
			return fmt.Errorf("volume %s is declared external but does not exist", name)
		}
		labels := map[string]string{}
		for k, val := range v.Labels {
			labels[k] = val
		}
		for k, val := range v.CustomLabels {
			labels[k] = val
		}
		labels[labelVolume] = key
		labels[labelProject] = p.Name
		labels[labelVersion] = composeVersion
		if _, err := e.api.VolumeCreate(ctx, client.VolumeCreateOptions{
			Name: name, Driver: v.Driver, DriverOpts: v.DriverOpts, Labels: labels,
		}); err != nil {
			return fmt.Errorf("create volume %s: %w", name, err)
		}
		rep.event("", "", "volume", "created "+name)
	}
	return nil
}

// list returns the project's containers, one-off ones too, running or not.
func (e *Engine) list(ctx context.Context, project string, all bool) ([]container.Summary, error) {
	cs, err := e.api.ContainerList(ctx, client.ContainerListOptions{
		All:     all,
		Filters: make(client.Filters).Add("label", labelProject+"="+project),
	})
	if err != nil {
		return nil, fmt.Errorf("list containers of %s: %w", project, err)
	}
	return cs.Items, nil
}

// isOrphan tells a container of a service no longer in the project, or an exited
// one-off container, as docker compose does.
func isOrphan(p *types.Project, c container.Summary) bool {
	if c.Labels[labelOneOff] == "True" {
		return c.State == container.StateExited || c.State == container.StateDead
	}
	svc := c.Labels[labelService]
	if _, ok := p.Services[svc]; ok {
		return false
	}
	_, disabled := p.DisabledServices[svc]
	return !disabled
}

// stopRemove stops a container (its own stop timeout applies: stop_grace_period) and
// removes it.
func (e *Engine) stopRemove(ctx context.Context, id, service, name string, volumes bool, rep *reporter) error {
	rep.event(service, name, "remove", "stopping")
	if _, err := e.api.ContainerStop(ctx, id, client.ContainerStopOptions{}); err != nil && !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("stop container %s: %w", name, err)
	}
	if _, err := e.api.ContainerRemove(ctx, id, client.ContainerRemoveOptions{Force: true, RemoveVolumes: volumes}); err != nil && !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("remove container %s: %w", name, err)
	}
	rep.event(service, name, "remove", "removed")
	return nil
}

// containerLabelName is the container's name without the engine's leading slash.
func containerLabelName(c container.Summary) string {
	if len(c.Names) == 0 {
		return c.ID[:min(12, len(c.ID))]
	}
	// A container linked to others is listed under several names; its own has one slash.
	for _, n := range c.Names {
		if strings.Count(n, "/") == 1 {
			return strings.TrimPrefix(n, "/")
		}
	}
	return strings.TrimPrefix(c.Names[0], "/")
}

func containerNumber(c container.Summary) int {
	n, err := strconv.Atoi(c.Labels[labelNumber])
	if err != nil {
		return 0
	}
	return n
}

// ipamConfig maps a network's ipam section; nil when it has none.
func ipamConfig(c types.IPAMConfig) (*network.IPAM, error) {
	if c.Driver == "" && len(c.Config) == 0 {
		return nil, nil
	}
	ipam := &network.IPAM{Driver: c.Driver, Options: c.Options}
	for _, pool := range c.Config {
		if pool == nil {
			continue
		}
		cfg := network.IPAMConfig{}
		var err error
		if cfg.Subnet, err = parsePrefix(pool.Subnet); err != nil {
			return nil, fmt.Errorf("ipam subnet: %w", err)
		}
		if cfg.IPRange, err = parsePrefix(pool.IPRange); err != nil {
			return nil, fmt.Errorf("ipam ip_range: %w", err)
		}
		if cfg.Gateway, err = parseAddr(pool.Gateway); err != nil {
			return nil, fmt.Errorf("ipam gateway: %w", err)
		}
		for host, addr := range pool.AuxiliaryAddresses {
			a, err := parseAddr(addr)
			if err != nil {
				return nil, fmt.Errorf("ipam aux_addresses %s: %w", host, err)
			}
			if cfg.AuxAddress == nil {
				cfg.AuxAddress = map[string]netip.Addr{}
			}
			cfg.AuxAddress[host] = a
		}
		ipam.Config = append(ipam.Config, cfg)
	}
	return ipam, nil
}

// parsePrefix parses a subnet in CIDR form; "" is the zero prefix, which the API
// leaves out.
func parsePrefix(s string) (netip.Prefix, error) {
	if s == "" {
		return netip.Prefix{}, nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not a subnet in CIDR form", s)
	}
	return p, nil
}
