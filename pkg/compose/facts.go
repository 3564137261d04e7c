package compose

import (
	"errors"
	"fmt"
	"strings"

	"gopkg.in/yaml.v3"
)

// Facts are what `shipctl init` needs from a compose file, read from its YAML as
// written: no interpolation, no validation, no other files. Load is the full loader.
type Facts struct {
	// Name is the file's name: ("" when it has none).
	Name     string
	Services []ServiceFacts
}

// ServiceFacts are one service's facts.
type ServiceFacts struct {
	Name  string
	Build bool     // it has build:
	Ports []string // published ports in the short form, as written: "8080:80"
}

// ReadFacts reads the project name, the service names in file order, whether each
// has build:, and the ports each publishes as written. "<<" merges and aliases are
// followed.
func ReadFacts(data []byte) (Facts, error) {
	var facts Facts
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return facts, fmt.Errorf("not valid YAML: %w", err)
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 {
		return facts, errors.New("the file is empty")
	}
	y := newYAMLMaps()
	root := deref(doc.Content[0])
	if root.Kind != yaml.MappingNode {
		return facts, errors.New("not a compose file: the top level is not a mapping")
	}
	if n := y.lookup(root, "name"); n != nil && n.Kind == yaml.ScalarNode {
		facts.Name = n.Value
	}
	services := y.lookup(root, "services")
	if services == nil || services.Kind != yaml.MappingNode || len(services.Content) == 0 {
		return facts, errors.New("no services: found no services: mapping")
	}
	for _, kv := range y.entries(services) {
		svc := ServiceFacts{Name: kv[0].Value}
		body := kv[1]
		if b := y.lookup(body, "build"); b != nil && !(b.Kind == yaml.ScalarNode && b.ShortTag() == "!!null") {
			svc.Build = true
		}
		if ports := y.lookup(body, "ports"); ports != nil && ports.Kind == yaml.SequenceNode {
			for _, p := range ports.Content {
				if s := portString(y, deref(p)); s != "" {
					svc.Ports = append(svc.Ports, s)
				}
			}
		}
		facts.Services = append(facts.Services, svc)
	}
	return facts, nil
}

// portString writes a port entry in the short form: "8080:80", "127.0.0.1:8080:80/udp".
func portString(y *yamlMaps, p *yaml.Node) string {
	switch p.Kind {
	case yaml.ScalarNode:
		return p.Value
	case yaml.MappingNode:
		field := func(k string) string {
			if n := y.lookup(p, k); n != nil && n.Kind == yaml.ScalarNode {
				return n.Value
			}
			return ""
		}
		s := field("target")
		if s == "" {
			return ""
		}
		if pub := field("published"); pub != "" {
			s = pub + ":" + s
			if ip := field("host_ip"); ip != "" {
				if strings.Contains(ip, ":") {
					ip = "[" + ip + "]"
				}
				s = ip + ":" + s
			}
		}
		if proto := field("protocol"); proto != "" && proto != "tcp" {
			s += "/" + proto
		}
		return s
	}
	return ""
}

// yamlMaps reads mappings with "<<" merges expanded; keys written in a
// mapping win over merged ones. Each mapping is expanded once, so merges of
// merges stay cheap and a mapping that merges itself ends.
type yamlMaps struct {
	memo   map[*yaml.Node][][2]*yaml.Node
	active map[*yaml.Node]bool
}

func newYAMLMaps() *yamlMaps {
	return &yamlMaps{memo: map[*yaml.Node][][2]*yaml.Node{}, active: map[*yaml.Node]bool{}}
}

// entries lists a mapping's scalar-keyed pairs, merges expanded.
func (y *yamlMaps) entries(m *yaml.Node) [][2]*yaml.Node {
	m = deref(m)
	if m == nil || m.Kind != yaml.MappingNode || y.active[m] {
		return nil
	}
	if out, ok := y.memo[m]; ok {
		return out
	}
	y.active[m] = true
	defer delete(y.active, m)
	var out, merged [][2]*yaml.Node
	seen := map[string]bool{}
	for i := 0; i+1 < len(m.Content); i += 2 {
		k, v := deref(m.Content[i]), deref(m.Content[i+1])
		if k.Kind != yaml.ScalarNode {
			continue
		}
		if k.ShortTag() == "!!merge" {
			sources := []*yaml.Node{v}
			if v.Kind == yaml.SequenceNode {
				sources = v.Content
			}
			for _, src := range sources {
				merged = append(merged, y.entries(src)...)
			}
			continue
		}
		if !seen[k.Value] {
			seen[k.Value] = true
			out = append(out, [2]*yaml.Node{k, v})
		}
	}
	for _, kv := range merged {
		if !seen[kv[0].Value] {
			seen[kv[0].Value] = true
			out = append(out, kv)
		}
	}
	y.memo[m] = out
	return out
}

// lookup returns the value of key in mapping m, merges included, or nil.
func (y *yamlMaps) lookup(m *yaml.Node, key string) *yaml.Node {
	for _, kv := range y.entries(m) {
		if kv[0].Value == key {
			return kv[1]
		}
	}
	return nil
}

func deref(n *yaml.Node) *yaml.Node {
	if n != nil && n.Kind == yaml.AliasNode && n.Alias != nil {
		return n.Alias
	}
	return n
}
