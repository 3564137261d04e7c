package engine

import (
	"fmt"
	"net/netip"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/compose-spec/compose-go/v2/types"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/mount"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/api/types/strslice"
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
}

// buildCreate turns a service into the Engine API's create request.
func buildCreate(in createInput) (createSpec, error) {
	p, s := in.project, in.service
	name := containerName(p.Name, s, in.number)

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
		labelVersion:     composeVersion,
		labelDependsOn:   strings.Join(deps, ","),
		labelImage:       in.imageID,
	} {
		labels[k] = v
	}

	cfg := &container.Config{
		Hostname:     s.Hostname,
		Domainname:   s.DomainName,
		User:         s.User,
		ExposedPorts: network.PortSet{},
		Tty:          s.Tty,
		OpenStdin:    s.StdinOpen,
		AttachStdout: true,
		AttachStderr: true,
		Env:          environment(s.Environment),
		Image:        imageRef(p.Name, s),
		WorkingDir:   s.WorkingDir,
		Labels:       labels,
		StopSignal:   s.StopSignal,
		Healthcheck:  healthConfig(s.HealthCheck, in.apiVersion),
	}
	if s.Command != nil {
		cfg.Cmd = strslice.StrSlice(s.Command)
	}
	if s.Entrypoint != nil {
		cfg.Entrypoint = strslice.StrSlice(s.Entrypoint)
	}
	if s.StopGracePeriod != nil {
		secs := int(time.Duration(*s.StopGracePeriod).Round(time.Second) / time.Second)
		cfg.StopTimeout = &secs
	}

	bindings := network.PortMap{}
	for _, e := range s.Expose {
		ports, err := exposedPorts(e)
		if err != nil {
			return createSpec{}, fmt.Errorf("service %s: expose %q: %w", s.Name, e, err)
		}
		for _, port := range ports {
			cfg.ExposedPorts[port] = struct{}{}
		}
	}
	for _, pc := range s.Ports {
		proto := pc.Protocol
		if proto == "" {
			proto = "tcp"
		}
		port, ok := network.PortFrom(uint16(pc.Target), network.IPProtocol(proto))
		if !ok || pc.Target > 65535 {
			return createSpec{}, fmt.Errorf("service %s: port %d/%s is not a port", s.Name, pc.Target, proto)
		}
		hostIP, err := parseAddr(pc.HostIP)
		if err != nil {
			return createSpec{}, fmt.Errorf("service %s: port %d: host_ip: %w", s.Name, pc.Target, err)
		}
		cfg.ExposedPorts[port] = struct{}{}
		bindings[port] = append(bindings[port], network.PortBinding{HostIP: hostIP, HostPort: pc.Published})
	}

	restart := container.RestartPolicy{Name: container.RestartPolicyDisabled}
	if s.Restart != "" {
		r, err := restartPolicy(s.Restart)
		if err != nil {
			return createSpec{}, fmt.Errorf("service %s: %w", s.Name, err)
		}
		restart = r
	}
	if s.Deploy != nil && s.Deploy.RestartPolicy != nil {
		restart = deployRestartPolicy(*s.Deploy.RestartPolicy)
	}

	dns, err := parseAddrs(s.DNS)
	if err != nil {
		return createSpec{}, fmt.Errorf("service %s: dns: %w", s.Name, err)
	}
	binds, mounts := volumeMounts(p, s, in.inherit)
	tmpfs := map[string]string{}
	for _, t := range s.Tmpfs {
		target, opts, _ := strings.Cut(t, ":")
		tmpfs[target] = opts
	}

	var logConfig container.LogConfig
	switch {
	case s.Logging != nil:
		logConfig = container.LogConfig{Type: s.Logging.Driver, Config: s.Logging.Options}
	case s.LogDriver != "" || len(s.LogOpt) > 0:
		logConfig = container.LogConfig{Type: s.LogDriver, Config: s.LogOpt}
	}

	host := &container.HostConfig{
		Binds:          binds,
		Mounts:         mounts,
		Tmpfs:          tmpfs,
		PortBindings:   bindings,
		RestartPolicy:  restart,
		CapAdd:         strslice.StrSlice(s.CapAdd),
		CapDrop:        strslice.StrSlice(s.CapDrop),
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
		LogConfig:      logConfig,
		Resources:      resources(s),
	}
	if len(host.Tmpfs) == 0 {
		host.Tmpfs = nil
	}

	spec := createSpec{name: name, config: cfg, host: host}
	if s.Platform != "" {
		pl, err := parsePlatform(s.Platform)
		if err != nil {
			return createSpec{}, fmt.Errorf("service %s: %w", s.Name, err)
		}
		spec.platform = pl
	}

	mode := s.NetworkMode
	if in.networkMode != "" {
		mode = in.networkMode
	}
	if mode != "" {
		host.NetworkMode = container.NetworkMode(mode)
		return spec, nil
	}
	keys := serviceNetworks(s)
	eps := make([]endpoint, 0, len(keys))
	for _, key := range keys {
		settings, err := endpointSettings(s, name, s.Networks[key])
		if err != nil {
			return createSpec{}, fmt.Errorf("service %s: network %s: %w", s.Name, key, err)
		}
		eps = append(eps, endpoint{network: networkName(p, key), settings: settings})
	}
	host.NetworkMode = container.NetworkMode(eps[0].network)
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
	return spec, nil
}

// endpointSettings attaches the container to one network under the names docker
// compose registers: the container's name, the service's name and its aliases.
func endpointSettings(s types.ServiceConfig, name string, cfg *types.ServiceNetworkConfig) (*network.EndpointSettings, error) {
	aliases := []string{name}
	if cfg.ServiceNameAliasEnabled() {
		aliases = append(aliases, s.Name)
	}
	ep := &network.EndpointSettings{}
	if cfg != nil {
		aliases = append(aliases, cfg.Aliases...)
		if cfg.Ipv4Address != "" || cfg.Ipv6Address != "" || len(cfg.LinkLocalIPs) > 0 {
			ipam, err := endpointIPAM(cfg)
			if err != nil {
				return nil, err
			}
			ep.IPAMConfig = ipam
		}
	}
	ep.Aliases = aliases
	return ep, nil
}

// endpointIPAM maps a network's fixed addresses: ipv4_address, ipv6_address and
// link_local_ips.
func endpointIPAM(cfg *types.ServiceNetworkConfig) (*network.EndpointIPAMConfig, error) {
	v4, err := parseAddr(cfg.Ipv4Address)
	if err != nil {
		return nil, fmt.Errorf("ipv4_address: %w", err)
	}
	v6, err := parseAddr(cfg.Ipv6Address)
	if err != nil {
		return nil, fmt.Errorf("ipv6_address: %w", err)
	}
	local, err := parseAddrs(cfg.LinkLocalIPs)
	if err != nil {
		return nil, fmt.Errorf("link_local_ips: %w", err)
	}
	return &network.EndpointIPAMConfig{IPv4Address: v4, IPv6Address: v6, LinkLocalIPs: local}, nil
}

// parseAddr parses an IP address; "" is the zero address, which the API leaves out.
func parseAddr(s string) (netip.Addr, error) {
	if s == "" {
		return netip.Addr{}, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("%q is not an IP address", s)
	}
	return a, nil
}

// addrString is an address as the engine's API wrote it before it was typed: ""
// when there is none.
func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

// parseAddrs parses a list of IP addresses; an empty list stays nil.
func parseAddrs(in []string) ([]netip.Addr, error) {
	var out []netip.Addr
	for _, s := range in {
		a, err := parseAddr(s)
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, nil
}

// environment renders the resolved environment as KEY=value, sorted; a key without a
// value is passed bare, which the engine leaves unset.
func environment(env types.MappingWithEquals) []string {
	out := make([]string, 0, len(env))
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

func extraHosts(h types.HostsList) []string {
	if len(h) == 0 {
		return nil
	}
	l := h.AsList(":")
	sort.Strings(l)
	return l
}

// exposedPorts expands an expose entry: 3000, 3000/udp or a range 3000-3005/tcp.
func exposedPorts(e string) ([]network.Port, error) {
	rng, err := network.ParsePortRange(e)
	if err != nil {
		return nil, err
	}
	return slices.Collect(rng.All()), nil
}

// healthConfig maps a compose healthcheck; nil keeps the image's HEALTHCHECK. Fields
// left out inherit from the image (the engine merges them).
func healthConfig(h *types.HealthCheckConfig, apiVersion string) *container.HealthConfig {
	if h == nil {
		return nil
	}
	if h.Disable {
		return &container.HealthConfig{Test: []string{"NONE"}}
	}
	hc := &container.HealthConfig{Test: h.Test}
	if h.Interval != nil {
		hc.Interval = time.Duration(*h.Interval)
	}
	if h.Timeout != nil {
		hc.Timeout = time.Duration(*h.Timeout)
	}
	if h.StartPeriod != nil {
		hc.StartPeriod = time.Duration(*h.StartPeriod)
	}
	// start_interval came with API 1.44; older engines probe at interval throughout.
	if h.StartInterval != nil && versions.GreaterThanOrEqualTo(apiVersion, "1.44") {
		hc.StartInterval = time.Duration(*h.StartInterval)
	}
	if h.Retries != nil {
		hc.Retries = int(*h.Retries)
	}
	return hc
}

// restartPolicy parses restart: "no", always, unless-stopped or on-failure[:N].
func restartPolicy(r string) (container.RestartPolicy, error) {
	name, count, hasCount := strings.Cut(r, ":")
	switch name {
	case "no":
		if !hasCount {
			return container.RestartPolicy{Name: container.RestartPolicyDisabled}, nil
		}
	case "always", "unless-stopped":
		if !hasCount {
			return container.RestartPolicy{Name: container.RestartPolicyMode(name)}, nil
		}
	case "on-failure":
		p := container.RestartPolicy{Name: container.RestartPolicyOnFailure}
		if !hasCount {
			return p, nil
		}
		n, err := strconv.Atoi(count)
		if err == nil && n >= 0 {
			p.MaximumRetryCount = n
			return p, nil
		}
	}
	return container.RestartPolicy{}, fmt.Errorf("restart %q is not a restart policy (\"no\", always, unless-stopped, on-failure[:N])", r)
}

func deployRestartPolicy(rp types.RestartPolicy) container.RestartPolicy {
	p := container.RestartPolicy{}
	switch rp.Condition {
	case "none", "no":
		p.Name = container.RestartPolicyDisabled
	case "on-failure":
		p.Name = container.RestartPolicyOnFailure
	default: // "any", "" and anything else: compose and swarm restart on any exit
		p.Name = container.RestartPolicyAlways
	}
	if rp.MaxAttempts != nil && p.Name == container.RestartPolicyOnFailure {
		p.MaximumRetryCount = int(*rp.MaxAttempts)
	}
	return p
}

// resources maps the service's limits; deploy.resources wins where both are set, as
// in docker compose.
func resources(s types.ServiceConfig) container.Resources {
	r := container.Resources{
		CPUShares:         s.CPUShares,
		CPUPeriod:         s.CPUPeriod,
		CPUQuota:          s.CPUQuota,
		CpusetCpus:        s.CPUSet,
		Memory:            int64(s.MemLimit),
		MemoryReservation: int64(s.MemReservation),
		MemorySwap:        int64(s.MemSwapLimit),
		NanoCPUs:          nanoCPUs(s.CPUS),
		Ulimits:           ulimits(s.Ulimits),
	}
	if s.PidsLimit != 0 {
		n := s.PidsLimit
		r.PidsLimit = &n
	}
	if s.Deploy != nil {
		if l := s.Deploy.Resources.Limits; l != nil {
			if l.MemoryBytes != 0 {
				r.Memory = int64(l.MemoryBytes)
			}
			if l.NanoCPUs != 0 {
				r.NanoCPUs = nanoCPUs(float32(l.NanoCPUs))
			}
			if l.Pids > 0 {
				n := l.Pids
				r.PidsLimit = &n
			}
		}
		if rs := s.Deploy.Resources.Reservations; rs != nil && rs.MemoryBytes != 0 {
			r.MemoryReservation = int64(rs.MemoryBytes)
		}
	}
	return r
}

// nanoCPUs converts cpus (e.g. 0.1) through its shortest decimal form, so float32
// rounding does not show up in the engine's value.
func nanoCPUs(cpus float32) int64 {
	if cpus == 0 {
		return 0
	}
	f, _ := strconv.ParseFloat(strconv.FormatFloat(float64(cpus), 'f', -1, 32), 64)
	return int64(f*1e9 + 0.5)
}

func ulimits(m map[string]*types.UlimitsConfig) []*container.Ulimit {
	names := make([]string, 0, len(m))
	for name := range m {
		names = append(names, name)
	}
	sort.Strings(names)
	var out []*container.Ulimit
	for _, name := range names {
		u := m[name]
		if u == nil {
			continue
		}
		soft, hard := u.Soft, u.Hard
		if u.Single != 0 {
			soft, hard = u.Single, u.Single
		}
		out = append(out, &container.Ulimit{Name: name, Soft: int64(soft), Hard: int64(hard)})
	}
	return out
}

// volumeMounts maps the service's volumes. Binds that may create their host path use
// the legacy Binds list, which does; binds with create_host_path: false use a bind
// mount, which fails when the path is missing, as docker compose does. Anonymous
// volumes of a replaced container are mounted again at the same place (inherit).
func volumeMounts(p *types.Project, s types.ServiceConfig, inherit map[string]string) ([]string, []mount.Mount) {
	var binds []string
	var mounts []mount.Mount
	used := map[string]bool{}
	for _, v := range s.Volumes {
		used[v.Target] = true
		switch v.Type {
		case types.VolumeTypeBind:
			if v.Bind != nil && !bool(v.Bind.CreateHostPath) {
				m := mount.Mount{Type: mount.TypeBind, Source: v.Source, Target: v.Target, ReadOnly: v.ReadOnly}
				if v.Bind.Propagation != "" {
					m.BindOptions = &mount.BindOptions{Propagation: mount.Propagation(v.Bind.Propagation)}
				}
				mounts = append(mounts, m)
				continue
			}
			binds = append(binds, v.String())
		case types.VolumeTypeVolume:
			m := mount.Mount{Type: mount.TypeVolume, Target: v.Target, ReadOnly: v.ReadOnly}
			if v.Source != "" {
				m.Source = volumeName(p, v.Source)
			} else if name, ok := inherit[v.Target]; ok {
				m.Source = name
			}
			if v.Volume != nil && (v.Volume.NoCopy || v.Volume.Subpath != "") {
				m.VolumeOptions = &mount.VolumeOptions{NoCopy: v.Volume.NoCopy, Subpath: v.Volume.Subpath}
			}
			mounts = append(mounts, m)
		case types.VolumeTypeTmpfs:
			m := mount.Mount{Type: mount.TypeTmpfs, Target: v.Target, ReadOnly: v.ReadOnly}
			if v.Tmpfs != nil && (v.Tmpfs.Size != 0 || v.Tmpfs.Mode != 0) {
				m.TmpfsOptions = &mount.TmpfsOptions{SizeBytes: int64(v.Tmpfs.Size), Mode: os.FileMode(v.Tmpfs.Mode)}
			}
			mounts = append(mounts, m)
		}
	}
	// Volumes declared by the image (VOLUME) that the service does not mount.
	targets := make([]string, 0, len(inherit))
	for target := range inherit {
		targets = append(targets, target)
	}
	sort.Strings(targets)
	for _, target := range targets {
		if used[target] {
			continue
		}
		mounts = append(mounts, mount.Mount{Type: mount.TypeVolume, Source: inherit[target], Target: target})
	}
	return binds, mounts
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
