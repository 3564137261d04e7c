// Package config reads ship.yaml: its schema, defaults, and validation that
// reports every problem at once with file:line:column and what to write instead.
//
// Choices where the design is silent:
//   - YAML anchors, aliases and "<<: *anchor" merges work everywhere; top-level
//     keys starting with "x-" are ignored (as in compose), to hold anchors.
//   - environments may be left out (build and test need none); Env explains.
//   - Numbers and dates are accepted where text is expected (app: 2048);
//     true/false and empty values are not.
//   - Environment names are letters, digits, ".", "_" and "-".
//   - A host listed twice in one environment (same name and port) is a problem.
//   - Messages never repeat a webhook URL, a registry or host that holds
//     credentials: they may carry secrets.
package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// DefaultFile is the config file's name when none is given.
const DefaultFile = "ship.yaml"

// Defaults for keys left out of ship.yaml.
const (
	DefaultCompose      = "docker-compose.yml"
	DefaultTestCompose  = "docker-compose.test.yml"
	DefaultTestService  = "test"
	DefaultTestTimeout  = 10 * time.Minute
	DefaultKeep         = 5
	DefaultDockerSocket = "/var/run/docker.sock"
)

// Config is a parsed, validated ship.yaml with defaults filled in.
type Config struct {
	File string // path it was loaded from
	Dir  string // folder of File; relative paths in the file resolve against it

	App          string // compose project name on the hosts
	Compose      string // the compose file, relative to Dir
	Test         Test
	Registry     string // host[:port][/path], no scheme; may be empty until ApplyEnv
	Environments map[string]*Environment
	Notify       Notify
}

// Test is the stack that gates every push and deploy.
type Test struct {
	Compose string        // the test compose file, relative to Dir
	Service string        // the service whose exit code decides
	Timeout time.Duration // how long the test run may take
}

// Environment is one named deployment target.
type Environment struct {
	Name         string // its key under environments
	Hosts        []Host // at least one
	Path         string // absolute folder on the hosts
	Confirm      bool   // ask y/N before changing anything
	Grace        time.Duration
	Agent        bool   // blue-green through shipd
	EnvFile      string // env_file, relative to Dir; empty: none
	KnownHosts   string // known_hosts, relative to Dir; empty: none
	Parallel     int    // hosts deployed at once; 0: all
	Keep         int    // releases kept on each host, >= 1
	DockerSocket string // the Docker engine's socket on the hosts
	// Project is the compose project name on the hosts; empty: <app>-<env>
	// (ProjectName). Setting it to the app's name keeps the name of before ship
	// named projects per environment.
	Project string
	// TLSCert and TLSKey are the app's own certificate and key (PEM files, relative
	// to Dir; tls: {cert, key}): uploaded with each release (mode 0600) and served by
	// shipd for the names the certificate holds, instead of ACME's. Empty: none.
	TLSCert, TLSKey string
}

// ProjectName is the environment's compose project name on its hosts: Project, or
// <app>-<env> made a valid project name (lower-case; characters other than a-z, 0-9,
// "_" and "-" dropped).
func (e *Environment) ProjectName(app string) string {
	if e.Project != "" {
		return e.Project
	}
	return AppName(app + "-" + e.Name)
}

// Notify says whom to tell about deploys.
type Notify struct {
	Webhook string // http or https URL; empty: none
}

// Load reads and parses the config file at path. A missing file is an error
// that names it and suggests `shipctl init`; like every problem with the
// file's content it satisfies errors.Is(err, ErrInvalid).
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, &Error{Problems: []Problem{{
			File: path,
			Msg:  "no such file; run `shipctl init` to write one, or name another with -c FILE",
		}}}
	}
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	c, err := Parse(path, data)
	if err != nil {
		return nil, err
	}
	if abs, err := filepath.Abs(c.Dir); err == nil {
		c.Dir = abs
	}
	return c, nil
}

// ApplyEnv lets SHIP_* variables override the file: SHIP_REGISTRY replaces
// registry. Flags, applied by the caller afterwards, override both.
func (c *Config) ApplyEnv(getenv func(string) string) {
	if getenv == nil {
		return
	}
	if r := strings.TrimSpace(getenv("SHIP_REGISTRY")); r != "" {
		c.Registry = strings.TrimRight(r, "/")
	}
}

// Env returns the environment called name. An unknown name is an error that
// lists the known ones.
func (c *Config) Env(name string) (*Environment, error) {
	if e, ok := c.Environments[name]; ok {
		return e, nil
	}
	names := c.EnvNames()
	var msg string
	switch {
	case len(names) == 0:
		msg = fmt.Sprintf("no environment %q: the file has none; add one under environments:, e.g. \"environments: {%s: {hosts: [deploy@web1.example.com], path: /srv/%s}}\" (or the same in block style)", name, exampleEnvName(name), c.App)
	default:
		msg = fmt.Sprintf("no environment %q", name)
		if s := suggest(name, names); s != "" {
			msg += fmt.Sprintf("; did you mean %q?", s)
		}
		msg += " Known: " + strings.Join(names, ", ")
	}
	return nil, &Error{Problems: []Problem{{File: c.File, Msg: msg}}}
}

func exampleEnvName(name string) string {
	if validEnvName(name) {
		return name
	}
	return "prod"
}

// EnvNames returns the names of the environments, sorted.
func (c *Config) EnvNames() []string {
	names := make([]string, 0, len(c.Environments))
	for n := range c.Environments {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Path resolves rel, a path written in the file, against Dir. Absolute paths
// and the empty string are returned as they are.
func (c *Config) Path(rel string) string {
	if rel == "" || filepath.IsAbs(rel) {
		return rel
	}
	return filepath.Join(c.Dir, filepath.FromSlash(rel))
}

// AppName turns s (a folder name, say) into a valid compose project name the
// way docker compose does: lowercase, characters other than a-z, 0-9, "_"
// and "-" dropped, no leading "_" or "-". It returns "app" when nothing is left.
func AppName(s string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_' || r == '-' {
			b.WriteRune(r)
		}
	}
	name := strings.TrimLeft(b.String(), "_-")
	if name == "" {
		return "app"
	}
	return name
}

// validApp reports whether s is a compose project name: ^[a-z0-9][a-z0-9_-]*$.
func validApp(s string) bool {
	return s != "" && AppName(s) == s
}
