package engine

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	"github.com/compose-spec/compose-go/v2/types"
)

// ComposeVersion is the docker compose release whose config hash ConfigHash matches and
// whose labels (com.docker.compose.version among them) Up writes:
// the one the compatibility tests build and compare ship's engine against.
const ComposeVersion = "2.40.3"

// ConfigHash is docker compose's config hash of a service (its ServiceHash at
// ComposeVersion), in hex: the sha256 of the service's JSON without the fields that do
// not change the container (build, pull_policy, scale and deploy.replicas, depends_on,
// profiles; x- extensions are never part of it) and without env_file, whose values
// `docker compose up` has already read into the environment. Up stores it in the
// com.docker.compose.config-hash label and recreates a container whose label differs,
// so docker compose and ship each leave the other's unchanged containers alone.
//
// The JSON is the one compose-go v2.9.1 (the version docker compose ComposeVersion
// builds with) writes: its keys in that version's order, where later compose-go versions
// moved fields into embedded structs and so write them in another order, and a bind
// mount's create_host_path written when true, where later versions write it when false.
// One case cannot be told apart from the loaded project: a long-syntax bind with a
// `bind:` section that does not set create_host_path is false for compose-go v2.9.1
// and true for ship's; ConfigHash hashes it as true (as the short syntax is).
func ConfigHash(s types.ServiceConfig) (string, error) {
	data, err := hashJSON(s)
	if err != nil {
		return "", fmt.Errorf("hash service %s: %w", s.Name, err)
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:]), nil
}

// hashJSON is the service's JSON as docker compose ComposeVersion hashes it.
func hashJSON(s types.ServiceConfig) ([]byte, error) {
	s.Build = nil
	s.PullPolicy = ""
	s.PullRefreshAfter = ""
	s.Scale = nil
	if s.Deploy != nil {
		d := *s.Deploy // a copy: the caller's project must not change
		d.Replicas = nil
		s.Deploy = &d
	}
	s.DependsOn = nil
	s.Profiles = nil
	s.EnvFiles = nil
	raw, err := json.Marshal(s)
	if err != nil {
		return nil, err
	}
	fields := map[string]json.RawMessage{}
	if err := json.Unmarshal(raw, &fields); err != nil {
		return nil, err
	}
	if len(s.Volumes) > 0 {
		vs := make([]hashVolume, len(s.Volumes))
		for i, v := range s.Volumes {
			vs[i] = newHashVolume(v)
		}
		if fields["volumes"], err = json.Marshal(vs); err != nil {
			return nil, err
		}
	}
	var b bytes.Buffer
	b.WriteByte('{')
	write := func(key string) {
		if b.Len() > 1 {
			b.WriteByte(',')
		}
		k, _ := json.Marshal(key)
		b.Write(k)
		b.WriteByte(':')
		b.Write(fields[key])
		delete(fields, key)
	}
	for _, key := range serviceKeys {
		if _, ok := fields[key]; ok {
			write(key)
		}
	}
	// Keys compose-go v2.9.1 does not know (docker compose ComposeVersion refuses them)
	// still change the hash when set, after the others.
	rest := make([]string, 0, len(fields))
	for key := range fields {
		rest = append(rest, key)
	}
	sort.Strings(rest)
	for _, key := range rest {
		write(key)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// serviceKeys are the JSON keys of compose-go v2.9.1's ServiceConfig in the order of its
// fields, the order encoding/json writes them in and docker compose ComposeVersion hashes.
var serviceKeys = []string{
	"profiles", "annotations", "attach", "build", "develop", "blkio_config", "cap_add",
	"cap_drop", "cgroup_parent", "cgroup", "cpu_count", "cpu_percent", "cpu_period",
	"cpu_quota", "cpu_rt_period", "cpu_rt_runtime", "cpus", "cpuset", "cpu_shares",
	"command", "configs", "container_name", "credential_spec", "depends_on", "deploy",
	"device_cgroup_rules", "devices", "dns", "dns_opt", "dns_search", "dockerfile",
	"domainname", "entrypoint", "provider", "environment", "env_file", "expose", "extends",
	"external_links", "extra_hosts", "group_add", "gpus", "hostname", "healthcheck", "image",
	"init", "ipc", "isolation", "labels", "label_file", "links", "logging", "log_driver",
	"log_opt", "mem_limit", "mem_reservation", "memswap_limit", "mem_swappiness",
	"mac_address", "models", "net", "network_mode", "networks", "oom_kill_disable",
	"oom_score_adj", "pid", "pids_limit", "platform", "ports", "privileged", "pull_policy",
	"read_only", "restart", "runtime", "scale", "secrets", "security_opt", "shm_size",
	"stdin_open", "stop_grace_period", "stop_signal", "storage_opt", "sysctls", "tmpfs",
	"tty", "ulimits", "use_api_socket", "user", "userns_mode", "uts", "volume_driver",
	"volumes", "volumes_from", "working_dir", "post_start", "pre_stop",
}

// hashVolume is a service's mount as compose-go v2.9.1 writes it.
type hashVolume struct {
	Type        string                     `json:"type,omitempty"`
	Source      string                     `json:"source,omitempty"`
	Target      string                     `json:"target,omitempty"`
	ReadOnly    bool                       `json:"read_only,omitempty"`
	Consistency string                     `json:"consistency,omitempty"`
	Bind        *hashBind                  `json:"bind,omitempty"`
	Volume      *types.ServiceVolumeVolume `json:"volume,omitempty"`
	Tmpfs       *types.ServiceVolumeTmpfs  `json:"tmpfs,omitempty"`
	Image       *types.ServiceVolumeImage  `json:"image,omitempty"`
}

// hashBind is a bind mount's options as compose-go v2.9.1 writes them: create_host_path
// only when true.
type hashBind struct {
	SELinux        string `json:"selinux,omitempty"`
	Propagation    string `json:"propagation,omitempty"`
	CreateHostPath bool   `json:"create_host_path,omitempty"`
	Recursive      string `json:"recursive,omitempty"`
}

func newHashVolume(v types.ServiceVolumeConfig) hashVolume {
	h := hashVolume{
		Type: v.Type, Source: v.Source, Target: v.Target, ReadOnly: v.ReadOnly,
		Consistency: v.Consistency, Volume: v.Volume, Tmpfs: v.Tmpfs, Image: v.Image,
	}
	if v.Bind != nil {
		h.Bind = &hashBind{
			SELinux: v.Bind.SELinux, Propagation: v.Bind.Propagation,
			CreateHostPath: bool(v.Bind.CreateHostPath), Recursive: v.Bind.Recursive,
		}
	}
	return h
}

// NetworkHash is docker compose's config hash of a project network (its NetworkHash at
// ComposeVersion): the sha256, in hex, of the network's JSON, name included. docker
// compose stores it in the network's com.docker.compose.config-hash label and recreates
// a network whose label differs (after stopping the containers on it).
func NetworkHash(n types.NetworkConfig) (string, error) {
	data, err := json.Marshal(n)
	if err != nil {
		return "", fmt.Errorf("hash network %s: %w", n.Name, err)
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:]), nil
}

// VolumeHash is docker compose's config hash of a project volume (its VolumeHash at
// ComposeVersion): the sha256, in hex, of the volume's JSON with its driver "local"
// when unset. docker compose stores it in the volume's com.docker.compose.config-hash
// label and, when it differs, asks before recreating the volume.
func VolumeHash(v types.VolumeConfig) (string, error) {
	if v.Driver == "" {
		v.Driver = "local"
	}
	data, err := json.Marshal(v)
	if err != nil {
		return "", fmt.Errorf("hash volume %s: %w", v.Name, err)
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:]), nil
}

// WithContainerRefs returns s with its network_mode, ipc and pid "service:NAME" replaced
// by "container:ID", ID being containerID(NAME), the ID of NAME's container, as docker
// compose ComposeVersion resolves them before it hashes and creates a container: the
// config hash of such a service then changes when the container it shares a namespace
// with is replaced, and it is recreated with it. s is not changed.
func WithContainerRefs(s types.ServiceConfig, containerID func(service string) string) types.ServiceConfig {
	resolve := func(mode string) string {
		if name, ok := strings.CutPrefix(mode, types.ServicePrefix); ok {
			return types.ContainerPrefix + containerID(name)
		}
		return mode
	}
	s.NetworkMode = resolve(s.NetworkMode)
	s.Ipc = resolve(s.Ipc)
	s.Pid = resolve(s.Pid)
	return s
}
