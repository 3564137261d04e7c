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

type statusOptions struct {
	hostFlags
	Env string
}

// newStatusCmd builds the command; runF, when not nil, runs instead of runStatus (tests).
func newStatusCmd(g *Globals, runF func(context.Context, *statusOptions) error) *cobra.Command {
	if runF == nil {
		runF = func(ctx context.Context, o *statusOptions) error { return runStatus(ctx, g, o) }
	}
	o := &statusOptions{}
	cmd := &cobra.Command{
		Use:   "status ENV",
		Short: "Show what runs on each host of an environment",
		Long: `Show, for every host of the environment ENV, the release current points at,
when and by whom it was deployed, the app's containers with their state and
health, and who holds the host's lock, if anyone. Each container is compared
with the current release: one that runs another configuration (a deploy cut off
before it switched current, a container changed by hand), or a service of the
release without a container, is shown as drift with the command that fixes it,
and makes the exit code 1. A host that cannot be reached is shown with the
reason, and makes the exit code 1 too. Where the environment has
agent: true, shipd's routes of the app are shown too (listen address, the
container it routes to, its release, since when); a route with no live
container (it answers 503) makes the exit code 1 too. shipctl agent status shows
all of shipd.`,
		Example: `  shipctl status prod
  shipctl status prod --json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Env = args[0]
			return runF(cmd.Context(), o)
		},
	}
	o.hostFlags.register(cmd)
	return cmd
}

func runStatus(ctx context.Context, g *Globals, o *statusOptions) error {
	cfg, env, p, h, err := g.environment(o.Env, o.hostFlags)
	if err != nil {
		return err
	}
	hosts, err := deploy.Status(ctx, h.target)
	if err != nil {
		return err
	}
	app := env.ProjectName(cfg.App) // shipd knows the app by its compose project
	for _, st := range hosts {
		renderStatus(g, p, app, st)
	}
	return statusErr(env.Name, app, hosts)
}

// statusErr makes status exit 1 when a host could not be read, one of shipd's
// routes of the app has no live container (it answers 503), or a host's containers
// do not run its current release.
func statusErr(env, app string, hosts []deploy.HostStatus) error {
	failed, down, drifted := 0, 0, 0
	for _, st := range hosts {
		if st.Err != nil {
			failed++
		}
		if len(st.Drift) > 0 {
			drifted++
		}
		if st.Agent != nil {
			for _, r := range appRoutes(st.Agent, app) {
				if r.Target == "" {
					down++
				}
			}
		}
	}
	if failed > 0 {
		return fmt.Errorf("status of %s: %d of %d host(s) could not be read", env, failed, len(hosts))
	}
	if down > 0 {
		return fmt.Errorf("status of %s: %d route(s) of shipd have no live container and answer 503", env, down)
	}
	if drifted > 0 {
		return fmt.Errorf("status of %s: on %d of %d host(s) the containers do not run the current release", env, drifted, len(hosts))
	}
	return nil
}

func renderStatus(g *Globals, p *term.Printer, app string, st deploy.HostStatus) {
	if g.JSON {
		renderStatusJSON(p, app, st)
		return
	}
	var b strings.Builder
	b.WriteString(st.Host)
	if st.Err != nil {
		fmt.Fprintf(&b, ": cannot read it: %v", st.Err)
		p.Event("status", nil, b.String())
		return
	}
	switch {
	case st.Current == "":
		b.WriteString(": no release")
	case st.Release != nil:
		r := st.Release
		fmt.Fprintf(&b, ": %s", release.Short(st.Current))
		if r.Subject != "" {
			fmt.Fprintf(&b, " %q", r.Subject)
		}
		when := r.CurrentSince
		if when.IsZero() {
			when = r.Time
		}
		fmt.Fprintf(&b, ", since %s by %s", when.Local().Format("2006-01-02 15:04:05"), r.Who)
		if r.From != "" {
			fmt.Fprintf(&b, " from %s", r.From)
		}
	default:
		fmt.Fprintf(&b, ": %s (no release.json)", release.Short(st.Current))
	}
	width := 0
	for _, c := range st.Containers {
		width = max(width, len(c.Service))
	}
	for _, c := range st.Containers {
		state := c.State
		if c.Health != "" {
			state += " (" + c.Health + ")"
		} else if c.State == "exited" {
			state += fmt.Sprintf(" (%d)", c.ExitCode)
		}
		fmt.Fprintf(&b, "\n  %-*s  %-20s  %s", width, c.Service, state, c.Image)
	}
	if len(st.Containers) == 0 {
		b.WriteString("\n  no containers")
	}
	if len(st.Drift) > 0 {
		b.WriteString("\n  drift: the containers do not run the current release:")
		for _, d := range st.Drift {
			b.WriteString("\n    " + d.Msg)
		}
		b.WriteString("\n  to fix it: " + st.Fix)
	}
	if st.Lock != nil {
		fmt.Fprintf(&b, "\n  locked by %s", st.Lock)
	}
	if st.Agent != nil {
		fmt.Fprintf(&b, "\n  shipd %s, up %s", shipdVersion(st.Agent.Version), st.Agent.Uptime.Std())
		routes := appRoutes(st.Agent, app)
		if len(routes) == 0 {
			b.WriteString(": no routes for " + app)
		}
		writeRoutes(&b, "    ", routes, false)
	}
	if st.AgentErr != nil {
		fmt.Fprintf(&b, "\n  shipd: %v", st.AgentErr)
	}
	p.Event("status", nil, b.String())
}

func renderStatusJSON(p *term.Printer, app string, st deploy.HostStatus) {
	fields := map[string]any{"host": st.Host, "current": st.Current}
	if st.Release != nil {
		fields["deployed_at"] = st.Release.CurrentSince
		fields["who"] = st.Release.Who
		fields["from"] = st.Release.From
		fields["subject"] = st.Release.Subject
	}
	cs := make([]map[string]any, 0, len(st.Containers))
	for _, c := range st.Containers {
		cs = append(cs, map[string]any{"name": c.Name, "service": c.Service, "image": c.Image, "state": c.State, "health": c.Health, "exit_code": c.ExitCode})
	}
	fields["containers"] = cs
	if len(st.Drift) > 0 {
		ds := make([]map[string]any, 0, len(st.Drift))
		for _, d := range st.Drift {
			ds = append(ds, map[string]any{"service": d.Service, "container": d.Container, "release": d.Release, "msg": d.Msg})
		}
		fields["drift"] = ds
		fields["fix"] = st.Fix
	}
	if st.Lock != nil {
		fields["lock"] = st.Lock
	}
	if st.Agent != nil {
		fields["agent"] = map[string]any{"version": st.Agent.Version, "uptime": st.Agent.Uptime, "routes": appRoutes(st.Agent, app)}
	}
	if st.AgentErr != nil {
		fields["agent_error"] = st.AgentErr.Error()
	}
	if st.Err != nil {
		fields["error"] = st.Err.Error()
	}
	p.Event("status", fields, "")
}
