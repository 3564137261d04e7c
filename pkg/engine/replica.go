package engine

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/compose-spec/compose-go/v2/types"
	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"
)

// What shipd's blue-green swap needs beyond Up: one more container of a service beside
// the one that runs (StartReplica), its address on the project network (ReplicaAddr),
// a wait until it is healthy (WaitReplica), its last log lines (TailLogs) and the
// removal of the old one (RemoveReplica).
//
// A replica is an ordinary container of the service: named and labelled as Up names
// and labels it (<project>-<service>-<n>, the next free container number), with the
// config-hash and image labels Up compares. Once the old container is removed, a later
// Up of the same project sees the service as unchanged and leaves the replica alone.

// Replica is one container of a service (not a one-off), with what the swap needs to
// know about it.
type Replica struct {
	Container
	// ImageID is the com.docker.compose.image label: the ID of the image it was
	// created from, which Up compares with the service's image.
	ImageID string
	// Labels are all the container's labels.
	Labels map[string]string
	// Created is when the engine created the container.
	Created time.Time
	// IPs maps each network the container is attached to (the engine's name) to its
	// IPv4 address there ("" while it is not running).
	IPs map[string]string
}

// ReplicaOptions tune StartReplica.
type ReplicaOptions struct {
	// Labels are added to the container's labels (they do not enter the config hash).
	Labels map[string]string
	// Progress, when set, receives events.
	Progress func(Event)
}

// Replicas lists the containers of one service of the project, one-off ones left out,
// sorted by container number.
func (e *Engine) Replicas(ctx context.Context, project, service string) ([]Replica, error) {
	res, err := e.api.ContainerList(ctx, client.ContainerListOptions{
		All: true,
		Filters: make(client.Filters).Add("label",
			labelProject+"="+project,
			labelService+"="+service,
		),
	})
	if err != nil {
		return nil, fmt.Errorf("list containers of %s: %w", service, err)
	}
	cs := res.Items
	out := make([]Replica, 0, len(cs))
	for _, c := range cs {
		if c.Labels[labelOneOff] == "True" {
			continue
		}
		r, err := e.replica(ctx, c.ID)
		if cerrdefs.IsNotFound(err) {
			continue // removed since it was listed
		}
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Number != out[j].Number {
			return out[i].Number < out[j].Number
		}
		return out[i].Name < out[j].Name
	})
	return out, nil
}

// InspectReplica inspects one container by ID or name.
func (e *Engine) InspectReplica(ctx context.Context, id string) (Replica, error) {
	return e.replica(ctx, id)
}

func (e *Engine) replica(ctx context.Context, id string) (Replica, error) {
	ins, err := e.inspect(ctx, id)
	if err != nil {
		if cerrdefs.IsNotFound(err) {
			return Replica{}, err
		}
		return Replica{}, fmt.Errorf("inspect container %s: %w", id, err)
	}
	return replicaOf(ins), nil
}

// replicaOf is the Replica an inspect of the container shows.
func replicaOf(ins container.InspectResponse) Replica {
	r := Replica{IPs: map[string]string{}}
	r.ID = ins.ID
	r.Name = strings.TrimPrefix(ins.Name, "/")
	if ins.Config != nil {
		r.Labels = ins.Config.Labels
		r.Image = ins.Config.Image
	}
	r.Service = r.Labels[labelService]
	r.Number, _ = strconv.Atoi(r.Labels[labelNumber])
	r.OneOff = r.Labels[labelOneOff] == "True"
	r.ConfigHash = r.Labels[labelConfigHash]
	r.ImageID = r.Labels[labelImage]
	r.Created, _ = time.Parse(time.RFC3339Nano, ins.Created)
	if st := ins.State; st != nil {
		r.State = string(st.Status)
		r.ExitCode = st.ExitCode
		if st.Health != nil {
			r.Health = string(st.Health.Status)
		}
	}
	if ns := ins.NetworkSettings; ns != nil {
		for name, ep := range ns.Networks {
			if ep != nil {
				r.IPs[name] = addrString(ep.IPAddress)
			}
		}
	}
	return r
}

// Outdated says why r is not what Up would leave alone for the service of p: its
// configuration or its image changed, or it is not running. "" means it is up to date
// and running (a new tag of the same image, nothing else changed, is up to date). The service's image must be on the engine (see PullImages).
func (e *Engine) Outdated(ctx context.Context, p *types.Project, service string, r Replica) (string, error) {
	s, ok := p.Services[service]
	if !ok {
		return "", fmt.Errorf("no such service: %s", service)
	}
	hash, err := ConfigHash(s)
	if err != nil {
		return "", err
	}
	img, err := e.api.ImageInspect(ctx, imageRef(p.Name, s))
	if err != nil {
		return "", fmt.Errorf("inspect image %s: %w", imageRef(p.Name, s), err)
	}
	// A new tag of the image r runs, nothing else changed: r is up to date (see Up).
	sameImage := false
	if r.ConfigHash != hash && r.ImageID == img.ID && r.Image != "" && r.Image != s.Image {
		old := s
		old.Image = r.Image
		h, err := ConfigHash(old)
		sameImage = err == nil && h == r.ConfigHash
	}
	switch {
	case r.ConfigHash != hash && !sameImage:
		return "configuration changed", nil
	case r.ImageID != img.ID:
		return "image changed", nil
	case r.State != string(container.StateRunning):
		return "container is " + r.State, nil
	}
	return "", nil
}

// PullImages makes sure the images of services (all when none are named, without
// what they depend on) are on the engine, pulling as Up does: by each service's
// pull_policy, with the Engine's RegistryAuth.
func (e *Engine) PullImages(ctx context.Context, p *types.Project, services []string, progress func(Event)) error {
	if len(services) == 0 {
		services = p.ServiceNames()
	}
	for _, name := range services {
		if _, ok := p.Services[name]; !ok {
			return fmt.Errorf("pull: no such service: %s", name)
		}
		if _, err := pullPolicy(p.Services[name]); err != nil {
			return fmt.Errorf("pull: service %q: %w", name, err)
		}
	}
	_, err := e.ensureImages(ctx, p, services, newReporter(progress))
	return err
}

// ErrNoReplica marks a service that cannot run a second container beside its first.
var ErrNoReplica = errors.New("service cannot run two containers at once")

// StartReplica creates and starts one more container of service beside those it has:
// the next container number, the compose labels, the config hash and image labels Up
// would give it, and o.Labels. It pulls the image when the service's pull_policy says
// so and creates the project's networks and volumes the service needs. It does not
// wait for the container to be healthy (see WaitReplica) and does not touch the
// service's other containers.
//
// A service that cannot have two containers at once is refused, before anything is
// touched, with an error that Is ErrNoReplica: one with container_name (two
// containers cannot share the name) or published ports (the second could not bind
// them). What Up refuses is refused here too.
func (e *Engine) StartReplica(ctx context.Context, p *types.Project, service string, o ReplicaOptions) (Replica, error) {
	if p == nil {
		return Replica{}, errors.New("start replica: no project")
	}
	s, ok := p.Services[service]
	if !ok {
		return Replica{}, fmt.Errorf("start replica: no such service: %s", service)
	}
	switch {
	case s.ContainerName != "":
		return Replica{}, fmt.Errorf("service %q: %w: container_name %q names a single container; remove container_name", service, ErrNoReplica, s.ContainerName)
	case len(s.Ports) > 0:
		return Replica{}, fmt.Errorf("service %q: %w: it publishes ports, which a second container could not bind; remove ports", service, ErrNoReplica)
	}
	rep := newReporter(o.Progress)
	apiVersion, err := e.connect(ctx)
	if err != nil {
		return Replica{}, err
	}
	if err := check(p, []string{service}, apiVersion); err != nil {
		return Replica{}, fmt.Errorf("start replica of %s: %w", service, err)
	}
	hash, err := ConfigHash(s)
	if err != nil {
		return Replica{}, err
	}
	images, err := e.ensureImages(ctx, p, []string{service}, rep)
	if err != nil {
		return Replica{}, err
	}
	if _, err := e.ensureNetworks(ctx, p, []string{service}, false, rep, nil); err != nil {
		return Replica{}, err
	}
	if _, err := e.ensureVolumes(ctx, p, []string{service}, false, rep, nil); err != nil {
		return Replica{}, err
	}
	existing, err := e.Replicas(ctx, p.Name, service)
	if err != nil {
		return Replica{}, err
	}
	number := 1
	for _, c := range existing {
		number = max(number, c.Number+1)
	}
	networkMode, err := e.replicaNetworkMode(ctx, p, s)
	if err != nil {
		return Replica{}, err
	}
	if len(o.Labels) > 0 {
		labels := types.Labels{}
		for k, v := range s.Labels {
			labels[k] = v
		}
		for k, v := range o.Labels {
			labels[k] = v
		}
		s.Labels = labels
	}
	r := &run{e: e, p: p, rep: rep, apiVersion: apiVersion}
	c, err := r.create(ctx, createInput{
		project: p, service: s, number: number, hash: hash, imageID: images[service].ID,
		apiVersion: apiVersion, networkMode: networkMode,
	})
	if err != nil {
		return Replica{}, err
	}
	return e.replica(ctx, c.id)
}

// replicaNetworkMode resolves network_mode service:x to the container of x that runs;
// "" for any other network mode.
func (e *Engine) replicaNetworkMode(ctx context.Context, p *types.Project, s types.ServiceConfig) (string, error) {
	dep, ok := strings.CutPrefix(s.NetworkMode, types.ServicePrefix)
	if !ok {
		return "", nil
	}
	deps, err := e.Replicas(ctx, p.Name, dep)
	if err != nil {
		return "", err
	}
	for _, d := range deps {
		if d.State == string(container.StateRunning) {
			return "container:" + d.ID, nil
		}
	}
	return "", fmt.Errorf("start replica of %s: network_mode service:%s: that service has no running container", s.Name, dep)
}

// WaitReplica waits until the container is healthy (when it has a health check) or
// running (when it has none), for at most timeout (0: 2 minutes). A container that
// exits, restarts, turns unhealthy or is not healthy in time fails with a
// *HealthError holding its last log lines.
func (e *Engine) WaitReplica(ctx context.Context, r Replica, timeout time.Duration, progress func(Event)) error {
	if timeout <= 0 {
		timeout = defaultWaitTimeout
	}
	return e.waitHealthy(ctx, target{service: r.Service, id: r.ID, name: r.Name}, timeout, false, newReporter(progress))
}

// RemoveReplica stops the container (its stop_grace_period applies) and removes it
// with its anonymous volumes. A container that is already gone is no error.
// Once begun, the removal runs to its end under a context of its own; a cancellation
// of ctx is reported after it.
func (e *Engine) RemoveReplica(ctx context.Context, r Replica, progress func(Event)) error {
	own, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Minute)
	defer cancel()
	if err := e.stopRemove(own, r.ID, r.Service, r.Name, true, newReporter(progress)); err != nil {
		return err
	}
	return ctx.Err()
}

// TailLogs returns the container's last n log lines, stdout and stderr interleaved.
func (e *Engine) TailLogs(ctx context.Context, id string, n int) ([]string, error) {
	return e.tail(ctx, id, n)
}

// ServiceNetwork is the engine's name of the network the service's containers are
// reached on (its primary network); "" for a service with a network_mode.
func ServiceNetwork(p *types.Project, service string) string {
	s, ok := p.Services[service]
	if !ok {
		return ""
	}
	keys := serviceNetworks(s)
	if len(keys) == 0 {
		return ""
	}
	return networkName(p, keys[0])
}

// ErrNoAddress marks a container without an IPv4 address on the network asked for.
var ErrNoAddress = errors.New("container has no address")

// ReplicaAddr returns host:port of the container on network (the engine's name of
// it; "" takes the first network, by name, on which it has an address).
func (e *Engine) ReplicaAddr(ctx context.Context, id, network string, port int) (string, error) {
	r, err := e.replica(ctx, id)
	if err != nil {
		return "", err
	}
	return r.Addr(network, port)
}

// Addr is host:port of r on network, as ReplicaAddr, from what was inspected.
func (r Replica) Addr(network string, port int) (string, error) {
	ip := r.IPs[network]
	if network == "" {
		names := make([]string, 0, len(r.IPs))
		for n := range r.IPs {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			if r.IPs[n] != "" {
				ip = r.IPs[n]
				break
			}
		}
	}
	if ip == "" {
		where := "on network " + network
		if network == "" {
			where = "on any network"
		}
		return "", fmt.Errorf("container %s (%s): %w %s", r.Name, r.State, ErrNoAddress, where)
	}
	return ip + ":" + strconv.Itoa(port), nil
}
