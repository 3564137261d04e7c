package cli

import (
	"context"
	"time"

	"github.com/spf13/cobra"

	"github.com/shipdeploy/ship/pkg/deploy"
)

type rollbackOptions struct {
	hostFlags
	Env      string
	SHA      string
	LockWait time.Duration
	Parallel int
}

// newRollbackCmd builds the command; runF, when not nil, runs instead of runRollback (tests).
func newRollbackCmd(g *Globals, runF func(context.Context, *rollbackOptions) error) *cobra.Command {
	if runF == nil {
		runF = func(ctx context.Context, o *rollbackOptions) error { return runRollback(ctx, g, o) }
	}
	o := &rollbackOptions{}
	cmd := &cobra.Command{
		Use:   "rollback ENV [SHA]",
		Short: "Make an earlier release current again on an environment's hosts",
		Long: `Go back to an earlier release on every host of the environment ENV: by default
the release that was current before the current one (so two rollbacks in a row go
back and forth), or SHA: a release's name as shipctl history lists it
(<sha>-<hash>: the commit's sha, and a hash of its resolved compose file, since
one commit deployed with another environment is another release), or any unique
prefix of one, the commit's sha included.

The release's compose file and images are still on the hosts: nothing is pulled
or uploaded, and pre-deploy jobs do not run. Each host applies the release,
waits until it is healthy and switches current to it; a host that fails puts the
release it was on back (exit 4, or 5 when that fails too). The hosts are reached
and locked first (a host locked by someone else: exit 6, nothing asked); then,
where the environment says confirm: true, the plan is shown and a y/N answered
(--yes for CI); there is no grace period.`,
		Example: `  shipctl rollback prod
  shipctl rollback prod 1a2b3c4 --yes`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Env = args[0]
			if len(args) == 2 {
				o.SHA = args[1]
			}
			return runF(cmd.Context(), o)
		},
	}
	f := cmd.Flags()
	f.DurationVar(&o.LockWait, "lock-wait", 0, "wait this long for a host locked by another deploy (default: fail at once, exit 6)")
	f.IntVar(&o.Parallel, "parallel", 0, "hosts rolled back at once (default: parallel in ship.yaml; 0 there: all)")
	o.hostFlags.register(cmd)
	return cmd
}

func runRollback(ctx context.Context, g *Globals, o *rollbackOptions) error {
	if o.Parallel < 0 {
		return usageErrorf("--parallel %d: want 0 (all) or more", o.Parallel)
	}
	cfg, env, p, h, err := g.environment(o.Env, o.hostFlags)
	if err != nil {
		return err
	}
	sum, err := deploy.Rollback(ctx, deploy.RollbackOptions{
		Target:   h.target,
		SHA:      o.SHA,
		LockWait: o.LockWait,
		Parallel: o.Parallel,
		Confirm:  confirmer(g, p, env, "rollback", false),
		Notify:   notifier(cfg),
	})
	renderSummary(p, "rollback", sum)
	return g.brief(err)
}
