package config

import (
	"fmt"
	"strings"

	"gopkg.in/yaml.v3"
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
	"hosts": envPlace, "path": envPlace, "project": envPlace, "confirm": envPlace, "grace": envPlace, "agent": envPlace,
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
