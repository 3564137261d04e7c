package cli

import (
	"context"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/shipdeploy/ship/pkg/deploy"
	"github.com/shipdeploy/ship/pkg/release"
	"github.com/shipdeploy/ship/pkg/term"
)

type historyOptions struct {
	hostFlags
	Env   string
	Limit int
}

// newHistoryCmd builds the command; runF, when not nil, runs instead of runHistory (tests).
func newHistoryCmd(g *Globals, runF func(context.Context, *historyOptions) error) *cobra.Command {
	if runF == nil {
		runF = func(ctx context.Context, o *historyOptions) error { return runHistory(ctx, g, o) }
	}
	o := &historyOptions{}
	cmd := &cobra.Command{
		Use:   "history ENV",
		Short: "List the releases on each host of an environment, and its audit log",
		Long: `List, for every host of the environment ENV, the releases it keeps (newest
first; the current one marked *), with when and by whom each was deployed and
how it ended, then the last lines of the host's audit.log: every deploy,
rollback, lock and unlock.`,
		Example: `  shipctl history prod
  shipctl history prod -n 100 --json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Env = args[0]
			return runF(cmd.Context(), o)
		},
	}
	cmd.Flags().IntVarP(&o.Limit, "lines", "n", 20, "audit.log lines to show per host (0: all)")
	o.hostFlags.register(cmd)
	return cmd
}

func runHistory(ctx context.Context, g *Globals, o *historyOptions) error {
	if o.Limit < 0 {
		return usageErrorf("--lines %d: want 0 (all) or more", o.Limit)
	}
	_, env, p, h, err := g.environment(o.Env, o.hostFlags)
	if err != nil {
		return err
	}
	hosts, err := deploy.History(ctx, h.target, o.Limit)
	if err != nil {
		return err
	}
	failed := 0
	for _, hh := range hosts {
		if hh.Err != nil {
			failed++
		}
		renderHistory(g, p, hh)
	}
	if failed > 0 {
		return fmt.Errorf("history of %s: %d of %d host(s) could not be read", env.Name, failed, len(hosts))
	}
	return nil
}

func renderHistory(g *Globals, p *term.Printer, hh deploy.HostHistory) {
	if g.JSON {
		if hh.Err != nil {
			p.Event("history", map[string]any{"host": hh.Host, "error": hh.Err.Error()}, "")
			return
		}
		for _, r := range hh.Releases {
			p.Event("release", map[string]any{"host": hh.Host, "current": r.SHA == hh.Current, "release": r}, "")
		}
		for _, a := range hh.Audit {
			p.Event("audit_line", map[string]any{"host": hh.Host, "entry": a}, "")
		}
		return
	}
	var b strings.Builder
	b.WriteString(hh.Host + ":")
	if hh.Err != nil {
		fmt.Fprintf(&b, " cannot read it: %v", hh.Err)
		p.Event("history", nil, b.String())
		return
	}
	if len(hh.Releases) == 0 {
		b.WriteString("\n  no releases")
	}
	width := 12
	for _, r := range hh.Releases {
		width = max(width, len(release.Short(r.SHA)))
	}
	for _, r := range hh.Releases {
		mark := " "
		if r.SHA == hh.Current {
			mark = "*"
		}
		when := "-"
		if !r.Time.IsZero() {
			when = r.Time.Local().Format("2006-01-02 15:04:05")
		}
		fmt.Fprintf(&b, "\n %s %-*s  %s  %-9s %s", mark, width, release.Short(r.SHA), when, r.Result, r.Who)
		if r.Subject != "" {
			fmt.Fprintf(&b, "  %q", r.Subject)
		}
	}
	if len(hh.Audit) > 0 {
		b.WriteString("\n  audit.log:")
	}
	for _, a := range hh.Audit {
		fmt.Fprintf(&b, "\n    %s  %-8s %-14s", a.Time.Local().Format("2006-01-02 15:04:05"), a.Event, a.Result)
		if a.SHA != "" {
			fmt.Fprintf(&b, " %s", release.Short(a.SHA))
		}
		if a.Prev != "" && a.Prev != a.SHA {
			fmt.Fprintf(&b, " (from %s)", release.Short(a.Prev))
		}
		fmt.Fprintf(&b, " by %s", a.Who)
		if a.Reason != "" {
			fmt.Fprintf(&b, ": %s", a.Reason)
		}
		if a.Error != "" {
			first, _, _ := strings.Cut(a.Error, "\n")
			fmt.Fprintf(&b, ": %s", first)
		}
	}
	p.Event("history", nil, b.String())
}
