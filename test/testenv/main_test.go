package testenv

import "testing"

// TestMain runs testenv's own tests the way it runs every package's (Main).
func TestMain(m *testing.M) { Main(m) }
