package engine

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/compose-spec/compose-go/v2/types"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client/pkg/versions"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// containerName is the name docker compose gives the service's container number n.
func containerName(project string, s types.ServiceConfig, n int) string {
	if s.ContainerName != "" {
		return s.ContainerName
	}
	return fmt.Sprintf("%s-%s-%d", project, s.Name, n)
}

// imageRef is the image the service runs: its image, else the name docker compose
// gives the image it builds.
func imageRef(project string, s types.ServiceConfig) string {
	if s.Image != "" {
		return s.Image
	}
	return strings.ToLower(project + "-" + s.Name)
}

// networkName is the engine's name of the project network key.
func networkName(p *types.Project, key string) string {
	if n, ok := p.Networks[key]; ok && n.Name != "" {
		return n.Name
	}
	return p.Name + "_" + key
}

// volumeName is the engine's name of the project volume key.
func volumeName(p *types.Project, key string) string {
	if v, ok := p.Volumes[key]; ok && v.Name != "" {
		return v.Name
	}
	return p.Name + "_" + key
}

// serviceNetworks are the keys of the networks the service joins, the primary one
// first (highest priority, then by name); none with a network_mode.
func serviceNetworks(s types.ServiceConfig) []string {
	if s.NetworkMode != "" {
		return nil
	}
	if len(s.Networks) == 0 {
		return []string{"default"}
	}
	return s.NetworksByPriority()
}

// createSpec is everything needed to create one container.
type createSpec struct {
	name     string
	config   *container.Config
	host     *container.HostConfig
	network  *network.NetworkingConfig
	platform *ocispec.Platform
	// connect are networks joined after create and before start: the engine takes
	// one endpoint at create before API 1.44.
	connect []endpoint
}

type endpoint struct {
	network  string
	settings *network.EndpointSettings
}

// createInput is what buildCreate needs beyond the service itself.
type createInput struct {
	project    *types.Project
	service    types.ServiceConfig
	number     int
	hash       string
	imageID    string
	apiVersion string
	// networkMode replaces the service's network_mode (service:x resolved to container:<id>).
	networkMode string
	// inherit maps a target path to the anonymous volume the replaced container had there.
	inherit map[string]string
	// proxy is added to the environment where the service does not set the key.
	proxy map[string]string
}

// buildCreate turns a service into the Engine API's create request.
func buildCreate(in createInput) (createSpec, error) {
	p, s := in.project, in.service
	name := containerName(p.Name, s, in.number)
	cfg := containerConfig(in)
	bindings, err := publish(s, cfg.ExposedPorts)
	if err != nil {
		return createSpec{}, err
	}
	host, err := hostConfig(in, bindings)
	if err != nil {
		return createSpec{}, err
	}

	spec := createSpec{name: name, config: cfg, host: host}
	if s.Platform != "" {
		pl, err := parsePlatform(s.Platform)
		if err != nil {
			return createSpec{}, fmt.Errorf("service %s: %w", s.Name, err)
		}
		spec.platform = pl
	}
	if err := networking(&spec, in); err != nil {
		return createSpec{}, err
	}
	return spec, nil
}

// createLabels are the service's labels and those docker compose sets.
func createLabels(in createInput) map[string]string {
	p, s := in.project, in.service
	labels := map[string]string{}
	for k, v := range s.Labels {
		labels[k] = v
	}
	for k, v := range s.CustomLabels {
		labels[k] = v
	}
	var deps []string
	for dep, d := range s.DependsOn {
		deps = append(deps, fmt.Sprintf("%s:%s:%t", dep, d.Condition, d.Restart))
	}
	sort.Strings(deps)
	for k, v := range map[string]string{
		labelProject:     p.Name,
		labelService:     s.Name,
		labelNumber:      strconv.Itoa(in.number),
		labelOneOff:      "False",
		labelConfigHash:  in.hash,
		labelWorkingDir:  p.WorkingDir,
		labelConfigFiles: strings.Join(p.ComposeFiles, ","),
		labelVersion:     ComposeVersion,
		labelDependsOn:   strings.Join(deps, ","),
		labelImage:       in.imageID,
	} {
		labels[k] = v
	}
	return labels
}

// containerConfig is the create request's container part, its exposed ports still
// empty (see publish).
func containerConfig(in createInput) *container.Config {
	s := in.service
	cfg := &container.Config{
		Hostname:     s.Hostname,
		Domainname:   s.DomainName,
		User:         s.User,
		ExposedPorts: network.PortSet{},
		Tty:          s.Tty,
		OpenStdin:    s.StdinOpen,
		AttachStdout: true,
		AttachStderr: true,
		Env:          environment(s.Environment, in.proxy),
		Image:        imageRef(in.project.Name, s),
		WorkingDir:   s.WorkingDir,
		Labels:       createLabels(in),
		StopSignal:   s.StopSignal,
		Healthcheck:  healthConfig(s.HealthCheck, in.apiVersion),
	}
	if s.Command != nil {
		cfg.Cmd = s.Command
	}
	if s.Entrypoint != nil {
		cfg.Entrypoint = s.Entrypoint
	}
	if s.StopGracePeriod != nil {
		secs := int(time.Duration(*s.StopGracePeriod).Round(time.Second) / time.Second)
		cfg.StopTimeout = &secs
	}
	return cfg
}

// hostConfig is the create request's host part: restart policy, mounts, DNS, logging,
// limits and the published ports (bindings). The network mode is set by networking.
func hostConfig(in createInput, bindings network.PortMap) (*container.HostConfig, error) {
	s := in.service
	restart := container.RestartPolicy{} // as docker compose: no policy, not "no"
	if s.Restart != "" {
		r, err := restartPolicy(s.Restart)
		if err != nil {
			return nil, fmt.Errorf("service %s: %w", s.Name, err)
		}
		restart = r
	}
	if s.Deploy != nil && s.Deploy.RestartPolicy != nil {
		restart = deployRestartPolicy(*s.Deploy.RestartPolicy)
	}
	dns, err := parseAddrs(s.DNS)
	if err != nil {
		return nil, fmt.Errorf("service %s: dns: %w", s.Name, err)
	}
	binds, mounts := volumeMounts(in.project, s, in.inherit)
	host := &container.HostConfig{
		Binds:          binds,
		Mounts:         mounts,
		Tmpfs:          tmpfs(s.Tmpfs),
		PortBindings:   bindings,
		RestartPolicy:  restart,
		CapAdd:         s.CapAdd,
		CapDrop:        s.CapDrop,
		DNS:            dns,
		DNSSearch:      s.DNSSearch,
		DNSOptions:     s.DNSOpts,
		ExtraHosts:     extraHosts(s.ExtraHosts),
		GroupAdd:       s.GroupAdd,
		IpcMode:        container.IpcMode(s.Ipc),
		PidMode:        container.PidMode(s.Pid),
		UTSMode:        container.UTSMode(s.Uts),
		OomScoreAdj:    int(s.OomScoreAdj),
		Privileged:     s.Privileged,
		ReadonlyRootfs: s.ReadOnly,
		SecurityOpt:    s.SecurityOpt,
		ShmSize:        int64(s.ShmSize),
		Sysctls:        s.Sysctls,
		Init:           s.Init,
		LogConfig:      logConfig(s),
		Resources:      resources(s),
	}
	return host, nil
}

// tmpfs maps the service's tmpfs entries (target[:options]); none is nil.
func tmpfs(entries []string) map[string]string {
	if len(entries) == 0 {
		return nil
	}
	out := map[string]string{}
	for _, t := range entries {
		target, opts, _ := strings.Cut(t, ":")
		out[target] = opts
	}
	return out
}

// logConfig maps logging (or the older log_driver and log_opt).
func logConfig(s types.ServiceConfig) container.LogConfig {
	switch {
	case s.Logging != nil:
		return container.LogConfig{Type: s.Logging.Driver, Config: s.Logging.Options}
	case s.LogDriver != "" || len(s.LogOpt) > 0:
		return container.LogConfig{Type: s.LogDriver, Config: s.LogOpt}
	}
	return container.LogConfig{}
}

// networking sets the network mode and the networks the container joins: the
// primary one at create; the others at create too from API 1.44, else connected after
// create and before start (spec.connect).
func networking(spec *createSpec, in createInput) error {
	p, s := in.project, in.service
	mode := s.NetworkMode
	if in.networkMode != "" {
		mode = in.networkMode
	}
	if mode != "" {
		spec.host.NetworkMode = container.NetworkMode(mode)
		return nil
	}
	keys := serviceNetworks(s)
	eps := make([]endpoint, 0, len(keys))
	for _, key := range keys {
		settings, err := endpointSettings(s, spec.name, s.Networks[key])
		if err != nil {
			return fmt.Errorf("service %s: network %s: %w", s.Name, key, err)
		}
		eps = append(eps, endpoint{network: networkName(p, key), settings: settings})
	}
	spec.host.NetworkMode = container.NetworkMode(eps[0].network)
	spec.network = &network.NetworkingConfig{EndpointsConfig: map[string]*network.EndpointSettings{
		eps[0].network: eps[0].settings,
	}}
	if versions.GreaterThanOrEqualTo(in.apiVersion, "1.44") {
		for _, ep := range eps[1:] {
			spec.network.EndpointsConfig[ep.network] = ep.settings
		}
	} else {
		spec.connect = eps[1:]
	}
	return nil
}

// environment renders the resolved environment as KEY=value, sorted; a key without a
// value is passed bare, which the engine leaves unset. proxy's keys come first, the
// service's own values over them, as docker compose does.
func environment(env types.MappingWithEquals, proxy map[string]string) []string {
	out := make([]string, 0, len(env)+len(proxy))
	for k, v := range proxy {
		if _, ok := env[k]; !ok {
			out = append(out, k+"="+v)
		}
	}
	for k, v := range env {
		if v == nil {
			out = append(out, k)
			continue
		}
		out = append(out, k+"="+*v)
	}
	sort.Strings(out)
	return out
}

// parsePlatform parses os[/arch[/variant]].
func parsePlatform(s string) (*ocispec.Platform, error) {
	parts := strings.Split(s, "/")
	if len(parts) > 3 || parts[0] == "" {
		return nil, fmt.Errorf("platform %q is not os[/arch[/variant]]", s)
	}
	pl := &ocispec.Platform{OS: parts[0]}
	if len(parts) > 1 {
		pl.Architecture = parts[1]
	}
	if len(parts) > 2 {
		pl.Variant = parts[2]
	}
	return pl, nil
}
