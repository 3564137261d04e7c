package agent

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/mail"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/shipdeploy/ship/pkg/agentapi"
	"github.com/shipdeploy/ship/pkg/proxy"
)

// DefaultConfigFile is where shipd reads its configuration.
const DefaultConfigFile = "/etc/shipd/shipd.yaml"

// Defaults of Config.
const (
	DefaultState           = "/var/lib/shipd/state.json"
	DefaultDockerSocket    = "/var/run/docker.sock"
	DefaultWaitTimeout     = 2 * time.Minute
	DefaultJobTimeout      = 10 * time.Minute
	DefaultShutdownTimeout = 30 * time.Second
	DefaultHandoverTimeout = 30 * time.Second
)

// ErrInvalidConfig marks a shipd.yaml that cannot be used.
var ErrInvalidConfig = errors.New("invalid shipd configuration")

// Config is shipd.yaml.
type Config struct {
	// File is where the configuration was read from ("" defaults only).
	File string `yaml:"-"`

	// Socket is the API's unix socket; SocketGroup, when set, is the group that owns
	// it (the socket's mode is 0660, so that group may use the API).
	Socket      string `yaml:"socket"`
	SocketGroup string `yaml:"socket_group"`
	// State is the state file, written atomically after every change.
	State string `yaml:"state"`
	// Docker is the Docker engine's unix socket.
	Docker string `yaml:"docker"`
	// LogLevel is debug, info, warn or error.
	LogLevel string `yaml:"log_level"`
	// Health is the default health check of a new container (kamal-proxy's 1s, 5s and
	// 30s); a deploy request may override it.
	Health HealthConfig `yaml:"health"`
	// Drain is how long in-flight requests may finish on an old container when the
	// service's x-ship.drain does not say (30s).
	Drain time.Duration `yaml:"drain"`
	// WaitTimeout bounds the wait until a service that is not routed is healthy.
	WaitTimeout time.Duration `yaml:"wait_timeout"`
	// JobTimeout bounds each pre-deploy job.
	JobTimeout time.Duration `yaml:"job_timeout"`
	// ShutdownTimeout bounds a graceful stop: in-flight requests and a running deploy.
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
	// HandoverTimeout bounds the wait for a successor to be ready (SIGHUP).
	HandoverTimeout time.Duration `yaml:"handover_timeout"`
	// TrustForwarded keeps the X-Forwarded-* headers clients send (set it only behind
	// another proxy that sets them).
	TrustForwarded bool `yaml:"trust_forwarded"`
	// ACME is where the certificates of routes with tls: true come from.
	ACME ACMEConfig `yaml:"acme"`
}

// ACMEConfig is the ACME directory certificates are ordered from. They are kept in the
// certs folder beside the state file.
type ACMEConfig struct {
	// Directory is the ACME directory URL; "" means Let's Encrypt's production one
	// (or its staging one with Staging).
	Directory string `yaml:"directory"`
	// Staging uses Let's Encrypt's staging directory (untrusted certificates, high
	// rate limits): for trying a setup out.
	Staging bool `yaml:"staging"`
	// Email is the account's contact for expiry and policy notices (optional).
	Email string `yaml:"email"`
	// Roots is a PEM file of the roots the directory's own HTTPS certificate is
	// checked against, beside the system's: for a private CA (step-ca, Pebble).
	Roots string `yaml:"roots"`
}

// HealthConfig is the health check's timing.
type HealthConfig struct {
	Interval time.Duration `yaml:"interval"`
	Timeout  time.Duration `yaml:"timeout"`
	Deadline time.Duration `yaml:"deadline"`
}

// DefaultConfig is the configuration without a file.
func DefaultConfig() Config {
	return Config{
		Socket:   agentapi.DefaultSocket,
		State:    DefaultState,
		Docker:   DefaultDockerSocket,
		LogLevel: "info",
		Health: HealthConfig{
			Interval: proxy.DefaultHealthInterval,
			Timeout:  proxy.DefaultHealthTimeout,
			Deadline: proxy.DefaultHealthDeadline,
		},
		Drain:           proxy.DefaultDrain,
		WaitTimeout:     DefaultWaitTimeout,
		JobTimeout:      DefaultJobTimeout,
		ShutdownTimeout: DefaultShutdownTimeout,
		HandoverTimeout: DefaultHandoverTimeout,
	}
}

// LoadConfig reads shipd.yaml. A missing file at DefaultConfigFile gives the defaults;
// any other missing file is an error. Unknown keys, wrong types and bad values are
// reported all at once, each with its line.
func LoadConfig(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) && path == DefaultConfigFile {
		return DefaultConfig(), nil
	}
	if err != nil {
		return Config{}, fmt.Errorf("%w: %v", ErrInvalidConfig, err)
	}
	return ParseConfig(path, data)
}

// ParseConfig reads shipd.yaml from data; file names it in errors.
func ParseConfig(file string, data []byte) (Config, error) {
	c := DefaultConfig()
	c.File = file
	var problems []string
	var root yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&root); err != nil && !errors.Is(err, io.EOF) {
		return Config{}, fmt.Errorf("%w: %s: %v", ErrInvalidConfig, file, err)
	}
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		// Decode again, strictly: every unknown key and wrong type at once.
		dec := yaml.NewDecoder(bytes.NewReader(data))
		dec.KnownFields(true)
		if err := dec.Decode(&c); err != nil {
			var te *yaml.TypeError
			if !errors.As(err, &te) {
				return Config{}, fmt.Errorf("%w: %s: %v", ErrInvalidConfig, file, err)
			}
			for _, e := range te.Errors {
				problems = append(problems, strings.TrimPrefix(e, "yaml: "))
			}
		}
	}
	problems = append(problems, c.check(&root)...)
	sortProblems(problems)
	if len(problems) > 0 {
		return Config{}, fmt.Errorf("%w: %s:\n  %s", ErrInvalidConfig, file, strings.Join(problems, "\n  "))
	}
	return c, nil
}

var groupName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.-]*\$?$|^[0-9]+$`)

// check validates the values; root locates them by line.
func (c *Config) check(root *yaml.Node) []string {
	var problems []string
	bad := func(key, format string, a ...any) {
		where := ""
		if line := lineOf(root, key); line > 0 {
			where = "line " + strconv.Itoa(line) + ": "
		}
		problems = append(problems, where+key+": "+fmt.Sprintf(format, a...))
	}
	for key, p := range map[string]string{"socket": c.Socket, "state": c.State, "docker": c.Docker} {
		if p == "" || !filepath.IsAbs(p) {
			bad(key, "%q must be an absolute path", p)
		}
	}
	if c.SocketGroup != "" && !groupName.MatchString(c.SocketGroup) {
		bad("socket_group", "%q is not a group name or number", c.SocketGroup)
	}
	if _, err := ParseLevel(c.LogLevel); err != nil {
		bad("log_level", "%v", err)
	}
	for key, d := range map[string]time.Duration{
		"health.interval": c.Health.Interval, "health.timeout": c.Health.Timeout, "health.deadline": c.Health.Deadline,
		"drain": c.Drain, "wait_timeout": c.WaitTimeout, "job_timeout": c.JobTimeout,
		"shutdown_timeout": c.ShutdownTimeout, "handover_timeout": c.HandoverTimeout,
	} {
		if d <= 0 {
			bad(key, "%s must be a positive duration such as 30s", d)
		}
	}
	c.ACME.check(bad)
	return problems
}

// check validates the ACME keys (bad reports one, located by its key).
func (a ACMEConfig) check(bad func(key, format string, args ...any)) {
	if a.Directory != "" {
		u, err := url.Parse(a.Directory)
		if err != nil || u.Scheme != "https" || u.Host == "" {
			bad("acme.directory", "%q is not an https URL; write e.g. https://acme-v02.api.letsencrypt.org/directory, or leave it out for Let's Encrypt", a.Directory)
		}
		if a.Staging {
			bad("acme.staging", "staging picks Let's Encrypt's staging directory: leave it out when acme.directory names one")
		}
	}
	if a.Email != "" {
		if _, err := mail.ParseAddress(a.Email); err != nil || strings.ContainsAny(a.Email, "<> ") {
			bad("acme.email", "%q is not an email address; write e.g. ops@example.com", a.Email)
		}
	}
	if a.Roots != "" && !filepath.IsAbs(a.Roots) {
		bad("acme.roots", "%q must be an absolute path", a.Roots)
	}
}

// CertsDir is where shipd keeps its certificates and ACME account key: the certs
// folder beside the state file.
func (c Config) CertsDir() string { return filepath.Join(filepath.Dir(c.State), "certs") }

// lineOf finds the line of a dotted key in the document, 0 when it is not there.
func lineOf(root *yaml.Node, key string) int {
	n := root
	if n.Kind == yaml.DocumentNode && len(n.Content) == 1 {
		n = n.Content[0]
	}
	line := 0
	for _, part := range strings.Split(key, ".") {
		if n.Kind != yaml.MappingNode {
			return line
		}
		found := false
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == part {
				line = n.Content[i].Line
				n = n.Content[i+1]
				found = true
				break
			}
		}
		if !found {
			return 0
		}
	}
	return line
}

// ParseLevel reads a log level: debug, info, warn or error.
func ParseLevel(s string) (slog.Level, error) {
	switch strings.ToLower(s) {
	case "debug":
		return slog.LevelDebug, nil
	case "", "info":
		return slog.LevelInfo, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("%q is not a log level (debug, info, warn, error)", s)
}

// sortProblems orders problems by their line ("line 3: ..." before "line 12: ..."),
// those without one last.
func sortProblems(s []string) {
	line := func(p string) int {
		if rest, ok := strings.CutPrefix(p, "line "); ok {
			if i := strings.IndexByte(rest, ':'); i > 0 {
				if n, err := strconv.Atoi(rest[:i]); err == nil {
					return n
				}
			}
		}
		return math.MaxInt
	}
	slices.SortFunc(s, func(a, b string) int {
		if c := cmp.Compare(line(a), line(b)); c != 0 {
			return c
		}
		return strings.Compare(a, b)
	})
}
