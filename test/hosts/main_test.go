// Package hosts runs shipctl and shipd against real servers: containers with systemd
// as PID 1, sshd and a Docker engine of their own (test/testhost, scripts/testhost).
// shipd is installed by `shipctl agent install` as root and runs as the non-root
// deploy user under systemd; the load is sent from each host to shipd's routes.
//
// The tests run only with SHIP_TEST_HOSTS=1 (make test-hosts): the host image takes
// minutes to build the first time.
package hosts

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/shipdeploy/ship/test/testenv"
	"github.com/shipdeploy/ship/test/testhost"
)

// The binaries under test, built as `make build` builds them: -trimpath, the version
// set with -ldflags.
var (
	shipctl string
	shipd   string
	loadgen string
	version string
)

func TestMain(m *testing.M) {
	if !testhost.Enabled() {
		fmt.Println("test/hosts: skipped; SHIP_TEST_HOSTS=1 (make test-hosts) runs them")
		os.Exit(0)
	}
	dir, err := os.MkdirTemp("", "ship-hosts-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := func() int {
		defer os.RemoveAll(dir)
		version = "v0.0.0-hosts-" + randomHex(3)
		ldflags := "-s -w -X github.com/shipdeploy/ship/pkg/version.Version=" + version
		shipctl = filepath.Join(dir, "shipctl")
		shipd = filepath.Join(dir, "shipd")
		loadgen = filepath.Join(dir, "loadgen")
		for _, b := range []struct{ out, pkg string }{{shipctl, "./cmd/shipctl"}, {shipd, "./cmd/shipd"}} {
			if err := testenv.Build(b.out, b.pkg, "-ldflags", ldflags); err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
		}
		if err := testenv.Build(loadgen, "./test/loadgen/cmd/loadgen"); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		return m.Run()
	}()
	os.Exit(code)
}
