// Package testenv starts and finds the real parts ship's tests run against: the Docker
// engine on this machine, an OpenSSH sshd on 127.0.0.1, a distribution registry and
// Let's Encrypt's test CA, Pebble (built from the Go module proxy at PebbleVersion).
//
// In CI (CI=true) a missing part fails the test; elsewhere the test is skipped with a
// message that says how to get the part.
package testenv

import (
	"os"
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
