package config

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

var envNameRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)

func validEnvName(s string) bool { return envNameRe.MatchString(s) }

func (p *parser) environments(n *yaml.Node, where string, envs map[string]*Environment) {
	if isNull(n) {
		return
	}
	if n.Kind != yaml.MappingNode {
		p.add(n, "%s: expected a mapping of environment names to their settings, found %s; write e.g. \"environments: {prod: {hosts: [deploy@web1.example.com], path: /srv/myapp}}\" (or the same in block style)", where, describe(n))
		return
	}
	for _, e := range p.pairs(n, where) {
		if !validEnvName(e.name) {
			p.add(e.key, "environment name %q may hold only letters, digits, \".\", \"_\" and \"-\", starting with a letter or digit; write e.g. prod", e.name)
			continue
		}
		env := &Environment{Name: e.name, Keep: DefaultKeep, DockerSocket: DefaultDockerSocket}
		key := join(where, e.name)
		v := resolve(e.val)
		if !isNull(v) && v.Kind != yaml.MappingNode {
			p.add(v, "%s: expected the environment's settings (hosts, path, ...), found %s; write e.g. \"%s: {hosts: [deploy@web1.example.com], path: /srv/myapp}\" (or the same in block style)", key, describe(v), e.name)
			continue
		}
		seen := p.mapping(v, key, envKeys, map[string]func(*yaml.Node, string){
			"hosts":   func(n *yaml.Node, key string) { env.Hosts = p.hosts(n, key) },
			"path":    func(n *yaml.Node, key string) { env.Path = p.hostPath(n, key, "/srv/myapp") },
			"project": func(n *yaml.Node, key string) { env.Project = p.app(n, key) },
			"confirm": func(n *yaml.Node, key string) { env.Confirm = p.boolean(n, key) },
			"grace": func(n *yaml.Node, key string) {
				if d, ok := p.duration(n, key, "30s"); ok {
					if d < 0 {
						p.add(n, "%s: %s is negative; write 0s for no countdown, or e.g. 30s", key, n.Value)
						return
					}
					env.Grace = d
				}
			},
			"agent":       func(n *yaml.Node, key string) { env.Agent = p.boolean(n, key) },
			"env_file":    func(n *yaml.Node, key string) { env.EnvFile = p.relPath(n, key, ".env."+e.name) },
			"known_hosts": func(n *yaml.Node, key string) { env.KnownHosts = p.relPath(n, key, "deploy/known_hosts") },
			"parallel": func(n *yaml.Node, key string) {
				env.Parallel = p.integer(n, key, 0, "0 for all hosts at once, or e.g. 2")
			},
			"keep":          func(n *yaml.Node, key string) { env.Keep = p.integer(n, key, 1, "e.g. 5") },
			"docker_socket": func(n *yaml.Node, key string) { env.DockerSocket = p.hostPath(n, key, DefaultDockerSocket) },
			"tls":           func(n *yaml.Node, key string) { env.TLSCert, env.TLSKey = p.tlsFiles(n, key) },
		})
		at := e.key
		if _, ok := seen["hosts"]; !ok {
			p.add(at, "%s: hosts is missing; write the SSH destinations, e.g. \"hosts: [deploy@web1.example.com]\"", key)
		}
		if _, ok := seen["path"]; !ok {
			p.add(at, "%s: path is missing; write the folder on the hosts, e.g. \"path: /srv/myapp\"", key)
		}
		envs[e.name] = env
		p.envAt = append(p.envAt, envNodes{env: env, key: e.key, path: seen["path"], project: seen["project"]})
	}
}

// envNodes are where an environment and its places on the hosts are written.
type envNodes struct {
	env                *Environment
	key, path, project *yaml.Node
}

// sharedPlaces refuses two environments that would share a folder or a compose
// project on a host they both list: the second would replace the first's releases or
// containers. Hosts are compared as written (name and port).
func (p *parser) sharedPlaces(c *Config) {
	if c == nil || c.App == "" {
		return
	}
	type place struct {
		env  string
		line int
	}
	paths, projects := map[string]place{}, map[string]place{}
	told := map[string]bool{} // one problem per pair of environments and kind
	for _, en := range p.envAt {
		e := en.env
		project, projAt := e.ProjectName(c.App), en.project
		if projAt == nil {
			projAt = en.key
		}
		for _, h := range e.Hosts {
			hk := hostKey(h)
			if e.Path != "" && en.path != nil {
				if first, ok := paths[hk+"\x00"+e.Path]; ok && first.env != e.Name && !told["path\x00"+first.env+"\x00"+e.Name] {
					told["path\x00"+first.env+"\x00"+e.Name] = true
					p.add(en.path, "environments.%s.path: %s on %s is also environment %s's (line %d): two environments in one folder would replace each other's releases; give each its own path, e.g. %s", e.Name, e.Path, h, first.env, first.line, e.Path+"-"+e.Name)
				} else if !ok {
					paths[hk+"\x00"+e.Path] = place{e.Name, en.path.Line}
				}
			}
			if first, ok := projects[hk+"\x00"+project]; ok && first.env != e.Name && !told["project\x00"+first.env+"\x00"+e.Name] {
				told["project\x00"+first.env+"\x00"+e.Name] = true
				p.add(projAt, "environments.%s: the compose project %s on %s is also environment %s's (line %d): the second would replace the first's containers; write project: with a name of its own, e.g. \"project: %s\"", e.Name, project, h, first.env, first.line, AppName(c.App+"-"+strings.ReplaceAll(e.Name, ".", "-")))
			} else if !ok {
				projects[hk+"\x00"+project] = place{e.Name, projAt.Line}
			}
		}
	}
}

func (p *parser) hosts(n *yaml.Node, key string) []Host {
	if n.Kind == yaml.ScalarNode && !isNull(n) {
		if _, err := ParseHost(n.Value); err == nil {
			p.add(n, "%s: expected a list, found a string; write \"hosts: [%s]\"", key, n.Value)
			return nil
		}
	}
	if n.Kind != yaml.SequenceNode {
		p.add(n, "%s: expected a list of [user@]host[:port], found %s; write e.g. \"hosts: [deploy@web1.example.com]\"", key, describe(n))
		return nil
	}
	if len(n.Content) == 0 {
		p.add(n, "%s: the list is empty; write at least one host, e.g. \"hosts: [deploy@web1.example.com]\"", key)
		return nil
	}
	var hosts []Host
	first := map[string]int{}
	for i, item := range n.Content {
		item = resolve(item)
		at := fmt.Sprintf("%s[%d]", key, i)
		s, ok := p.text(item, at, "deploy@web1.example.com")
		if !ok {
			continue
		}
		h, err := ParseHost(s)
		if err != nil {
			p.add(item, "%s: %v", at, err)
			continue
		}
		id := hostKey(h)
		if line, dup := first[id]; dup {
			p.add(item, "%s: %s is listed twice (first on line %d); keep one", at, h, line)
			continue
		}
		first[id] = item.Line
		hosts = append(hosts, h)
	}
	return hosts
}

// hostKey identifies a host by where it connects, whoever logs in.
func hostKey(h Host) string { return h.Name + "\x00" + strconv.Itoa(h.Port) }

// tlsFiles reads an environment's tls: {cert: FILE, key: FILE}.
func (p *parser) tlsFiles(n *yaml.Node, key string) (cert, keyFile string) {
	if n.Kind != yaml.MappingNode {
		p.add(n, "%s: expected a mapping of cert and key files, found %s; write e.g. \"tls: {cert: deploy/tls/cert.pem, key: deploy/tls/key.pem}\"", key, describe(n))
		return "", ""
	}
	seen := p.mapping(n, key, []string{"cert", "key"}, map[string]func(*yaml.Node, string){
		"cert": func(n *yaml.Node, k string) { cert = p.relPath(n, k, "deploy/tls/cert.pem") },
		"key":  func(n *yaml.Node, k string) { keyFile = p.relPath(n, k, "deploy/tls/key.pem") },
	})
	for _, k := range []string{"cert", "key"} {
		if _, ok := seen[k]; !ok {
			p.add(n, "%s: %s is missing; write both files, e.g. \"tls: {cert: deploy/tls/cert.pem, key: deploy/tls/key.pem}\"", key, k)
		}
	}
	return cert, keyFile
}
