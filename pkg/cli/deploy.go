package cli

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/shipdeploy/ship/pkg/config"
	"github.com/shipdeploy/ship/pkg/deploy"
	"github.com/shipdeploy/ship/pkg/release"
	"github.com/shipdeploy/ship/pkg/term"
	"github.com/shipdeploy/ship/pkg/testrun"
	"github.com/shipdeploy/ship/pkg/vcs"
)

type deployOptions struct {
	hostFlags
	Env        string
	SHA        string
	LockWait   time.Duration
	Parallel   int
	Untested   bool
	AllowDirty bool
	graceFlag

	// access and conn, when set, are the hosts ship opened and locked before it
	// built: the deploy goes over them.
	access *hostAccess
	conn   *deploy.Conn
}

// newDeployCmd builds the command; runF, when not nil, runs instead of runDeploy (tests).
func newDeployCmd(g *Globals, runF func(context.Context, *deployOptions) error) *cobra.Command {
	if runF == nil {
		runF = func(ctx context.Context, o *deployOptions) error { return runDeploy(ctx, g, o) }
	}
	o := &deployOptions{}
	cmd := &cobra.Command{
		Use:   "deploy ENV",
		Short: "Deploy a pushed, tested commit to an environment's hosts",
		Long: `Deploy the checked-out commit (or --sha) to every host of the environment ENV
over SSH: without an agent, or through shipd where the environment has agent: true.

Before anything interactive: the images of the commit must be in the registry
(shipctl push), every host must answer over SSH with its Docker engine, and the
lock is taken on every host (a host locked by another deploy: exit 6 at once, or
wait with --lock-wait); the lock is held until the deploy ends. Then the engine
must be able to run the release. Where the environment says confirm: true, the
plan of each host is shown and a y/N answered (--yes answers it, for CI); where
it has a grace period, a countdown follows (--grace 0 or SHIP_GRACE=0 skips it),
during which Ctrl-C cancels with nothing changed and the locks released.

Then each host (parallel: at once) gets
releases/<sha>/docker-compose.yml, pulls the images, runs the pre-deploy jobs,
starts the release (a pre-deploy job's output shown as it runs, its last lines
kept in release.json), waits until it is healthy and switches current to it. A
host that fails puts its previous release back: exit 4, or 5 when that fails too.
With --json the last event is one deploy_result with exit_code and each host's
result and seconds.

With agent: true, shipd must answer on every host before anything changes
(shipctl agent install ENV), and the compose file must suit a blue-green swap
(a routed service has no ports:, container_name, network_mode or writable named
volume). After the upload, shipctl asks shipd, through the same SSH connection,
to deploy the release and shows its events: the new containers start beside the
old ones, are health-checked, and traffic moves to them in one step. A new
container that fails its health check never gets traffic: the old one keeps
serving, and the deploy exits 4 with the container's last log lines. When
shipd's answer is cut (shipd restarted, the connection broke), shipctl asks
shipd how the deploy ended (for up to 2 minutes) and exits accordingly; shipd
puts the previous release back after a restart in the middle of a deploy, so
that is exit 4. SHIP_AGENT_SOCKET names shipd's socket on the hosts when it is
not /run/shipd/shipd.sock.

SSH: keys from ssh-agent, SHIP_SSH_KEY (a private key's text) and ~/.ssh; host
keys from ~/.ssh/known_hosts and the environment's known_hosts file.`,
		Example: `  shipctl deploy staging
  shipctl deploy prod --yes --json
  shipctl deploy prod --yes --grace 0
  shipctl deploy prod --sha 1a2b3c4 --lock-wait 5m`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Env = args[0]
			return runF(cmd.Context(), o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.SHA, "sha", "", "deploy this commit instead of HEAD (its images must be pushed)")
	f.DurationVar(&o.LockWait, "lock-wait", 0, "wait this long for a host locked by another deploy (default: fail at once, exit 6)")
	f.IntVar(&o.Parallel, "parallel", 0, "hosts deployed at once (default: parallel in ship.yaml; 0 there: all)")
	f.BoolVar(&o.Untested, "untested", false, "deploy even though no passing test run is recorded for the commit")
	f.BoolVar(&o.AllowDirty, "allow-dirty", false, "deploy a build of uncommitted changes (<sha>-dirty-<hash>)")
	o.graceFlag.register(cmd)
	o.hostFlags.register(cmd)
	return cmd
}

func runDeploy(ctx context.Context, g *Globals, o *deployOptions) (err error) {
	p := newPrinter(g)
	var sum *deploy.Summary
	defer func() {
		renderDeployResult(g, p, sum, err)
		err = g.brief(err)
	}()
	sum, err = deployRelease(ctx, g, p, o)
	return err
}

// deployRelease is shipctl deploy without its last event.
func deployRelease(ctx context.Context, g *Globals, p *term.Printer, o *deployOptions) (*deploy.Summary, error) {
	if o.Parallel < 0 {
		return nil, usageErrorf("--parallel %d: want 0 (all) or more", o.Parallel)
	}
	if o.LockWait < 0 {
		return nil, usageErrorf("--lock-wait %s: want a duration of 0 or more", o.LockWait)
	}
	cfg, err := g.loadConfig()
	if err != nil {
		return nil, err
	}
	env, err := cfg.Env(o.Env)
	if err != nil {
		return nil, err
	}
	if err := requireRegistry(cfg); err != nil {
		return nil, err
	}
	skip, err := o.graceFlag.apply(g, env)
	if err != nil {
		return nil, err
	}
	if err := canConfirm(g, env); err != nil {
		return nil, err
	}
	info, err := head(ctx, cfg)
	if err != nil {
		return nil, err
	}

	version, subject := info.Version(), info.Subject
	var composeAt []byte
	if o.SHA != "" {
		sha, subj, err := vcs.Commit(ctx, cfg.Dir, o.SHA)
		if err != nil {
			return nil, withCode(ExitUsage, err)
		}
		version, subject = sha, subj
		if sha != info.SHA || !info.Clean {
			// What that commit runs is its own compose file, not the working tree's.
			if composeAt, err = vcs.FileAt(ctx, cfg.Dir, sha, cfg.Path(cfg.Compose)); err != nil {
				return nil, err
			}
		}
	} else if err := checkDirty(p, info, o.AllowDirty, "deploy"); err != nil {
		return nil, err
	}
	if err := checkDeployTested(p, info, version, o.Untested); err != nil {
		return nil, err
	}
	h := o.access
	if h == nil {
		if h, err = newHostAccess(g, cfg, env, o.hostFlags, p); err != nil {
			return nil, err
		}
	}
	rel, err := deploy.Prepare(ctx, deploy.PrepareOptions{
		Config: cfg, Env: env, SHA: version, Subject: subject, Compose: composeAt,
		Environ: environ(g), LocalRoots: []string{info.Top}, Redactor: h.redact,
	})
	if err != nil {
		return nil, err
	}
	return deploy.Run(ctx, deploy.Options{
		Target:   h.target,
		Conn:     o.conn,
		Release:  rel,
		Registry: g.Registry(h.keychain),
		From:     vcs.Origin(ctx, cfg.Dir),
		LockWait: o.LockWait,
		Parallel: o.Parallel,
		Confirm:  withSkippedGrace(p, confirmer(g, p, env, "deploy", true), skip),
		Notify:   notifier(cfg),
	})
}

// checkDeployTested refuses a version no test run passed for, unless --untested.
func checkDeployTested(p *term.Printer, info vcs.Info, version string, untested bool) error {
	_, passed, err := testrun.Passed(info, version)
	if err != nil {
		return err
	}
	if passed {
		return nil
	}
	if !untested {
		return fmt.Errorf("no passing test run is recorded for %s here: run `shipctl test` on it first, or pass --untested to deploy it anyway", release.Short(version))
	}
	p.Warn(fmt.Sprintf("deploying %s UNTESTED: no passing `shipctl test` run is recorded for it (--untested)", release.Short(version)))
	return nil
}

// renderDeployEvent writes one event of pkg/deploy: "==> msg" for the command, "-->
// host: msg" for a host, warnings on stderr.
func renderDeployEvent(g *Globals, p *term.Printer, e deploy.Event) {
	if e.Level == "" {
		e.Level = deploy.LevelInfo
	}
	if e.Step == deploy.StepJobOutput {
		// A job's output as it runs, prefixed as the test run's logs are.
		label := e.Service
		if e.Host != "" {
			label = e.Host + " " + e.Service
		}
		p.Prefixed(string(e.Step), map[string]any{"host": e.Host, "service": e.Service, "line": e.Msg}, label, e.Msg)
		return
	}
	if !g.JSON && e.Level == deploy.LevelError && e.Step == deploy.StepLock {
		// A lock that stops the command is its error, printed once at the end.
		return
	}
	if g.JSON {
		fields := map[string]any{"msg": e.Msg, "level": e.Level}
		if e.Host != "" {
			fields["host"] = e.Host
		}
		if e.Service != "" {
			fields["service"] = e.Service
		}
		p.Event(string(e.Step), fields, "")
		return
	}
	msg := e.Msg
	if e.Service != "" && !strings.Contains(msg, e.Service) {
		msg = e.Service + ": " + msg
	}
	if e.Host != "" {
		msg = e.Host + ": " + msg
	}
	switch {
	case e.Level == deploy.LevelWarn:
		p.Warn(msg)
	case e.Level == deploy.LevelError && e.Step != deploy.StepDone:
		if e.Host != "" {
			g.failures().add(e.Host)
		}
		p.Event(string(e.Step), nil, "--> FAILED "+msg)
	case e.Host == "":
		p.Event(string(e.Step), nil, "==> "+msg)
	default:
		p.Event(string(e.Step), nil, "--> "+msg)
	}
}

// confirmer shows the preview of a deploy or rollback, asks when the environment
// wants it, and counts the grace period down (when grace is true). It runs before
// the first change to any host: its error, or Ctrl-C, stops with nothing touched.
func confirmer(g *Globals, p *term.Printer, env *config.Environment, verb string, grace bool) func(context.Context, deploy.Preview) error {
	return func(ctx context.Context, pv deploy.Preview) error {
		renderPreview(g, p, verb, pv)
		if env.Confirm && g.Yes {
			p.Event("confirm", map[string]any{"answer": "yes", "by": "--yes"}, "==> confirmed by --yes")
		}
		if env.Confirm && !g.Yes {
			if err := canConfirm(g, env); err != nil {
				return err
			}
			ok, err := g.IO.AskYesNo(ctx, fmt.Sprintf("%s %s to %s?", strings.ToUpper(verb[:1])+verb[1:], releaseLabel(pv), env.Name))
			if err != nil {
				return err
			}
			if !ok {
				return fmt.Errorf("%s not confirmed: %w", verb, context.Canceled)
			}
		}
		if !grace || env.Grace <= 0 {
			return nil
		}
		return countdown(ctx, g, p, env.Grace)
	}
}

// canConfirm says whether the confirmation env asks for can be asked: checked before
// anything slow, so that a CI run without --yes fails at once, not after the build.
func canConfirm(g *Globals, env *config.Environment) error {
	if env.Confirm && !g.Yes && (!g.IO.InTTY || g.JSON) {
		return usageErrorf("%s asks for a confirmation (confirm: true) and there is no terminal to ask on: run with --yes", env.Name)
	}
	return nil
}

func releaseLabel(pv deploy.Preview) string {
	if pv.SHA == "" {
		return "each host's previous release"
	}
	return release.Short(pv.SHA)
}

func renderPreview(g *Globals, p *term.Printer, verb string, pv deploy.Preview) {
	if g.JSON {
		for _, h := range pv.Hosts {
			steps := make([]map[string]any, 0, len(h.Plan.Steps))
			for _, s := range h.Plan.Steps {
				step := map[string]any{"service": s.Service, "action": string(s.Action)}
				if s.From != "" {
					step["from"] = s.From
				}
				if s.To != "" {
					step["to"] = s.To
				}
				if s.Why != "" {
					step["why"] = s.Why
				}
				steps = append(steps, step)
			}
			p.Event(string(deploy.StepPlan), map[string]any{"host": h.Host, "current": h.Current, "sha": pv.SHA, "steps": steps}, "")
		}
		return
	}
	head := fmt.Sprintf("==> %s %s", verb, releaseLabel(pv))
	if pv.Subject != "" {
		head += fmt.Sprintf(" %q", pv.Subject)
	}
	head += fmt.Sprintf(" to %s (%d host(s)):", pv.Env, len(pv.Hosts))
	var b strings.Builder
	b.WriteString(head)
	for _, h := range pv.Hosts {
		b.WriteString("\n")
		current := "no release yet"
		if h.Current != "" {
			current = "current " + release.Short(h.Current)
		}
		text := strings.TrimRight(h.Plan.Format(), "\n")
		first, rest, _ := strings.Cut(text, "\n")
		fmt.Fprintf(&b, "%s (%s)\n%s", strings.TrimSuffix(first, ":"), current, rest)
		if !h.Plan.Changes() && len(h.Plan.Steps) > 0 {
			b.WriteString("\n  (no change: every service runs as wanted)")
		}
	}
	p.Event(string(deploy.StepPlan), nil, b.String())
}

// countdown waits out the grace period. On a terminal it counts down on one line of
// stderr; otherwise it says once how long it waits. Ctrl-C ends it (and the command).
func countdown(ctx context.Context, g *Globals, p *term.Printer, grace time.Duration) error {
	secs := int(grace.Round(time.Second).Seconds())
	p.Event(string(deploy.StepGrace), map[string]any{"seconds": secs},
		fmt.Sprintf("==> starting in %s; Ctrl-C cancels with nothing touched", grace))
	if err := g.IO.Countdown(ctx, grace, g.IO.OutTTY && !g.JSON); err != nil {
		return fmt.Errorf("cancelled during the grace period, nothing touched: %w", err)
	}
	return nil
}
