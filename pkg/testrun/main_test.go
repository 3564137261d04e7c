package testrun_test

import (
	"testing"

	"github.com/shipdeploy/ship/test/testenv"
)

// TestMain runs the tests in a temporary folder of their own, removed at the end and
// swept, with what the tests started, after a killed run (testenv.Main).
func TestMain(m *testing.M) { testenv.Main(m) }
