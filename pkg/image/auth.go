package image

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/distribution/reference"

	"github.com/shipdeploy/ship/pkg/redact"
)

// Credentials log in to one registry. They never appear in output, events or errors:
// see Keychain.Redact.
type Credentials struct {
	Username string
	Password string
	// IdentityToken is an OAuth refresh token (what `docker login` stores for some
	// registries instead of a password).
	IdentityToken string
	// From says where they were found, for messages: "SHIP_REGISTRY_USER and
	// SHIP_REGISTRY_PASSWORD", "config.json", "docker-credential-pass".
	From string
}

// Empty reports whether there is nothing to log in with.
func (c Credentials) Empty() bool { return c.Password == "" && c.IdentityToken == "" }

// secrets are the values that must never be shown.
func (c Credentials) secrets() []string {
	var s []string
	for _, v := range []string{c.Password, c.IdentityToken} {
		if v != "" {
			s = append(s, v)
		}
	}
	if c.Password != "" {
		// What an HTTP client or the engine could echo back.
		s = append(s, base64.StdEncoding.EncodeToString([]byte(c.Username+":"+c.Password)))
	}
	return s
}

// dockerHubKey is the config.json key docker uses for Docker Hub.
const dockerHubKey = "https://index.docker.io/v1/"

// Keychain finds credentials for registry hosts: ones set for a host first (from
// SHIP_REGISTRY_USER and SHIP_REGISTRY_PASSWORD), then docker's config.json with its
// credential helpers. It remembers every secret it handed out, so that messages can
// be scrubbed of them. Safe for use from several goroutines.
type Keychain struct {
	config *DockerConfig

	mu      sync.Mutex
	fixed   map[string]Credentials
	cache   map[string]Credentials
	secrets map[string]bool
}

// NewKeychain returns a keychain over config, which may be nil (no config.json).
func NewKeychain(config *DockerConfig) *Keychain {
	return &Keychain{config: config, fixed: map[string]Credentials{}, cache: map[string]Credentials{}, secrets: map[string]bool{}}
}

// Set makes c the credentials for host, whatever config.json says.
func (k *Keychain) Set(host string, c Credentials) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.fixed[normalizeHost(host)] = c
	k.remember(c)
}

// Credentials returns what to log in to host with; empty Credentials (and no error)
// when none are known, for an anonymous pull.
func (k *Keychain) Credentials(ctx context.Context, host string) (Credentials, error) {
	if k == nil {
		return Credentials{}, nil
	}
	host = normalizeHost(host)
	k.mu.Lock()
	if c, ok := k.fixed[host]; ok {
		k.mu.Unlock()
		return c, nil
	}
	if c, ok := k.cache[host]; ok {
		k.mu.Unlock()
		return c, nil
	}
	k.mu.Unlock()
	var c Credentials
	if k.config != nil {
		var err error
		if c, err = k.config.Credentials(ctx, host); err != nil {
			return Credentials{}, err
		}
	}
	k.mu.Lock()
	k.cache[host] = c
	k.remember(c)
	k.mu.Unlock()
	return c, nil
}

// needsHelper reports whether host's credentials would come from a credential helper
// that has not been asked yet.
func (k *Keychain) needsHelper(host string) bool {
	if k == nil || k.config == nil {
		return false
	}
	host = normalizeHost(host)
	k.mu.Lock()
	_, fixed := k.fixed[host]
	_, cached := k.cache[host]
	k.mu.Unlock()
	return !fixed && !cached && k.config.helperFor(host) != ""
}

func (k *Keychain) remember(c Credentials) {
	for _, s := range c.secrets() {
		k.secrets[s] = true
	}
}

// Redact replaces every secret the keychain knows in s. Unlike redact.Redactor's
// guesses from env files, these values are known to be secrets: shorter ones go too.
func (k *Keychain) Redact(s string) string {
	if k == nil {
		return s
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	for secret := range k.secrets {
		if len(secret) >= 3 {
			s = strings.ReplaceAll(s, secret, redact.Redacted)
		}
	}
	return s
}

// RedactError returns err with every known secret scrubbed from its message; errors.Is
// and errors.As still see the original.
func (k *Keychain) RedactError(err error) error {
	if k == nil {
		return err
	}
	return redact.Error(err, k.Redact)
}

// RegistryHost is the registry part of an image reference ("docker.io" for Docker Hub).
func RegistryHost(ref string) (string, error) {
	named, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return "", fmt.Errorf("image reference %q: %w", ref, err)
	}
	return reference.Domain(named), nil
}

// normalizeHost turns a config.json key or an image's registry into the bare
// host[:port] they are compared by, Docker Hub's names into its config key.
func normalizeHost(s string) string {
	s = strings.TrimSpace(s)
	s = strings.TrimPrefix(strings.TrimPrefix(s, "https://"), "http://")
	if i := strings.Index(s, "/"); i >= 0 {
		s = s[:i]
	}
	switch s {
	case "docker.io", "index.docker.io", "registry-1.docker.io":
		return dockerHubKey
	}
	return s
}

// DockerConfig is what docker's config.json says about registries: the credentials
// `docker login` saved, and the credential helpers that hold the others.
type DockerConfig struct {
	// Path is the file it was read from ("" when there is none).
	Path        string
	Auths       map[string]AuthEntry `json:"auths"`
	CredsStore  string               `json:"credsStore"`
	CredHelpers map[string]string    `json:"credHelpers"`
}

// AuthEntry is one entry of config.json's "auths".
type AuthEntry struct {
	Auth          string `json:"auth"` // base64 of user:password
	Username      string `json:"username"`
	Password      string `json:"password"`
	IdentityToken string `json:"identitytoken"`
}

// ConfigDir is the folder of docker's config.json: $DOCKER_CONFIG, else ~/.docker.
func ConfigDir(getenv func(string) string) string {
	if d := getenv("DOCKER_CONFIG"); d != "" {
		return d
	}
	home := getenv("HOME")
	if home == "" {
		home, _ = os.UserHomeDir()
	}
	return filepath.Join(home, ".docker")
}

// LoadDockerConfig reads dir/config.json. A missing file is an empty config.
func LoadDockerConfig(dir string) (*DockerConfig, error) {
	path := filepath.Join(dir, "config.json")
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return &DockerConfig{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("docker config: %w", err)
	}
	var c DockerConfig
	if err := json.Unmarshal(data, &c); err != nil {
		// The decoder's message can quote the file, and the file holds secrets.
		return nil, fmt.Errorf("docker config %s: not valid JSON; fix or remove it (docker logout rewrites it)", path)
	}
	c.Path = path
	return &c, nil
}

// Credentials looks host up: its credential helper (credHelpers), else the credential
// store (credsStore), else the "auths" entry. Nothing found is no error.
func (c *DockerConfig) Credentials(ctx context.Context, host string) (Credentials, error) {
	host = normalizeHost(host)
	if helper := c.helperFor(host); helper != "" {
		creds, found, err := helperGet(ctx, helper, host)
		if err != nil {
			return Credentials{}, err
		}
		if found {
			return creds, nil
		}
	}
	for key, e := range c.Auths {
		if normalizeHost(key) != host {
			continue
		}
		creds := Credentials{Username: e.Username, Password: e.Password, IdentityToken: e.IdentityToken, From: "config.json"}
		if c.Path != "" {
			creds.From = c.Path
		}
		if e.Auth != "" {
			raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(e.Auth))
			if err != nil {
				return Credentials{}, fmt.Errorf("docker config: the auth of %s is not base64; run docker login %s again", key, key)
			}
			user, pass, ok := strings.Cut(string(raw), ":")
			if !ok {
				return Credentials{}, fmt.Errorf("docker config: the auth of %s is not user:password; run docker login %s again", key, key)
			}
			creds.Username, creds.Password = user, pass
		}
		return creds, nil
	}
	return Credentials{}, nil
}

// helperFor is the credential helper for host (normalized): its credHelpers entry,
// else credsStore; "" for none.
func (c *DockerConfig) helperFor(host string) string {
	helper := ""
	for key, h := range c.CredHelpers {
		if normalizeHost(key) == host {
			helper = h
		}
	}
	if helper == "" {
		helper = c.CredsStore
	}
	return helper
}

// helperGet asks docker-credential-<name> for host's credentials, following docker's
// credential helper protocol: the server URL on stdin, JSON on stdout.
func helperGet(ctx context.Context, name, host string) (Credentials, bool, error) {
	prog := "docker-credential-" + name
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, prog, "get")
	cmd.Stdin = strings.NewReader(host)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			return Credentials{}, false, fmt.Errorf("credential helper %s (named in docker's config.json): %w", prog, err)
		}
		out := strings.TrimSpace(stdout.String())
		if strings.Contains(strings.ToLower(out), "credentials not found") {
			return Credentials{}, false, nil
		}
		// The helper's output is not shown: a broken helper could print what it holds.
		return Credentials{}, false, fmt.Errorf("credential helper %s failed for %s (%v); try `echo %s | %s get`", prog, host, err, host, prog)
	}
	var resp struct {
		ServerURL string
		Username  string
		Secret    string
	}
	if err := json.Unmarshal(stdout.Bytes(), &resp); err != nil {
		return Credentials{}, false, fmt.Errorf("credential helper %s: its answer for %s is not JSON", prog, host)
	}
	if resp.Secret == "" {
		return Credentials{}, false, nil
	}
	creds := Credentials{Username: resp.Username, Password: resp.Secret, From: prog}
	if resp.Username == "<token>" {
		creds = Credentials{IdentityToken: resp.Secret, From: prog}
	}
	return creds, true, nil
}
