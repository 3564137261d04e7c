package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/url"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Parse reads a ship.yaml from data; file names it in problems and sets
// Config.File and Config.Dir. Parsing is strict: unknown keys, duplicate keys,
// wrong types and bad values are all problems, and all of them are returned
// at once in an *Error.
func Parse(file string, data []byte) (*Config, error) {
	p := &parser{file: file}
	c := p.parse(data)
	if len(p.problems) > 0 {
		return nil, &Error{Problems: dedupe(p.problems)}
	}
	return c, nil
}

type parser struct {
	file     string
	problems []Problem
	memo     map[*yaml.Node][]kv // pairs of each mapping, merges expanded
	active   map[*yaml.Node]bool // mappings being expanded, to find self-merges
}

// add records a problem at n (nil: the whole file).
func (p *parser) add(n *yaml.Node, format string, args ...any) {
	pr := Problem{File: p.file, Msg: fmt.Sprintf(format, args...)}
	if n != nil {
		pr.Line, pr.Column = n.Line, n.Column
	}
	p.problems = append(p.problems, pr)
}

func (p *parser) parse(data []byte) *Config {
	c := &Config{
		File:         p.file,
		Dir:          filepath.Dir(p.file),
		Compose:      DefaultCompose,
		Test:         Test{Compose: DefaultTestCompose, Service: DefaultTestService, Timeout: DefaultTestTimeout},
		Environments: map[string]*Environment{},
	}
	docs, err := decode(data)
	if err != nil {
		p.syntax(err, data)
	}
	if len(docs) == 0 {
		if err == nil {
			p.emptyFile()
		}
		return nil
	}
	if len(docs) > 1 {
		p.add(docs[1], "a second YAML document (after ---); ship.yaml holds one document, delete the \"---\" line and merge the two")
	}
	root := resolve(docs[0])
	if isNull(root) {
		p.emptyFile()
		return nil
	}
	if root.Kind != yaml.MappingNode {
		p.add(root, "the file holds %s; ship.yaml must be a mapping of keys, starting with e.g. \"app: myapp\"", describe(root))
		return nil
	}

	seen := p.mapping(root, "", topKeys, map[string]func(*yaml.Node, string){
		"app":          func(n *yaml.Node, key string) { c.App = p.app(n, key) },
		"compose":      func(n *yaml.Node, key string) { c.Compose = p.relPath(n, key, "docker-compose.yml") },
		"test":         func(n *yaml.Node, key string) { p.test(n, key, &c.Test) },
		"registry":     func(n *yaml.Node, key string) { c.Registry = p.registry(n, key) },
		"environments": func(n *yaml.Node, key string) { p.environments(n, key, c.Environments) },
		"notify":       func(n *yaml.Node, key string) { p.notify(n, key, &c.Notify) },
	})
	if _, ok := seen["app"]; !ok {
		p.add(root, "app is missing; write the compose project name for the hosts, e.g. \"app: myapp\" (lowercase letters, digits, \"-\" and \"_\")")
	}
	return c
}

// decode reads the file's documents, at most two (one more is already too
// many), leaving out empty ones.
func decode(data []byte) (docs []*yaml.Node, err error) {
	defer func() {
		// The YAML library is not ours: a panic in it is a file it cannot read,
		// not a reason to take shipctl down.
		if r := recover(); r != nil {
			err = fmt.Errorf("yaml: cannot parse this file (%v)", r)
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for len(docs) < 2 {
		var doc yaml.Node
		if err := dec.Decode(&doc); err != nil {
			if errors.Is(err, io.EOF) {
				return docs, nil
			}
			return docs, err
		}
		n := &doc
		if n.Kind == yaml.DocumentNode {
			if len(n.Content) == 0 {
				continue
			}
			n = n.Content[0]
		}
		if len(docs) > 0 && isNull(resolve(n)) {
			continue // a trailing "---" with nothing after it
		}
		docs = append(docs, n)
	}
	return docs, nil
}

func (p *parser) emptyFile() {
	p.add(nil, "the file is empty; write at least \"app: myapp\" and an environment, or run `shipctl init` to write a commented one")
}

var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// syntax turns a YAML syntax error into a problem with its line.
func (p *parser) syntax(err error, data []byte) {
	msg := err.Error()
	pr := Problem{File: p.file}
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		pr.Line, _ = strconv.Atoi(m[1])
		msg = m[2]
	} else {
		msg = strings.TrimPrefix(msg, "yaml: ")
	}
	hint := "check the indentation and quoting on this line and the one before"
	if bytes.Contains(lineOf(data, pr.Line), []byte("\t")) || (pr.Line == 0 && bytes.Contains(data, []byte("\t"))) {
		hint = "YAML does not allow tabs for indentation; indent with spaces"
	}
	pr.Msg = fmt.Sprintf("YAML syntax: %s; %s", msg, hint)
	p.problems = append(p.problems, pr)
}

func lineOf(data []byte, n int) []byte {
	if n < 1 {
		return nil
	}
	lines := bytes.Split(data, []byte("\n"))
	if n > len(lines) {
		return nil
	}
	return lines[n-1]
}

// The known keys of each mapping, in the order the docs give them.
var (
	topKeys  = []string{"app", "compose", "test", "registry", "environments", "notify"}
	testKeys = []string{"compose", "service", "timeout"}
	envKeys  = []string{"hosts", "path", "confirm", "grace", "agent", "env_file", "known_hosts", "parallel", "keep", "docker_socket"}
	notKeys  = []string{"webhook"}
)

// kv is one key and its value in a mapping, merge keys expanded.
type kv struct {
	key, val *yaml.Node
	name     string
}

// pairs lists n's keys and values, with "<<: *anchor" merges expanded (keys
// written in n win over merged ones). Duplicate and non-scalar keys are
// problems. Each mapping is expanded once and remembered, so that merges of
// merges cannot make the work grow exponentially, and a mapping that merges
// itself is found.
func (p *parser) pairs(n *yaml.Node, where string) []kv {
	if out, ok := p.memo[n]; ok {
		return out
	}
	if p.active[n] {
		return nil // reported by merge
	}
	if p.memo == nil {
		p.memo, p.active = map[*yaml.Node][]kv{}, map[*yaml.Node]bool{}
	}
	p.active[n] = true
	defer delete(p.active, n)

	var out, merged []kv
	first := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := resolve(n.Content[i]), n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			p.add(k, "keys must be plain names; found %s as a key%s", describe(k), in(where))
			continue
		}
		if k.ShortTag() == "!!merge" {
			merged = append(merged, p.merge(k, resolve(v), where)...)
			continue
		}
		if line, dup := first[k.Value]; dup {
			p.add(k, "duplicate key %q%s (first on line %d); keep one of them", k.Value, in(where), line)
			continue
		}
		first[k.Value] = k.Line
		out = append(out, kv{key: k, val: v, name: k.Value})
	}
	for _, m := range merged {
		if _, ok := first[m.name]; !ok {
			first[m.name] = m.key.Line
			out = append(out, m)
		}
	}
	p.memo[n] = out
	return out
}

func (p *parser) merge(k, v *yaml.Node, where string) []kv {
	var sources []*yaml.Node
	switch v.Kind {
	case yaml.MappingNode:
		sources = []*yaml.Node{v}
	case yaml.SequenceNode:
		for _, item := range v.Content {
			item = resolve(item)
			if item.Kind != yaml.MappingNode {
				p.add(item, "\"<<\" merges mappings; found %s; write <<: *name where &name marks a mapping", describe(item))
				continue
			}
			sources = append(sources, item)
		}
	default:
		p.add(k, "\"<<\" merges a mapping; found %s; write <<: *name where &name marks a mapping", describe(v))
		return nil
	}
	var out []kv
	seen := map[string]bool{}
	for _, src := range sources {
		if p.active[src] {
			p.add(k, "\"<<\" merges a mapping into itself; merge another anchor, or write the keys out")
			continue
		}
		// Earlier mappings in a list win.
		for _, m := range p.pairs(src, where) {
			if !seen[m.name] {
				seen[m.name] = true
				out = append(out, m)
			}
		}
	}
	return out
}

// mapping walks a mapping with a fixed set of keys, calling set for each
// known key and reporting unknown ones with the nearest known key. It returns
// the key nodes seen. A null value counts as an empty mapping.
func (p *parser) mapping(n *yaml.Node, where string, known []string, set map[string]func(*yaml.Node, string)) map[string]*yaml.Node {
	return p.mappingEx(n, where, known, "", set)
}

// mappingEx is mapping with an example of the mapping for the message when n
// is not one.
func (p *parser) mappingEx(n *yaml.Node, where string, known []string, example string, set map[string]func(*yaml.Node, string)) map[string]*yaml.Node {
	seen := map[string]*yaml.Node{}
	n = resolve(n)
	if isNull(n) {
		return seen
	}
	if n.Kind != yaml.MappingNode {
		msg := fmt.Sprintf("%s: expected a mapping of keys (%s), found %s", where, strings.Join(known, ", "), describe(n))
		if example != "" {
			msg += fmt.Sprintf("; write e.g. \"%s: %s\" (or the same in block style)", lastKey(where), example)
		}
		p.add(n, "%s", msg)
		return seen
	}
	for _, e := range p.pairs(n, where) {
		f, ok := set[e.name]
		if !ok {
			if where == "" && strings.HasPrefix(e.name, "x-") {
				continue // extension keys, as in compose: a place for &anchors
			}
			// A misspelt key is reported once, not again as missing.
			if s := p.unknown(e, where, known); s != "" && seen[s] == nil {
				seen[s] = e.key
			}
			continue
		}
		seen[e.name] = e.key
		f(resolve(e.val), join(where, e.name))
	}
	return seen
}

// elsewhere says where keys that are often put in the wrong place belong.
var elsewhere = map[string]string{
	"hosts": envPlace, "path": envPlace, "confirm": envPlace, "grace": envPlace, "agent": envPlace,
	"env_file": envPlace, "known_hosts": envPlace, "parallel": envPlace, "keep": envPlace, "docker_socket": envPlace,
	"webhook": "under notify", "timeout": "under test", "service": "under test",
	"registry": topPlace, "app": topPlace, "environments": topPlace, "notify": topPlace,
}

const (
	envPlace = "under environments.NAME"
	topPlace = "at the top level"
)

// unknown reports an unknown key and returns the known key it suggested, if any.
func (p *parser) unknown(e kv, where string, known []string) string {
	msg := fmt.Sprintf("unknown key %q%s", e.name, in(where))
	if where == "" {
		msg = fmt.Sprintf("unknown top-level key %q", e.name)
	}
	v := resolve(e.val)
	s := suggest(e.name, known)
	switch {
	case s != "":
		msg += fmt.Sprintf("; did you mean %q?", s)
	case elsewhere[e.name] != "" && elsewhere[e.name] != placeOf(where):
		msg += fmt.Sprintf("; %s belongs %s", e.name, elsewhere[e.name])
	case where == "" && v.Kind == yaml.MappingNode && hasKey(v, "hosts"):
		msg += fmt.Sprintf("; environments go under environments:, indent it there: \"environments: {%s: {hosts: [...], path: ...}}\"", e.name)
	default:
		msg += "; known keys are " + strings.Join(known, ", ")
	}
	p.add(e.key, "%s", msg)
	return s
}

func placeOf(where string) string {
	switch {
	case where == "":
		return topPlace
	case strings.HasPrefix(where, "environments."):
		return envPlace
	}
	return "under " + where
}

func hasKey(n *yaml.Node, key string) bool {
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return true
		}
	}
	return false
}

func (p *parser) test(n *yaml.Node, where string, t *Test) {
	p.mappingEx(n, where, testKeys, "{service: test, timeout: 10m}", map[string]func(*yaml.Node, string){
		"compose": func(n *yaml.Node, key string) { t.Compose = p.relPath(n, key, "docker-compose.test.yml") },
		"service": func(n *yaml.Node, key string) { t.Service = p.service(n, key) },
		"timeout": func(n *yaml.Node, key string) {
			if d, ok := p.duration(n, key, "10m"); ok {
				if d <= 0 {
					p.add(n, "%s: %s must be more than zero; write e.g. 10m", key, n.Value)
					return
				}
				t.Timeout = d
			}
		},
	})
}

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
		})
		at := e.key
		if _, ok := seen["hosts"]; !ok {
			p.add(at, "%s: hosts is missing; write the SSH destinations, e.g. \"hosts: [deploy@web1.example.com]\"", key)
		}
		if _, ok := seen["path"]; !ok {
			p.add(at, "%s: path is missing; write the folder on the hosts, e.g. \"path: /srv/myapp\"", key)
		}
		envs[e.name] = env
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

func (p *parser) app(n *yaml.Node, key string) string {
	s, ok := p.text(n, key, "myapp")
	if !ok {
		return ""
	}
	if !validApp(s) {
		p.add(n, "%s: %q is not a valid compose project name; write lowercase letters, digits, \"-\" and \"_\", starting with a letter or digit, e.g. %q", key, s, AppName(s))
		return ""
	}
	return s
}

var serviceRe = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`)

func (p *parser) service(n *yaml.Node, key string) string {
	s, ok := p.text(n, key, "test")
	if !ok {
		return DefaultTestService
	}
	if !serviceRe.MatchString(s) {
		p.add(n, "%s: %q is not a compose service name; write letters, digits, \".\", \"_\" and \"-\", e.g. test", key, s)
		return DefaultTestService
	}
	return s
}

// relPath reads a path relative to the config file's folder.
func (p *parser) relPath(n *yaml.Node, key, example string) string {
	s, ok := p.text(n, key, example)
	if !ok {
		return ""
	}
	if s == "" {
		p.add(n, "%s is empty; write a file name, e.g. %s, or delete the line", key, example)
		return ""
	}
	if strings.ContainsRune(s, 0) {
		p.add(n, "%s: contains a NUL character; write a file name, e.g. %s", key, example)
		return ""
	}
	return s
}

// hostPath reads an absolute path on the hosts.
func (p *parser) hostPath(n *yaml.Node, key, example string) string {
	s, ok := p.text(n, key, example)
	if !ok {
		return ""
	}
	switch {
	case s == "":
		p.add(n, "%s is empty; write an absolute path on the hosts, e.g. %s", key, example)
		return ""
	case !strings.HasPrefix(s, "/"):
		p.add(n, "%s: %q is not absolute; write a path from the root of the host, e.g. /%s", key, s, strings.TrimPrefix(path.Clean("/"+s), "/"))
		return ""
	case strings.ContainsFunc(s, func(r rune) bool { return r < ' ' || r == 0x7f }):
		p.add(n, "%s: %q contains control characters; write a plain path, e.g. %s", key, s, example)
		return ""
	case path.Clean(s) == "/":
		p.add(n, "%s: \"/\" is the root of the host; write a folder of its own, e.g. %s", key, example)
		return ""
	}
	return path.Clean(s)
}

func (p *parser) boolean(n *yaml.Node, key string) bool {
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!bool" {
		b, err := strconv.ParseBool(n.Value)
		if err == nil {
			return b
		}
	}
	found := describe(n)
	if n.Kind == yaml.ScalarNode && !isNull(n) {
		found = strconv.Quote(n.Value)
	}
	p.add(n, "%s: %s is not true or false; write \"%s: true\" or \"%s: false\"", key, found, lastKey(key), lastKey(key))
	return false
}

func (p *parser) integer(n *yaml.Node, key string, min int, example string) int {
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" {
		found := describe(n)
		if n.Kind == yaml.ScalarNode && !isNull(n) {
			found = strconv.Quote(n.Value)
		}
		p.add(n, "%s: %s is not a whole number; write %s", key, found, example)
		return 0
	}
	var v int
	if err := n.Decode(&v); err != nil {
		p.add(n, "%s: %s is out of range; write %s", key, n.Value, example)
		return 0
	}
	if v < min {
		p.add(n, "%s: %s is less than %d; write %s", key, n.Value, min, example)
		return 0
	}
	return v
}

func (p *parser) duration(n *yaml.Node, key, example string) (time.Duration, bool) {
	s, ok := p.text(n, key, example)
	if !ok {
		return 0, false
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		if _, numErr := strconv.ParseFloat(s, 64); numErr == nil {
			p.add(n, "%s: %s has no unit; write e.g. %ss or %sm", key, s, s, s)
		} else {
			p.add(n, "%s: %q is not a duration; write e.g. %s or 2m (units: ms, s, m, h)", key, s, example)
		}
		return 0, false
	}
	return d, true
}

var (
	registryRe = regexp.MustCompile(`^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*|\[[0-9a-fA-F:.]+\])(?::([0-9]+))?((?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*)$`)
	schemeRe   = regexp.MustCompile(`^[a-zA-Z][a-zA-Z0-9+.-]*://`)
)

const registryExample = "registry.example.com:5000"

func (p *parser) registry(n *yaml.Node, key string) string {
	if isNull(n) {
		return "" // registry may be given by SHIP_REGISTRY instead
	}
	s, ok := p.text(n, key, registryExample)
	if !ok || s == "" {
		return ""
	}
	return p.checkRegistry(n, key, s)
}

func (p *parser) checkRegistry(n *yaml.Node, key, s string) string {
	if strings.Contains(s, "@") {
		// Never repeat it: it probably holds a user name and password.
		p.add(n, "%s: credentials do not belong in ship.yaml; write only host[:port][/path], e.g. %s, and use docker login or SHIP_REGISTRY_USER and SHIP_REGISTRY_PASSWORD", key, registryExample)
		return ""
	}
	if loc := schemeRe.FindStringIndex(s); loc != nil {
		rest := strings.TrimRight(s[loc[1]:], "/")
		if registryRe.MatchString(rest) {
			p.add(n, "%s: %q has a scheme; write it without one: \"%s: %s\"", key, s, lastKey(key), rest)
		} else {
			p.add(n, "%s: %q has a scheme; write host[:port][/path] without one, e.g. %s", key, s, registryExample)
		}
		return ""
	}
	m := registryRe.FindStringSubmatch(s)
	if m == nil {
		fixed := strings.ToLower(strings.TrimRight(s, "/"))
		if fixed != s && registryRe.MatchString(fixed) {
			p.add(n, "%s: %q is not host[:port][/path] (no trailing \"/\", paths in lowercase); write %q", key, s, fixed)
		} else {
			p.add(n, "%s: %q is not host[:port][/path]; write e.g. %s", key, s, registryExample)
		}
		return ""
	}
	if m[1] != "" {
		if port, err := strconv.Atoi(m[1]); err != nil || port < 1 || port > 65535 {
			p.add(n, "%s: port %s is not from 1 to 65535; write e.g. %s", key, m[1], registryExample)
			return ""
		}
	}
	return s
}

func (p *parser) notify(n *yaml.Node, where string, nt *Notify) {
	p.mappingEx(n, where, notKeys, "{webhook: https://deploys.example.com/hook}", map[string]func(*yaml.Node, string){
		"webhook": func(n *yaml.Node, key string) {
			const example = "https://deploys.example.com/hook"
			s, ok := p.text(n, key, example)
			if !ok {
				return
			}
			// A webhook URL often carries a token: problems describe it but never repeat it.
			u, err := url.Parse(s)
			switch {
			case s == "":
				p.add(n, "%s is empty; write an http or https URL, e.g. %s, or delete notify", key, example)
			case err != nil:
				p.add(n, "%s is not a URL; write an http or https URL, e.g. %s", key, example)
			case u.Scheme != "http" && u.Scheme != "https":
				p.add(n, "%s: the URL does not start with http:// or https://; write e.g. %s", key, example)
			case u.Host == "":
				p.add(n, "%s: the URL has no host; write e.g. %s", key, example)
			default:
				nt.Webhook = s
			}
		},
	})
}

// text reads a scalar written as text. Numbers and dates count as text; null,
// booleans, lists and mappings do not.
func (p *parser) text(n *yaml.Node, key, example string) (string, bool) {
	if n.Kind == yaml.ScalarNode {
		switch n.ShortTag() {
		case "!!str", "!!int", "!!float", "!!timestamp":
			return n.Value, true
		case "!!bool":
			p.add(n, "%s: %s is true/false, not text; write e.g. %s (in quotes if you mean the word: \"%s\")", key, n.Value, example, n.Value)
			return "", false
		case "!!null":
			p.add(n, "%s has no value; write e.g. %s, or delete the line", key, example)
			return "", false
		}
	}
	p.add(n, "%s: expected a single value, found %s; write e.g. %s", key, describe(n), example)
	return "", false
}

// resolve follows an alias to the node it names.
func resolve(n *yaml.Node) *yaml.Node {
	if n != nil && n.Kind == yaml.AliasNode && n.Alias != nil {
		return n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n == nil || n.Kind == 0 || n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// describe names what a node is, for "found ..." in messages.
func describe(n *yaml.Node) string {
	switch {
	case isNull(n):
		return "an empty value"
	case n.Kind == yaml.MappingNode:
		return "a mapping"
	case n.Kind == yaml.SequenceNode:
		return "a list"
	case n.Kind == yaml.AliasNode:
		return "an alias"
	case n.Kind == yaml.DocumentNode:
		return "a document"
	}
	switch n.ShortTag() {
	case "!!bool":
		return "true/false"
	case "!!int", "!!float":
		return "a number"
	case "!!str":
		return "a string"
	}
	return "a value tagged " + n.Tag
}

func join(where, key string) string {
	if where == "" {
		return key
	}
	return where + "." + key
}

func in(where string) string {
	if where == "" {
		return ""
	}
	return " in " + where
}

func lastKey(key string) string {
	if i := strings.LastIndexByte(key, '.'); i >= 0 {
		return key[i+1:]
	}
	return key
}

// dedupe drops repeated problems: a mapping merged in two places is checked twice.
func dedupe(ps []Problem) []Problem {
	seen := map[Problem]bool{}
	out := ps[:0:0]
	for _, p := range ps {
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	return sortedProblems(out)
}
