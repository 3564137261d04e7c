package cli

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/shipdeploy/ship/pkg/deploy"
)

type lockOptions struct {
	hostFlags
	Env    string
	Reason string
}

// newLockCmd builds the command; runF, when not nil, runs instead of runLock (tests).
func newLockCmd(g *Globals, runF func(context.Context, *lockOptions) error) *cobra.Command {
	if runF == nil {
		runF = func(ctx context.Context, o *lockOptions) error { return runLock(ctx, g, o) }
	}
	o := &lockOptions{}
	cmd := &cobra.Command{
		Use:   "lock ENV",
		Short: "Lock an environment's hosts against deploys",
		Long: `Take the deploy lock on every host of the environment ENV, for a person: deploys
and rollbacks are refused (exit 6, or they wait with --lock-wait) until shipctl
unlock. A host locked already makes it fail, and releases the locks it took.`,
		Example: `  shipctl lock prod --reason "database migration, ask alice"`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Env = args[0]
			return runF(cmd.Context(), o)
		},
	}
	cmd.Flags().StringVar(&o.Reason, "reason", "", "why, for whoever finds the lock")
	o.hostFlags.register(cmd)
	return cmd
}

func runLock(ctx context.Context, g *Globals, o *lockOptions) error {
	_, env, p, h, err := g.environment(o.Env, o.hostFlags)
	if err != nil {
		return err
	}
	if err := deploy.Lock(ctx, h.target, o.Reason); err != nil {
		return err
	}
	p.Event("locked", map[string]any{"env": env.Name, "hosts": len(env.Hosts), "reason": o.Reason},
		fmt.Sprintf("==> locked %s (%d host(s)); shipctl unlock %s releases it", env.Name, len(env.Hosts), env.Name))
	return nil
}

type unlockOptions struct {
	hostFlags
	Env   string
	Force bool
}

// newUnlockCmd builds the command; runF, when not nil, runs instead of runUnlock (tests).
func newUnlockCmd(g *Globals, runF func(context.Context, *unlockOptions) error) *cobra.Command {
	if runF == nil {
		runF = func(ctx context.Context, o *unlockOptions) error { return runUnlock(ctx, g, o) }
	}
	o := &unlockOptions{}
	cmd := &cobra.Command{
		Use:   "unlock ENV",
		Short: "Release the deploy lock of an environment's hosts",
		Long: `Remove the deploy lock of every host of the environment ENV that has one. A lock
someone else holds (another user@host: their deploy may still be running) is
removed only after a yes on the terminal, or with --force (or --yes).`,
		Example: `  shipctl unlock prod
  shipctl unlock prod --force`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Env = args[0]
			return runF(cmd.Context(), o)
		},
	}
	cmd.Flags().BoolVar(&o.Force, "force", false, "remove locks held by others without asking")
	o.hostFlags.register(cmd)
	return cmd
}

func runUnlock(ctx context.Context, g *Globals, o *unlockOptions) error {
	_, env, p, h, err := g.environment(o.Env, o.hostFlags)
	if err != nil {
		return err
	}
	uo := deploy.UnlockOptions{Force: o.Force || g.Yes}
	if g.IO.InTTY && !g.JSON {
		uo.Confirm = func(ctx context.Context, others []deploy.HostLock) error {
			var lines []string
			for _, l := range others {
				lines = append(lines, fmt.Sprintf("  %s: %s", l.Host, l.Holder))
			}
			fmt.Fprintf(g.IO.ErrOut, "Locks held by someone else (their deploy may still be running):\n%s\n", strings.Join(lines, "\n"))
			ok, err := g.IO.AskYesNo(ctx, "Remove them anyway?")
			if err != nil {
				return err
			}
			if !ok {
				return fmt.Errorf("unlock not confirmed: %w", context.Canceled)
			}
			return nil
		}
	}
	removed, err := deploy.Unlock(ctx, h.target, uo)
	if err != nil {
		if errors.Is(err, deploy.ErrLocked) {
			return fmt.Errorf("%w\nhint: run shipctl unlock %s --force to remove it anyway", err, env.Name)
		}
		return err
	}
	text := fmt.Sprintf("==> unlocked %s: %d host(s) had a lock", env.Name, len(removed))
	if len(removed) == 0 {
		text = fmt.Sprintf("==> %s: no host is locked", env.Name)
	}
	p.Event("unlocked", map[string]any{"env": env.Name, "hosts": len(removed)}, text)
	return nil
}
