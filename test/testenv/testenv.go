// Package testenv starts and finds the real parts ship's tests run against: the Docker
// engine on this machine, an OpenSSH sshd on 127.0.0.1, a distribution registry and
// Let's Encrypt's test CA, Pebble (built from the Go module proxy at PebbleVersion).
// It also writes server certificates signed by a CA of their own (WriteCert).
//
// In CI (CI=true) a missing part fails the test; elsewhere the test is skipped with a
// message that says how to get the part.
//
// Tests leave nothing behind and share the engine with concurrent runs: a package's
// TestMain calls Main (a temporary folder per process, removed at the end); what a test
// creates is named uniquely and removed with t.Cleanup, and is labelled (Labels) or
// written in the process's ledger (Track, TrackProcess), so that Sweep removes what a
// killed run left, never what a running one owns. Time limits go through Scale.
package testenv

import (
	"os"
	"strings"
	"testing"
)

// InCI reports whether the tests run in CI, where every part must be present.
func InCI() bool {
	v := os.Getenv("CI")
	return v != "" && v != "false" && v != "0"
}

// Missing fails the test in CI and skips it elsewhere, saying what is missing and how to get it.
func Missing(t testing.TB, what, how string) {
	t.Helper()
	if InCI() {
		t.Fatalf("%s is required in CI: %s", what, how)
	}
	t.Skipf("skipped: %s (%s)", what, how)
}

// DockerSocket is the path of the engine's unix socket: DOCKER_HOST's when it names
// one, else /var/run/docker.sock. A DOCKER_HOST that is not a unix socket is a missing
// part (the tests that need the socket itself forward it over SSH).
func DockerSocket(t testing.TB) string {
	t.Helper()
	host := os.Getenv("DOCKER_HOST")
	if host == "" {
		return "/var/run/docker.sock"
	}
	if path, ok := strings.CutPrefix(host, "unix://"); ok {
		return path
	}
	Missing(t, "a Docker engine on a unix socket",
		"DOCKER_HOST="+host+" is not one: unset it, or set it to unix:///var/run/docker.sock")
	return ""
}
