package cli

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/shipdeploy/ship/pkg/image"
	"github.com/shipdeploy/ship/pkg/term"
	"github.com/shipdeploy/ship/pkg/testrun"
	"github.com/shipdeploy/ship/pkg/vcs"
)

type testOptions struct {
	File    string
	Service string
	Timeout time.Duration
	NoPull  bool
}

// newTestCmd builds the command; runF, when not nil, runs instead of runTest (tests).
func newTestCmd(g *Globals, runF func(context.Context, *testOptions) error) *cobra.Command {
	if runF == nil {
		runF = func(ctx context.Context, o *testOptions) error { return runTest(ctx, g, o) }
	}
	o := &testOptions{}
	cmd := &cobra.Command{
		Use:   "test",
		Short: "Run the test compose file; its test service's exit code decides",
		Long: `Build and run the test compose file (test.compose in ship.yaml) under a unique
project name, stream every service's logs, and exit with 3 when the test service
fails. Everything the run created is removed afterwards, also on Ctrl-C and timeout.
A passing run is recorded for the commit, so that push and deploy can require it.
The record is kept in this checkout (under .git/), not in the repository: in CI,
run shipctl ship, or shipctl test then shipctl push, in one job.`,
		Example: `  shipctl test
  shipctl test --timeout 5m
  shipctl test -f docker-compose.ci.yml --service e2e`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runF(cmd.Context(), o)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&o.File, "file", "f", "", "test compose file (default: test.compose in ship.yaml)")
	f.StringVar(&o.Service, "service", "", "the service whose exit code decides (default: test.service in ship.yaml)")
	f.DurationVar(&o.Timeout, "timeout", 0, "time limit for the whole run (default: test.timeout in ship.yaml)")
	f.BoolVar(&o.NoPull, "no-pull", false, "do not pull newer base images when building")
	return cmd
}

func runTest(ctx context.Context, g *Globals, o *testOptions) error {
	cfg, err := g.loadConfig()
	if err != nil {
		return err
	}
	file, service, timeout := cfg.Test.Compose, cfg.Test.Service, cfg.Test.Timeout
	if o.File != "" {
		file = o.File
	}
	if o.Service != "" {
		service = o.Service
	}
	if o.Timeout > 0 {
		timeout = o.Timeout
	}
	p := newPrinter(g)

	info, gitErr := vcs.Head(ctx, cfg.Dir)
	if errors.Is(gitErr, context.Canceled) {
		return gitErr // Ctrl-C during git: exit 130, nothing started
	}
	if gitErr != nil {
		p.Warn(fmt.Sprintf("%v: the result will not be recorded, so push and deploy will not count it", gitErr))
	}

	auth, err := keychain(g, cfg)
	if err != nil {
		return err
	}
	api, err := g.Engine()
	if err != nil {
		return fmt.Errorf("connect to the Docker engine: %w", err)
	}
	defer api.Close()

	p.Event("test_start", map[string]any{"file": file, "service": service, "sha": info.SHA, "clean": info.Clean},
		fmt.Sprintf("==> testing %s with %s (service %q decides)", versionLabel(info, gitErr), file, service))
	res, err := testrun.Run(ctx, api, testrun.Options{
		Dir: cfg.Dir, File: file, Service: service, App: cfg.App, Timeout: timeout, Pull: !o.NoPull,
		Builder: image.BuilderFromEnv(g.IO.Getenv), Auth: auth,
		Environ:  environ(g),
		Progress: func(e testrun.Event) { renderTestEvent(g, p, e) },
	})
	secs := res.Duration.Round(100 * time.Millisecond).Seconds()
	if err != nil {
		if errors.Is(err, testrun.ErrTestsFailed) {
			p.Event("test_failed", map[string]any{"exit_code": res.ExitCode, "seconds": secs, "error": err.Error()},
				fmt.Sprintf("==> tests FAILED after %.1fs", secs))
		}
		return err
	}
	if gitErr == nil {
		if err := testrun.Save(info, file, res); err != nil {
			return err
		}
	}
	p.Event("test_passed", map[string]any{"sha": info.SHA, "version": info.Version(), "clean": info.Clean, "seconds": secs},
		fmt.Sprintf("==> tests passed for %s in %.1fs", versionLabel(info, gitErr), secs))
	return nil
}

func versionLabel(info vcs.Info, err error) string {
	switch {
	case err != nil:
		return "the working tree (not a git checkout)"
	case info.Clean:
		return info.Short()
	}
	return info.Short() + " with uncommitted changes (" + info.Version()[len(info.SHA)+1:] + ")"
}

// environ is the environment compose interpolation sees.
func environ(g *Globals) []string {
	if g.IO.Environ != nil {
		return g.IO.Environ()
	}
	return nil
}

func renderTestEvent(g *Globals, p *term.Printer, e testrun.Event) {
	fields := map[string]any{"msg": e.Msg}
	if e.Service != "" {
		fields["service"] = e.Service
		p.Service(e.Service)
	}
	switch e.Kind {
	case "log":
		p.LogLine(e.Service, e.Msg)
		return
	case "build_detail":
		// What the steps wrote: only with --debug (a failing step's output is in the error).
		if !g.Debug && !g.JSON {
			return
		}
	case "exit":
		p.Event("test_exit", fields, fmt.Sprintf("==> %s %s", e.Service, e.Msg))
		return
	case "cleanup":
		p.Event(e.Kind, fields, "==> "+e.Msg)
		return
	}
	text := "--> " + e.Msg
	if e.Service != "" {
		text = fmt.Sprintf("--> %s: %s", e.Service, e.Msg)
	}
	p.Event(e.Kind, fields, text)
}
