package cli

import (
	"context"

	"github.com/spf13/cobra"

	"github.com/shipdeploy/ship/pkg/deploy"
	"github.com/shipdeploy/ship/pkg/engine"
)

type logsOptions struct {
	hostFlags
	Env        string
	Services   []string
	Follow     bool
	Tail       string
	Timestamps bool
}

// newLogsCmd builds the command; runF, when not nil, runs instead of runLogs (tests).
func newLogsCmd(g *Globals, runF func(context.Context, *logsOptions) error) *cobra.Command {
	if runF == nil {
		runF = func(ctx context.Context, o *logsOptions) error { return runLogs(ctx, g, o) }
	}
	o := &logsOptions{}
	cmd := &cobra.Command{
		Use:   "logs ENV [SERVICE...]",
		Short: "Show the app's container logs from an environment's hosts",
		Long: `Show the logs of the app's containers on every host of the environment ENV (of
the services named, or all), each line prefixed with its service, and its host
when there are several. With -f, keep following them until Ctrl-C. Values of the
environment's env_file are shown as [redacted].

A pre-deploy job's container is gone once its release runs: naming the job shows
its last run instead (the release, its exit code and its last 50 lines, kept in
that release's release.json).`,
		Example: `  shipctl logs prod
  shipctl logs prod web -f --tail 50
  shipctl logs prod migrate`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Env, o.Services = args[0], args[1:]
			return runF(cmd.Context(), o)
		},
	}
	f := cmd.Flags()
	f.BoolVarP(&o.Follow, "follow", "f", false, "keep following the logs until Ctrl-C")
	f.StringVar(&o.Tail, "tail", "100", `lines to show from the end of each container's log ("all": all)`)
	f.BoolVarP(&o.Timestamps, "timestamps", "t", false, "show the engine's timestamp of each line")
	o.hostFlags.register(cmd)
	return cmd
}

func runLogs(ctx context.Context, g *Globals, o *logsOptions) error {
	_, env, p, h, err := g.environment(o.Env, o.hostFlags)
	if err != nil {
		return err
	}
	many := len(env.Hosts) > 1
	err = deploy.Logs(ctx, h.target, engine.LogOptions{
		Services: o.Services, Follow: o.Follow, Tail: o.Tail, Timestamps: o.Timestamps,
	}, func(host string, l engine.LogLine) {
		label := l.Service
		if many {
			label = host + " " + l.Service
		}
		p.Prefixed("log", map[string]any{"host": host, "service": l.Service, "stream": l.Stream, "line": l.Text}, label, l.Text)
	})
	if err != nil && ctx.Err() != nil && o.Follow {
		return nil
	}
	return err
}
