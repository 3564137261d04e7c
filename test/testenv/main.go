package testenv

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/client"
)

// Main runs a package's tests (call it from TestMain) so that they leave nothing
// behind: it first sweeps what ended test processes left (Sweep), then gives the
// process a temporary folder of its own (TMPDIR, for t.TempDir, os.MkdirTemp and the
// programs the tests start), written in its ledger, and removes it at the end. A
// process killed at its -timeout runs no cleanup: the next run's sweep removes its
// folder, processes and engine objects. The setup functions run in that folder's
// time, before the tests (building the binaries under test there, say); one that
// fails ends the run with exit 1.
func Main(m *testing.M, setup ...func() error) {
	os.Exit(runMain(m, setup))
}

func runMain(m *testing.M, setup []func() error) int {
	sweepAtStart()
	if _, err := Owner(); err != nil {
		fmt.Fprintln(os.Stderr, "testenv:", err)
		return 1
	}
	dir, err := os.MkdirTemp("", "st-") // short: unix sockets live under it
	if err == nil {
		err = track("dir", dir)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "testenv:", err)
		return 1
	}
	old, had := os.LookupEnv("TMPDIR")
	os.Setenv("TMPDIR", dir)
	code := 1
	if err := runSetup(setup); err != nil {
		fmt.Fprintln(os.Stderr, err)
	} else {
		code = m.Run()
	}
	if had {
		os.Setenv("TMPDIR", old)
	} else {
		os.Unsetenv("TMPDIR")
	}
	if err := os.RemoveAll(dir); err != nil {
		fmt.Fprintf(os.Stderr, "testenv: remove the test folder: %v\n", err)
	} else {
		endOwner()
	}
	return code
}

func runSetup(setup []func() error) error {
	for _, f := range setup {
		if err := f(); err != nil {
			return err
		}
	}
	return nil
}

// sweepAtStart sweeps with the engine when there is one, else what needs none.
func sweepAtStart() {
	cli, err := client.New(client.FromEnv)
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), Scale(10*time.Second))
		_, err = cli.Ping(ctx, client.PingOptions{NegotiateAPIVersion: true})
		cancel()
		if err == nil {
			Sweep(cli)
		}
		cli.Close()
	}
	Sweep(nil)
}

// Scale stretches a time limit for this machine: by SHIP_TEST_TIMEOUT_SCALE when set
// (e.g. 3 on a slow CI runner), else by the machine's load per CPU at the time of the
// call when it is above 1 (at most 8 times). Limits are backstops against hangs, never
// the time a step is expected to take.
func Scale(d time.Duration) time.Duration {
	f := scaleFactor(os.Getenv("SHIP_TEST_TIMEOUT_SCALE"), loadAvg(), runtime.NumCPU())
	return time.Duration(float64(d) * f)
}

// scaleFactor is the factor Scale uses: env when it is a number >= 1, else
// load/cpus kept between 1 and 8.
func scaleFactor(env string, load float64, cpus int) float64 {
	if f, err := strconv.ParseFloat(strings.TrimSpace(env), 64); err == nil && f >= 1 {
		return f
	}
	f := load / float64(max(cpus, 1))
	return min(max(f, 1), 8)
}

// loadAvg is the one-minute load average (0 when it cannot be read).
func loadAvg() float64 {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(data))
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}
