package engine

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/compose-spec/compose-go/v2/types"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client/pkg/versions"
)

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
