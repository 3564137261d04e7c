package cli

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/shipdeploy/ship/pkg/deploy"
	"github.com/shipdeploy/ship/pkg/pipeline"
)

type shipOptions struct {
	hostFlags
	Env        string
	NoPull     bool
	AllowDirty bool
	Latest     bool
	LockWait   time.Duration
	Parallel   int
	graceFlag
}

// newShipCmd builds the command; runF, when not nil, runs instead of runShip (tests).
func newShipCmd(g *Globals, runF func(context.Context, *shipOptions) error) *cobra.Command {
	if runF == nil {
		runF = func(ctx context.Context, o *shipOptions) error { return runShip(ctx, g, o) }
	}
	o := &shipOptions{}
	cmd := &cobra.Command{
		Use:   "ship ENV",
		Short: "Build, test, push and deploy the checked-out commit to an environment",
		Long: `Take the checked-out commit to the environment ENV of ship.yaml, one step
after the other: preflight, build (as shipctl build), test (as shipctl test),
push (as shipctl push), deploy (as shipctl deploy). The first step that fails
stops the run, with that step's exit code: 1 for a failed preflight, build or
push, 3 for failed tests, 4, 5 or 6 for a failed deploy.

The preflight comes before anything slow or interactive: ship.yaml, the registry
(it must answer and take the credentials), every host over SSH with its Docker
engine, and the lock of every host (exit 6 when another deploy holds one). The
lock is held from then until the deploy ends, and the deploy uses the
preflight's SSH connections: one per host for the whole run. The question
(confirm: true) and the grace countdown come after the push.`,
		Example: `  shipctl ship staging
  shipctl ship prod --yes --json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Env = args[0]
			return runF(cmd.Context(), o)
		},
	}
	f := cmd.Flags()
	f.BoolVar(&o.NoPull, "no-pull", false, "do not pull newer base images when building")
	f.BoolVar(&o.AllowDirty, "allow-dirty", false, "ship a build of uncommitted changes (<sha>-dirty-<hash>)")
	f.BoolVar(&o.Latest, "latest", false, "also tag the images :latest and push that")
	f.DurationVar(&o.LockWait, "lock-wait", 0, "wait this long for another deploy's lock on a host (default: fail at once, exit 6)")
	f.IntVar(&o.Parallel, "parallel", 0, "hosts deployed at once (default: parallel in ship.yaml, else all)")
	o.graceFlag.register(cmd)
	o.hostFlags.register(cmd)
	return cmd
}

func runShip(ctx context.Context, g *Globals, o *shipOptions) error {
	if o.LockWait < 0 {
		return usageErrorf("--lock-wait %s: want a duration of 0 or more", o.LockWait)
	}
	cfg, info, err := g.checkout(ctx)
	if err != nil {
		return err
	}
	env, err := cfg.Env(o.Env)
	if err != nil {
		return err
	}
	if err := requireRegistry(cfg); err != nil {
		return err
	}
	if err := canConfirm(g, env); err != nil {
		return err
	}
	p := newPrinter(g)
	// Refused before anything is built: the push would refuse it at the end.
	if err := checkDirty(p, info, o.AllowDirty, "ship"); err != nil {
		return err
	}
	p.Event("ship_start", map[string]any{"env": o.Env, "version": info.Version(), "sha": info.SHA, "steps": pipeline.Steps},
		fmt.Sprintf("==> shipping %s to %s: preflight, build, test, push, deploy", versionLabel(info, nil), o.Env))
	var (
		access *hostAccess
		conn   *deploy.Conn
	)
	defer func() { conn.Close() }()
	refs, err := pipeline.Run(ctx, pipeline.Stages{
		Preflight: func(ctx context.Context) error {
			if access, err = newHostAccess(g, cfg, env, o.hostFlags, p); err != nil {
				return err
			}
			conn, err = deploy.Open(ctx, deploy.OpenOptions{
				Target: access.target, Check: g.Registry(access.keychain), Registries: []string{registryHost(cfg.Registry)},
				SHA: info.Version(), LockWait: o.LockWait,
			})
			return err
		},
		Build: func(ctx context.Context) ([]string, error) {
			return buildImages(ctx, g, p, cfg, info, &buildOptions{NoPull: o.NoPull})
		},
		Test: func(ctx context.Context) error { return runTest(ctx, g, &testOptions{NoPull: o.NoPull}) },
		// The run just recorded must be of this very tree: a change made meanwhile is not.
		Tested: func(context.Context) error { return checkTested(g, p, info, false, false) },
		Push: func(ctx context.Context, refs []string) error {
			return pushImages(ctx, g, p, cfg, info, refs, o.Latest, nil)
		},
		Deploy: func(ctx context.Context) error {
			return runDeploy(ctx, g, &deployOptions{
				hostFlags: o.hostFlags, Env: o.Env, LockWait: o.LockWait, Parallel: o.Parallel, AllowDirty: o.AllowDirty,
				graceFlag: o.graceFlag, access: access, conn: conn,
			})
		},
	})
	var se *pipeline.StepError
	if errors.As(err, &se) {
		p.Event("ship_failed", map[string]any{"env": o.Env, "step": se.Step, "exit_code": exitCode(err)},
			fmt.Sprintf("==> ship stopped: the %s step failed", se.Step))
		return se.Err
	}
	if err != nil {
		return err
	}
	p.Event("ship_done", map[string]any{"env": o.Env, "version": info.Version(), "images": nonNil(refs), "deployed": true},
		fmt.Sprintf("==> shipped %s to %s", versionLabel(info, nil), o.Env))
	return nil
}
