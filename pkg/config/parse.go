package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

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
	envAt    []envNodes          // where each environment's places are written
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
	p.sharedPlaces(c)
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
	envKeys  = []string{"hosts", "path", "project", "confirm", "grace", "agent", "env_file", "known_hosts", "parallel", "keep", "docker_socket", "tls"}
	notKeys  = []string{"webhook"}
)

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
