package image

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeHelper puts docker-credential-shiptest on PATH: it knows helped.example.com and
// token.example.com, fails loudly for broken.example.com and knows nothing else.
func fakeHelper(t *testing.T) {
	t.Helper()
	dir := t.TempDir()
	script := `#!/bin/sh
[ "$1" = get ] || exit 2
read -r host
case "$host" in
helped.example.com) echo '{"ServerURL":"helped.example.com","Username":"carol","Secret":"s3cret-carol"}' ;;
token.example.com) echo '{"ServerURL":"token.example.com","Username":"<token>","Secret":"s3cret-token"}' ;;
https://index.docker.io/v1/) echo '{"ServerURL":"https://index.docker.io/v1/","Username":"hubby","Secret":"s3cret-hub"}' ;;
broken.example.com) echo 'it went wrong near s3cret-broken'; exit 1 ;;
*) echo 'credentials not found in native keychain'; exit 1 ;;
esac
`
	if err := os.WriteFile(filepath.Join(dir, "docker-credential-shiptest"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))
}

func loadConfig(t *testing.T, name string) *DockerConfig {
	t.Helper()
	c, err := LoadDockerConfig(filepath.Join("testdata", "dockerconfig", name))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestDockerConfigAuths(t *testing.T) {
	c := loadConfig(t, "auths")
	for _, tc := range []struct {
		host string
		want Credentials
	}{
		{"registry.example.com:5000", Credentials{Username: "alice", Password: "s3cret-alice"}},
		{"docker.io", Credentials{Username: "bob", Password: "s3cret-bob"}},
		{"registry-1.docker.io", Credentials{Username: "bob", Password: "s3cret-bob"}},
		{"old.example.com", Credentials{Username: "olga", Password: "s3cret:with:colons"}},
		{"token.example.com", Credentials{IdentityToken: "s3cret-refresh"}},
		{"unknown.example.com:5000", Credentials{}},
		{"registry.example.com", Credentials{}}, // another port is another registry
	} {
		t.Run(tc.host, func(t *testing.T) {
			got, err := c.Credentials(context.Background(), tc.host)
			if err != nil {
				t.Fatal(err)
			}
			got.From = ""
			if got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
	_, err := c.Credentials(context.Background(), "bad.example.com")
	if err == nil || !strings.Contains(err.Error(), "docker login bad.example.com") {
		t.Errorf("an auth that is not base64: %v", err)
	}
}

func TestDockerConfigHelpers(t *testing.T) {
	fakeHelper(t)
	c := loadConfig(t, "helpers")
	for _, tc := range []struct {
		host string
		want Credentials
	}{
		{"helped.example.com", Credentials{Username: "carol", Password: "s3cret-carol", From: "docker-credential-shiptest"}},
		{"token.example.com", Credentials{IdentityToken: "s3cret-token", From: "docker-credential-shiptest"}},
		{"index.docker.io", Credentials{Username: "hubby", Password: "s3cret-hub", From: "docker-credential-shiptest"}},
		// The store has nothing: the auths entry counts.
		{"fallback.example.com", Credentials{Username: "fred", Password: "s3cret-fred"}},
		{"nothing.example.com", Credentials{}},
	} {
		t.Run(tc.host, func(t *testing.T) {
			got, err := c.Credentials(context.Background(), tc.host)
			if err != nil {
				t.Fatal(err)
			}
			if tc.want.From == "" {
				got.From = ""
			}
			if got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}

	_, err := c.Credentials(context.Background(), "broken.example.com")
	if err == nil || strings.Contains(err.Error(), "s3cret") || !strings.Contains(err.Error(), "docker-credential-shiptest") {
		t.Errorf("a failing helper must be named, its output not shown: %v", err)
	}
	_, err = c.Credentials(context.Background(), "other.example.com")
	if err == nil || !strings.Contains(err.Error(), "docker-credential-missing-helper") {
		t.Errorf("a helper that is not installed must be named: %v", err)
	}
}

func TestLoadDockerConfig(t *testing.T) {
	c, err := LoadDockerConfig(t.TempDir())
	if err != nil || len(c.Auths) != 0 || c.Path != "" {
		t.Errorf("no config.json is an empty config: %+v, %v", c, err)
	}
	_, err = LoadDockerConfig(filepath.Join("testdata", "dockerconfig", "broken"))
	if err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Errorf("a broken config.json must be an error that does not quote it: %v", err)
	}
	env := map[string]string{"HOME": "/home/x"}
	if got := ConfigDir(func(k string) string { return env[k] }); got != filepath.Join("/home/x", ".docker") {
		t.Errorf("ConfigDir = %s", got)
	}
	env["DOCKER_CONFIG"] = "/etc/dc"
	if got := ConfigDir(func(k string) string { return env[k] }); got != "/etc/dc" {
		t.Errorf("ConfigDir with DOCKER_CONFIG = %s", got)
	}
}

func TestKeychain(t *testing.T) {
	kc := NewKeychain(loadConfig(t, "auths"))
	ctx := context.Background()
	kc.Set("registry.example.com:5000/team", Credentials{Username: "ci", Password: "s3cret-env", From: "env"})
	got, err := kc.Credentials(ctx, "registry.example.com:5000")
	if err != nil || got.Password != "s3cret-env" {
		t.Errorf("credentials set for a host win over config.json: %+v, %v", got, err)
	}
	got, err = kc.Credentials(ctx, "docker.io")
	if err != nil || got.Password != "s3cret-bob" {
		t.Errorf("other hosts come from config.json: %+v, %v", got, err)
	}
	var nilKC *Keychain
	if got, err := nilKC.Credentials(ctx, "docker.io"); err != nil || !got.Empty() {
		t.Errorf("a nil keychain is anonymous: %+v, %v", got, err)
	}

	msg := "push failed: s3cret-env and s3cret-bob and Y2k6czNjcmV0LWVudg== leaked"
	red := kc.Redact(msg)
	for _, s := range []string{"s3cret", "Y2k6czNjcmV0LWVudg=="} { // base64 of ci:s3cret-env
		if strings.Contains(red, s) {
			t.Errorf("Redact left %q in %q", s, red)
		}
	}
	sentinel := errors.New("sentinel")
	err = kc.RedactError(errors.Join(sentinel, errors.New("with s3cret-env")))
	if strings.Contains(err.Error(), "s3cret") || !errors.Is(err, sentinel) {
		t.Errorf("RedactError: %v (errors.Is %v)", err, errors.Is(err, sentinel))
	}
}

func TestNormalizeHost(t *testing.T) {
	for in, want := range map[string]string{
		"registry.example.com:5000":        "registry.example.com:5000",
		"https://registry.example.com/v1/": "registry.example.com",
		"http://localhost:5000":            "localhost:5000",
		"registry.example.com:5000/team/x": "registry.example.com:5000",
		"docker.io":                        dockerHubKey,
		"index.docker.io":                  dockerHubKey,
		"https://index.docker.io/v1/":      dockerHubKey,
		"registry-1.docker.io":             dockerHubKey,
		" spaced.example.com ":             "spaced.example.com",
	} {
		if got := normalizeHost(in); got != want {
			t.Errorf("normalizeHost(%q) = %q, want %q", in, got, want)
		}
	}
}
