package compose

import (
	"fmt"
	"os"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"
)

// The compose keys the engine implements. Everything else is refused by name, with the
// service and the key, before anything runs: nothing is silently ignored.
var (
	topLevelKeys = set("name", "version", "services", "networks", "volumes", "include")
	serviceKeys  = set(
		"image", "build", "command", "entrypoint", "environment", "env_file", "ports", "expose",
		"volumes", "tmpfs", "restart", "healthcheck", "labels", "user", "working_dir",
		"extra_hosts", "networks", "depends_on", "stop_grace_period", "stop_signal", "hostname",
		"domainname", "container_name", "init", "read_only", "tty", "stdin_open", "privileged",
		"cap_add", "cap_drop", "dns", "dns_search", "sysctls", "shm_size", "mem_limit", "cpus",
		"ulimits", "logging", "network_mode", "pull_policy", "profiles", "extends",
		"platform", "mem_reservation", "memswap_limit", "cpu_shares", "cpuset", "cpu_period",
		"cpu_quota", "pids_limit", "oom_score_adj", "group_add", "security_opt", "ipc", "pid",
		"uts", "dns_opt", "log_driver", "log_opt", "deploy",
	)
	// Keys inside a service's nested mappings; a nil set means any key (a free-form map).
	nestedKeys = map[string]map[string]bool{
		"build": set("context", "dockerfile", "args", "target", "labels", "cache_from", "no_cache", "pull", "shm_size", "extra_hosts", "network"),
		// start_interval: the engine refuses it where its API is older than 1.44.
		"healthcheck": set("test", "interval", "timeout", "retries", "start_period", "start_interval", "disable"),
		"logging":     set("driver", "options"),
		// The engine checks the values: one replica, no devices, replicated mode. The
		// keys of Swarm (SwarmKeys) docker compose ignores, and so does ship.
		"deploy": set("replicas", "resources", "restart_policy", "mode", "update_config", "rollback_config", "placement", "labels", "endpoint_mode"),
	}
	// Keys inside each entry of a service's lists or maps of entries.
	entryKeys = map[string]map[string]bool{
		"depends_on": set("condition", "required"),
		"ports":      set("target", "published", "host_ip", "protocol", "mode", "name", "app_protocol"),
		"volumes":    set("type", "source", "target", "read_only", "bind", "volume", "tmpfs", "consistency"),
		"networks":   set("aliases", "ipv4_address", "ipv6_address", "link_local_ips", "priority"),
	}
	volumeTypes   = set("bind", "volume", "tmpfs")
	networkKeys   = set("name", "driver", "driver_opts", "external", "labels", "internal", "attachable", "ipam", "enable_ipv6")
	volumeKeys    = set("name", "driver", "driver_opts", "external", "labels")
	refusalAdvice = map[string]string{
		"deploy":   "ship runs one container per service; remove deploy: (resources: use mem_limit and cpus)",
		"scale":    "ship runs one container per service; remove scale:",
		"secrets":  "pass secrets through the environment's env_file instead",
		"configs":  "mount the file with a bind volume instead",
		"links":    "services reach each other by name on the project network; remove links:",
		"develop":  "develop: is for `docker compose watch`; keep it in a separate override file",
		"platform": "build for the hosts' platform instead",
		"devices":  "ship does not map devices yet",
	}
)

func set(keys ...string) map[string]bool {
	m := make(map[string]bool, len(keys))
	for _, k := range keys {
		m[k] = true
	}
	return m
}

func isExtension(key string) bool { return strings.HasPrefix(key, "x-") }

// checkModel walks compose-go's merged model of the files and lists every key that ship
// does not implement, for the services that are active.
func checkModel(model map[string]any, active []string, loc *locator) []Problem {
	c := &checker{loc: loc}
	for _, k := range sortedKeys(model) {
		if !topLevelKeys[k] && !isExtension(k) {
			c.refuse([]string{k}, fmt.Sprintf("top-level key %q", k), advice(k))
		}
	}
	services, _ := model["services"].(map[string]any)
	for _, name := range active {
		svc, _ := services[name].(map[string]any)
		c.service(name, svc)
	}
	c.definitions(model)
	return c.problems
}

// checker collects the problems of one model, each placed at its file and line.
type checker struct {
	loc      *locator
	problems []Problem
}

func (c *checker) refuse(path []string, what, advice string) {
	msg := fmt.Sprintf("%s is not supported by ship", what)
	if advice != "" {
		msg += "; " + advice
	}
	p := c.loc.at(path)
	p.Msg = msg
	c.problems = append(c.problems, p)
}

// service checks the keys of one active service, and those nested in them.
func (c *checker) service(name string, svc map[string]any) {
	for _, k := range sortedKeys(svc) {
		path := []string{"services", name, k}
		if isExtension(k) {
			continue
		}
		if !serviceKeys[k] {
			c.refuse(path, fmt.Sprintf("service %q: key %q", name, k), advice(k))
			continue
		}
		if k == "deploy" {
			if m, ok := svc[k].(map[string]any); ok {
				if n, err := toInt(m["replicas"]); err == nil && n > 1 {
					c.refuse(append(path, "replicas"), fmt.Sprintf("service %q: deploy.replicas %d", name, n), "ship runs one container per service; remove replicas or set it to 1")
				}
			}
		}
		if allowed, ok := nestedKeys[k]; ok {
			if m, ok := svc[k].(map[string]any); ok {
				for _, sub := range sortedKeys(m) {
					if !allowed[sub] && !isExtension(sub) {
						c.refuse(append(path, sub), fmt.Sprintf("service %q: key %q", name, k+"."+sub), advice(sub))
					}
				}
			}
		}
		if allowed, ok := entryKeys[k]; ok {
			for _, e := range entries(svc[k]) {
				c.checkEntry(path, name, k, e, allowed)
			}
		}
	}
}

// checkEntry checks one entry of a service's list or map of entries (depends_on, ports,
// volumes, networks) at path, services.NAME.KEY.
func (c *checker) checkEntry(path []string, name, k string, e entry, allowed map[string]bool) {
	for _, sub := range sortedKeys(e.m) {
		if allowed[sub] || isExtension(sub) {
			continue
		}
		if k == "depends_on" && sub == "restart" {
			// The engine stops the dependent before it recreates the dependency and
			// starts it again after, as docker compose does.
			continue
		}
		c.refuse(append(path, e.key, sub), fmt.Sprintf("service %q: key %q in %s", name, sub, k), advice(sub))
	}
	if k != "volumes" {
		return
	}
	if t, _ := e.m["type"].(string); t != "" && !volumeTypes[t] {
		c.refuse(append(path, e.key), fmt.Sprintf("service %q: volume type %q", name, t), "use bind, volume or tmpfs")
	}
	for _, opt := range []string{"bind", "volume", "tmpfs"} {
		if m, ok := e.m[opt].(map[string]any); ok {
			for _, sub := range sortedKeys(m) {
				if !volumeOptionKeys[opt][sub] {
					c.refuse(append(path, e.key, opt, sub), fmt.Sprintf("service %q: volumes %s.%s", name, opt, sub), "")
				}
			}
		}
	}
}

// definitions checks the keys of the top-level networks and volumes.
func (c *checker) definitions(model map[string]any) {
	for _, kind := range []struct {
		key     string
		allowed map[string]bool
	}{{"networks", networkKeys}, {"volumes", volumeKeys}} {
		defs, _ := model[kind.key].(map[string]any)
		for _, name := range sortedKeys(defs) {
			def, _ := defs[name].(map[string]any)
			for _, k := range sortedKeys(def) {
				if !kind.allowed[k] && !isExtension(k) {
					c.refuse([]string{kind.key, name, k}, fmt.Sprintf("%s %q: key %q", strings.TrimSuffix(kind.key, "s"), name, k), advice(k))
				}
			}
		}
	}
}

var volumeOptionKeys = map[string]map[string]bool{
	"bind":   set("create_host_path", "propagation"),
	"volume": set("nocopy", "subpath"),
	"tmpfs":  set("size", "mode"),
}

func advice(key string) string { return refusalAdvice[key] }

type entry struct {
	key string
	m   map[string]any
}

// entries returns the mapping entries of a list or map of entries (ports, volumes,
// depends_on, networks), keyed by their index or name.
func entries(v any) []entry {
	var out []entry
	switch v := v.(type) {
	case []any:
		for i, e := range v {
			if m, ok := e.(map[string]any); ok {
				out = append(out, entry{key: fmt.Sprint(i), m: m})
			}
		}
	case map[string]any:
		for _, k := range sortedKeys(v) {
			if m, ok := v[k].(map[string]any); ok {
				out = append(out, entry{key: k, m: m})
			}
		}
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// locator finds where a key path is written in the compose files, for file:line messages.
type locator struct {
	files []string
	roots []*yaml.Node
}

func newLocator(files []string) *locator {
	l := &locator{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		var doc yaml.Node
		if yaml.Unmarshal(data, &doc) != nil || len(doc.Content) == 0 {
			continue
		}
		l.files = append(l.files, f)
		l.roots = append(l.roots, doc.Content[0])
	}
	return l
}

// at returns where path is written, last file first (later files override earlier
// ones); for a path written nowhere (extends, include) its nearest written parent below
// the service, or no place at all.
func (l *locator) at(path []string) Problem {
	for i := len(l.roots) - 1; i >= 0; i-- {
		n, line, depth := l.roots[i], 0, 0
		for _, key := range path {
			k, v := child(n, key)
			if v == nil {
				break
			}
			n, line = v, k.Line
			depth++
		}
		if depth == len(path) || (depth >= 3 && depth == len(path)-1) {
			return Problem{File: l.files[i], Line: line}
		}
	}
	return Problem{}
}

// child returns the key and value nodes of key in a mapping, or an element of a
// sequence by its index (then both are the element).
func child(n *yaml.Node, key string) (k, v *yaml.Node) {
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == key {
				return n.Content[i], n.Content[i+1]
			}
		}
	case yaml.SequenceNode:
		var idx int
		if _, err := fmt.Sscan(key, &idx); err == nil && idx >= 0 && idx < len(n.Content) {
			return n.Content[idx], n.Content[idx]
		}
	}
	return nil, nil
}
