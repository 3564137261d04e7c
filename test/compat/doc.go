// Package compat holds the compatibility test of ship's engine against docker compose:
// each compose file of testdata/ is brought up by both, on the same engine, and the
// containers, networks and volumes they make are compared field by field (see
// compat_test.go). It has no code of its own.
package compat
