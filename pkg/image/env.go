package image

import (
	"errors"
	"strings"
)

// ErrEnvCredentials means SHIP_REGISTRY_USER or SHIP_REGISTRY_PASSWORD is set without
// the other: a usage error, whose message never holds the password.
var ErrEnvCredentials = errors.New("SHIP_REGISTRY_USER and SHIP_REGISTRY_PASSWORD go together")

// envError is an error about the environment's credentials, matching ErrEnvCredentials.
type envError struct{ msg string }

func (e envError) Error() string        { return e.msg }
func (e envError) Is(target error) bool { return target == ErrEnvCredentials }

// KeychainFromEnv is the keychain of shipctl: SHIP_REGISTRY_USER and
// SHIP_REGISTRY_PASSWORD for registry (host[:port][/path]; "" none), else docker's
// config.json (DOCKER_CONFIG, credential helpers too). getenv reads the environment.
func KeychainFromEnv(getenv func(string) string, registry string) (*Keychain, error) {
	dc, err := LoadDockerConfig(ConfigDir(getenv))
	if err != nil {
		return nil, err
	}
	kc := NewKeychain(dc)
	user, pass := getenv("SHIP_REGISTRY_USER"), getenv("SHIP_REGISTRY_PASSWORD")
	switch {
	case user == "" && pass == "":
	case pass == "":
		return nil, envError{"SHIP_REGISTRY_USER is set but SHIP_REGISTRY_PASSWORD is not: set both, or neither to use docker login's credentials"}
	case user == "":
		return nil, envError{"SHIP_REGISTRY_PASSWORD is set but SHIP_REGISTRY_USER is not: set both, or neither to use docker login's credentials"}
	default:
		if registry != "" {
			host, _, _ := strings.Cut(registry, "/")
			kc.Set(host, Credentials{Username: user, Password: pass, From: "SHIP_REGISTRY_USER and SHIP_REGISTRY_PASSWORD"})
		}
	}
	return kc, nil
}

// BuilderFromEnv is the builder DOCKER_BUILDKIT asks for, read the way docker reads it:
// 0 or false the classic builder, 1 or true BuildKit only, else the best there is.
func BuilderFromEnv(getenv func(string) string) string {
	switch strings.ToLower(strings.TrimSpace(getenv("DOCKER_BUILDKIT"))) {
	case "0", "false":
		return BuilderClassic
	case "1", "true":
		return BuilderBuildKit
	}
	return BuilderAuto
}
