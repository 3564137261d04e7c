package engine

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/compose-spec/compose-go/v2/types"
	"github.com/moby/moby/client/pkg/versions"
)

// ErrUnsupported marks a compose project the engine cannot run as written.
var ErrUnsupported = errors.New("unsupported compose configuration")

// check refuses, by name and all at once, what the engine does not support in the
// services it is about to start. Nothing has been touched when it fails.
func check(p *types.Project, services []string, apiVersion string) error {
	var problems []string
	add := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }

	if p.Name == "" {
		add("the project has no name")
	}
	if len(p.Jobs) > 0 {
		add("top-level jobs are not supported")
	}
	for _, name := range services {
		checkService(p, name, apiVersion, add)
	}
	for _, name := range p.NetworkNames() {
		n := p.Networks[name]
		if n.EnableIPv4 != nil {
			add("network %q: enable_ipv4 is not supported", name)
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("%w:\n  %s", ErrUnsupported, strings.Join(problems, "\n  "))
	}
	return nil
}

// checkService adds what the engine cannot run of one service.
func checkService(p *types.Project, name, apiVersion string, add func(format string, args ...any)) {
	s := p.Services[name]
	for _, key := range unsupportedKeys(s) {
		add("service %q: %s is not supported", name, key)
	}
	if s.GetScale() > 1 {
		add("service %q: scale %d is not supported (one container per service)", name, s.GetScale())
	}
	if _, err := pullPolicy(s); err != nil {
		add("service %q: %v", name, err)
	}
	if s.Image == "" && s.Build == nil {
		add("service %q: has neither image nor build", name)
	}
	if s.Restart != "" {
		if _, err := restartPolicy(s.Restart); err != nil {
			add("service %q: %v", name, err)
		}
	}
	for _, opt := range s.SecurityOpt {
		if strings.HasPrefix(opt, "seccomp=") || strings.HasPrefix(opt, "seccomp:") {
			if v := opt[len("seccomp="):]; v != "unconfined" && v != "builtin" {
				add("service %q: security_opt %s (a seccomp profile file) is not supported", name, opt)
			}
		}
	}
	for _, ns := range []struct{ key, value string }{{"ipc", s.Ipc}, {"pid", s.Pid}, {"uts", s.Uts}} {
		if strings.HasPrefix(ns.value, types.ServicePrefix) {
			add("service %q: %s %q is not supported", name, ns.key, ns.value)
		}
	}
	if strings.HasPrefix(s.NetworkMode, types.ServicePrefix) {
		dep := strings.TrimPrefix(s.NetworkMode, types.ServicePrefix)
		if _, ok := p.Services[dep]; !ok {
			add("service %q: network_mode refers to unknown service %q", name, dep)
		}
	}
	if h := s.HealthCheck; h != nil && h.StartInterval != nil && versions.LessThan(apiVersion, "1.44") {
		add("service %q: healthcheck.start_interval needs Docker API 1.44 (Docker 25), the engine has API %s; upgrade the engine or remove start_interval", name, apiVersion)
	}
	checkVolumes(p, s, apiVersion, add)
	checkNetworks(p, s, add)
}

// checkVolumes adds what the engine cannot mount of a service's volumes.
func checkVolumes(p *types.Project, s types.ServiceConfig, apiVersion string, add func(format string, args ...any)) {
	name := s.Name
	for _, v := range s.Volumes {
		switch v.Type {
		case types.VolumeTypeBind:
			if v.Bind != nil && v.Bind.Recursive != "" {
				add("service %q: volume %s: bind.recursive is not supported", name, v.Target)
			}
		case types.VolumeTypeVolume:
			if v.Source != "" {
				if _, ok := p.Volumes[v.Source]; !ok {
					add("service %q: volume %q is not declared in the top-level volumes", name, v.Source)
				}
			}
			if v.Volume != nil && v.Volume.Subpath != "" && versions.LessThan(apiVersion, "1.45") {
				add("service %q: volume %s: subpath needs Docker API 1.45, the engine has %s", name, v.Target, apiVersion)
			}
		case types.VolumeTypeTmpfs:
		default:
			add("service %q: volume %s: type %q is not supported", name, v.Target, v.Type)
		}
	}
}

// checkNetworks adds what the engine cannot set up of a service's networks.
func checkNetworks(p *types.Project, s types.ServiceConfig, add func(format string, args ...any)) {
	name := s.Name
	for net, cfg := range s.Networks {
		if _, ok := p.Networks[net]; !ok && net != "default" {
			add("service %q: network %q is not declared in the top-level networks", name, net)
		}
		if cfg == nil {
			continue
		}
		if cfg.MacAddress != "" {
			add("service %q: networks.%s.mac_address is not supported", name, net)
		}
		if len(cfg.DriverOpts) > 0 {
			add("service %q: networks.%s.driver_opts is not supported", name, net)
		}
		if cfg.GatewayPriority != 0 {
			add("service %q: networks.%s.gw_priority is not supported", name, net)
		}
		if cfg.InterfaceName != "" {
			add("service %q: networks.%s.interface_name is not supported", name, net)
		}
	}
}

// unsupportedKeys names the compose keys set on s that the engine cannot honour.
func unsupportedKeys(s types.ServiceConfig) []string {
	var keys []string
	set := func(key string, isSet bool) {
		if isSet {
			keys = append(keys, key)
		}
	}
	set("secrets", len(s.Secrets) > 0)
	set("configs", len(s.Configs) > 0)
	set("devices", len(s.Devices) > 0)
	set("gpus", len(s.Gpus) > 0)
	set("models", len(s.Models) > 0)
	set("provider", s.Provider != nil)
	set("pre_start", len(s.PreStart) > 0)
	set("post_start", len(s.PostStart) > 0)
	set("pre_stop", len(s.PreStop) > 0)
	set("volumes_from", len(s.VolumesFrom) > 0)
	set("links", len(s.Links) > 0)
	set("external_links", len(s.ExternalLinks) > 0)
	set("cgroup", s.Cgroup != "")
	set("cgroup_parent", s.CgroupParent != "")
	set("userns_mode", s.UserNSMode != "")
	set("runtime", s.Runtime != "")
	set("isolation", s.Isolation != "")
	set("credential_spec", s.CredentialSpec != nil)
	set("blkio_config", s.BlkioConfig != nil)
	set("mac_address", s.MacAddress != "")
	set("storage_opt", len(s.StorageOpt) > 0)
	set("device_cgroup_rules", len(s.DeviceCgroupRules) > 0)
	set("annotations", len(s.Annotations) > 0)
	set("use_api_socket", s.UseAPISocket)
	set("cpu_count", s.CPUCount != 0)
	set("cpu_percent", s.CPUPercent != 0)
	set("cpu_rt_period", s.CPURTPeriod != 0)
	set("cpu_rt_runtime", s.CPURTRuntime != 0)
	set("mem_swappiness", s.MemSwappiness != 0)
	set("oom_kill_disable", s.OomKillDisable)
	set("volume_driver", s.VolumeDriver != "")
	set("umask", s.Umask != nil)
	set("net", s.Net != "")
	if d := s.Deploy; d != nil {
		set("deploy.mode "+d.Mode, d.Mode != "" && d.Mode != "replicated")
		if r := d.Resources.Reservations; r != nil {
			set("deploy.resources.reservations.devices", len(r.Devices) > 0)
			set("deploy.resources.reservations.generic_resources", len(r.GenericResources) > 0)
		}
		if l := d.Resources.Limits; l != nil {
			set("deploy.resources.limits.devices", len(l.Devices) > 0)
		}
	}
	return keys
}

// selectServices returns the names of the services to start, sorted: the wanted ones
// (all when none are named) and, transitively, what they depend on.
func selectServices(p *types.Project, wanted []string) ([]string, error) {
	if len(wanted) == 0 {
		return p.ServiceNames(), nil
	}
	seen := map[string]bool{}
	var visit func(name string, from string) error
	visit = func(name, from string) error {
		if seen[name] {
			return nil
		}
		if _, ok := p.Services[name]; !ok {
			if from == "" {
				return fmt.Errorf("no such service: %s", name)
			}
			return fmt.Errorf("service %q depends on unknown service %q", from, name)
		}
		seen[name] = true
		for _, dep := range dependencies(p, p.Services[name]) {
			if err := visit(dep, name); err != nil {
				return err
			}
		}
		return nil
	}
	for _, name := range wanted {
		if err := visit(name, ""); err != nil {
			return nil, err
		}
	}
	names := make([]string, 0, len(seen))
	for name := range seen {
		names = append(names, name)
	}
	sort.Strings(names)
	return names, nil
}

// dependencies lists, sorted, the services s must wait for: its depends_on entries,
// leaving out optional ones (required: false) that are not in the project.
func dependencies(p *types.Project, s types.ServiceConfig) []string {
	var deps []string
	for name, d := range s.DependsOn {
		if _, ok := p.Services[name]; !ok && !d.Required {
			continue
		}
		deps = append(deps, name)
	}
	sort.Strings(deps)
	return deps
}

// checkDependencies rejects depends_on entries on unknown services and cycles, naming
// the services in the cycle.
func checkDependencies(p *types.Project, services []string) error {
	const (
		unvisited = iota
		visiting
		done
	)
	state := map[string]int{}
	var path []string
	var visit func(name string) error
	visit = func(name string) error {
		switch state[name] {
		case done:
			return nil
		case visiting:
			i := slices.Index(path, name)
			return fmt.Errorf("dependency cycle: %s -> %s", strings.Join(path[i:], " -> "), name)
		}
		state[name] = visiting
		path = append(path, name)
		s := p.Services[name]
		for _, dep := range dependencies(p, s) {
			if _, ok := p.Services[dep]; !ok {
				return fmt.Errorf("service %q depends on unknown service %q", name, dep)
			}
			if err := visit(dep); err != nil {
				return err
			}
		}
		path = path[:len(path)-1]
		state[name] = done
		return nil
	}
	for _, name := range services {
		if err := visit(name); err != nil {
			return err
		}
	}
	return nil
}

// pullPolicy returns the service's pull policy: always, missing, never or build.
func pullPolicy(s types.ServiceConfig) (string, error) {
	switch s.PullPolicy {
	case "", types.PullPolicyMissing, types.PullPolicyIfNotPresent:
		return types.PullPolicyMissing, nil
	case types.PullPolicyAlways, types.PullPolicyNever, types.PullPolicyBuild:
		return s.PullPolicy, nil
	}
	return "", fmt.Errorf("pull_policy %q is not supported (always, missing, never or build)", s.PullPolicy)
}
