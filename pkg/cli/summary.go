package cli

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/shipdeploy/ship/pkg/config"
	"github.com/shipdeploy/ship/pkg/deploy"
	"github.com/shipdeploy/ship/pkg/event"
	"github.com/shipdeploy/ship/pkg/release"
	"github.com/shipdeploy/ship/pkg/term"
)

// renderSummary says which host is on which release at the end of a deploy or
// rollback, and how long each host took.
func renderSummary(p *term.Printer, verb string, sum *deploy.Summary) {
	if sum == nil || len(sum.Hosts) == 0 {
		return
	}
	p.Event(verb+"_result", summaryFields(sum), summaryText(verb, sum))
}

// renderDeployResult is a deploy's last event: with --json always one, carrying the
// exit code (and the error) whatever happened; as text the summary of its hosts.
func renderDeployResult(g *Globals, p *term.Printer, sum *deploy.Summary, err error) {
	if !g.JSON {
		renderSummary(p, "deploy", sum)
		return
	}
	fields := map[string]any{"hosts": []map[string]any{}}
	if sum != nil {
		fields = summaryFields(sum)
	}
	fields["exit_code"] = exitCode(err)
	if err != nil {
		fields["error"] = err.Error()
	}
	p.Event("deploy_result", fields, "")
}

func summaryFields(sum *deploy.Summary) map[string]any {
	hosts := make([]map[string]any, 0, len(sum.Hosts))
	for _, h := range sum.Hosts {
		m := map[string]any{"host": h.Host, "result": h.Result, "current": h.Current, "seconds": seconds(h.Took)}
		if h.Err != nil {
			m["error"] = h.Err.Error()
		}
		hosts = append(hosts, m)
	}
	return map[string]any{"sha": sum.SHA, "env": sum.Env, "hosts": hosts}
}

func summaryText(verb string, sum *deploy.Summary) string {
	counts := map[event.Result]int{}
	width := 0
	for _, h := range sum.Hosts {
		counts[h.Result]++
		width = max(width, len(h.Host))
	}
	var parts []string
	for _, r := range []event.Result{deploy.ResultDeployed, deploy.ResultFailed, deploy.ResultRestoreFailed, deploy.ResultLocked, deploy.ResultSkipped, deploy.ResultUnknown} {
		if counts[r] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", counts[r], r))
		}
	}
	what := verb
	if sum.SHA != "" {
		what += " of " + release.Short(sum.SHA)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "==> %s to %s: %s", what, sum.Env, strings.Join(parts, ", "))
	for _, h := range sum.Hosts {
		on := "no release"
		if h.Current != "" {
			on = release.Short(h.Current)
		}
		text := resultText(h.Result)
		if h.Result == deploy.ResultUnknown {
			on = "? (was " + on + ")"
			text = "unknown, still running on the host: `shipctl agent status " + sum.Env + "` shows it"
		}
		fmt.Fprintf(&b, "\n  %-*s  on %-12s  %s", width, h.Host, on, text)
		if h.Took > 0 {
			fmt.Fprintf(&b, " (%s)", h.Took.Round(100*time.Millisecond))
		}
	}
	return b.String()
}

func seconds(d time.Duration) float64 {
	return float64(d.Round(time.Millisecond)) / float64(time.Second)
}

func resultText(r event.Result) string {
	switch r {
	case deploy.ResultFailed:
		return "failed: runs its previous release"
	case deploy.ResultRestoreFailed:
		return "FAILED, and putting the previous release back failed too: check the host"
	case deploy.ResultLocked:
		return "locked by another deploy: nothing changed"
	case deploy.ResultSkipped:
		return "skipped: nothing changed"
	}
	return string(r)
}

// graceFlag is --grace: the environment's grace period replaced for one run; 0 skips
// the countdown. SHIP_GRACE does the same where the flag is not given.
type graceFlag struct {
	Grace    time.Duration
	GraceSet bool
}

func (f *graceFlag) register(cmd *cobra.Command) {
	cmd.Flags().DurationVar(&f.Grace, "grace", 0, "replace the environment's grace period for this run; 0 skips the countdown (or SHIP_GRACE)")
	prev := cmd.PreRunE
	cmd.PreRunE = func(c *cobra.Command, args []string) error {
		f.GraceSet = c.Flags().Changed("grace")
		if prev != nil {
			return prev(c, args)
		}
		return nil
	}
}

// apply sets env's grace period from --grace or SHIP_GRACE. It returns what skipped
// a countdown the environment has ("" none skipped).
func (f *graceFlag) apply(g *Globals, env *config.Environment) (string, error) {
	d, by := f.Grace, "--grace 0"
	if !f.GraceSet {
		v := strings.TrimSpace(g.IO.Getenv("SHIP_GRACE"))
		if v == "" {
			return "", nil
		}
		var err error
		if d, err = time.ParseDuration(v); err != nil || d < 0 {
			return "", usageErrorf("SHIP_GRACE=%q: want a duration such as 30s, or 0 to skip the countdown", v)
		}
		by = "SHIP_GRACE=0"
	}
	if d < 0 {
		return "", usageErrorf("grace %s: want a duration of 0 or more", d)
	}
	skipped := ""
	if d == 0 && env.Grace > 0 {
		skipped = fmt.Sprintf("the grace period of %s skipped (%s)", env.Grace, by)
	}
	env.Grace = d
	return skipped, nil
}

// withSkippedGrace says, after the confirmation, that the countdown was skipped.
func withSkippedGrace(p *term.Printer, confirm func(context.Context, deploy.Preview) error, skipped string) func(context.Context, deploy.Preview) error {
	if skipped == "" {
		return confirm
	}
	return func(ctx context.Context, pv deploy.Preview) error {
		if err := confirm(ctx, pv); err != nil {
			return err
		}
		p.Event(string(deploy.StepGrace), map[string]any{"seconds": 0, "skipped": true}, "==> no countdown: "+skipped)
		return nil
	}
}
