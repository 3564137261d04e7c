package config

import (
	"net/url"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

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
	case slices.Contains(strings.Split(s, "/"), ".."):
		// Cleaning it would deploy somewhere the file does not say.
		p.add(n, "%s: %q contains \"..\"; write the folder it means, e.g. %s", key, s, path.Clean(s))
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
