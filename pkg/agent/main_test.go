package agent_test

import (
	"testing"

	"github.com/shipdeploy/ship/test/testenv"
)

// TestMain runs the tests in a temporary folder of their own (shipd's binary, the
// daemons' folders), removed at the end and swept after a killed run.
func TestMain(m *testing.M) { testenv.Main(m) }
