package image

import (
	"errors"
	"strings"
	"testing"
)

func TestKeychainFromEnv(t *testing.T) {
	for _, tc := range []struct {
		name      string
		env       map[string]string
		wantUser  string
		wantUsage bool
	}{
		{"both", map[string]string{"SHIP_REGISTRY_USER": "ci", "SHIP_REGISTRY_PASSWORD": "pw"}, "ci", false},
		{"neither", map[string]string{}, "", false},
		{"user only", map[string]string{"SHIP_REGISTRY_USER": "ci"}, "", true},
		{"password only", map[string]string{"SHIP_REGISTRY_PASSWORD": "pw"}, "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.env["DOCKER_CONFIG"] = t.TempDir()
			kc, err := KeychainFromEnv(func(k string) string { return tc.env[k] }, "registry.example.com:5000/team")
			if tc.wantUsage {
				if !errors.Is(err, ErrEnvCredentials) || strings.Contains(err.Error(), "pw") {
					t.Errorf("want ErrEnvCredentials without the password, got %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			c, err := kc.Credentials(t.Context(), "registry.example.com:5000")
			if err != nil || c.Username != tc.wantUser {
				t.Errorf("credentials %+v, %v; want user %q", c, err, tc.wantUser)
			}
		})
	}
}

func TestBuilderFromEnv(t *testing.T) {
	for v, want := range map[string]string{"": BuilderAuto, "0": BuilderClassic, "false": BuilderClassic,
		"1": BuilderBuildKit, "TRUE": BuilderBuildKit, "maybe": BuilderAuto} {
		getenv := func(k string) string {
			if k == "DOCKER_BUILDKIT" {
				return v
			}
			return ""
		}
		if got := BuilderFromEnv(getenv); got != want {
			t.Errorf("DOCKER_BUILDKIT=%q: %q, want %q", v, got, want)
		}
	}
}
