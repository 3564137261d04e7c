package cli

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/shipdeploy/ship/pkg/agentapi"
	"github.com/shipdeploy/ship/pkg/deploy"
	"github.com/shipdeploy/ship/pkg/install"
	"github.com/shipdeploy/ship/pkg/release"
	"github.com/shipdeploy/ship/pkg/term"
)

func newAgentCmd(g *Globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Install shipd on an environment's hosts, and ask it how it is",
		Long: `shipd is ship's agent on a host: for environments with agent: true it deploys
blue-green behind its own proxy (see docs/shipd.md). shipctl reaches it through
its SSH connection to the host, at /run/shipd/shipd.sock (SHIP_AGENT_SOCKET
names another socket).`,
	}
	cmd.AddCommand(newAgentInstallCmd(g, nil), newAgentStatusCmd(g, nil))
	return cmd
}

type agentInstallOptions struct {
	hostFlags
	Env     string
	Prefix  string
	Binary  string
	SSHUser string
	Force   bool
}

// newAgentInstallCmd builds the command; runF, when not nil, runs instead of runAgentInstall (tests).
func newAgentInstallCmd(g *Globals, runF func(context.Context, *agentInstallOptions) error) *cobra.Command {
	if runF == nil {
		runF = func(ctx context.Context, o *agentInstallOptions) error { return runAgentInstall(ctx, g, o) }
	}
	o := &agentInstallOptions{}
	cmd := &cobra.Command{
		Use:   "install ENV",
		Short: "Install shipd on every host of an environment and start it",
		Long: `Install shipd on every host of the environment ENV, over SSH:

  /usr/local/bin/shipd              the shipd of this shipctl's version, for the
                                    host's architecture (uname -m)
  /etc/shipd/shipd.yaml             the defaults (configs/shipd.yaml), its socket
                                    owned by the deploy user's group; an existing
                                    one is kept unless --force
  /etc/systemd/system/shipd.service configs/shipd.service, run as the deploy user
                                    (the environment's SSH user)

Each file is written to a temporary name and renamed, and left alone when it has
the content already. Then systemctl daemon-reload, enable and start shipd; when
it runs already: reload (a handover that refuses no connection) if the binary or
shipd.yaml changed, restart if the unit changed, nothing if nothing did. Run it
again after upgrading shipctl.

The shipd binary is looked for next to shipctl's executable: shipd-linux-ARCH,
then shipd when it is for that architecture (make build puts bin/shipd beside
bin/shipctl); --binary names another. It must be of shipctl's version.

The SSH user must be able to write those paths and run systemctl (root): with a
deploy user in ship.yaml, log in as root with --ssh-user root; shipd still runs
as the deploy user. --prefix DIR installs under DIR instead (tests, unusual
layouts), and the unit then points at the files there.

A host without systemd (no /run/systemd/system) gets the files, and shipd is not
started: shipctl warns, shows the command that starts it, and exits 0.`,
		Example: `  shipctl agent install prod --ssh-user root
  shipctl agent install staging --binary ./dist/shipd-linux-arm64`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Env = args[0]
			return runF(cmd.Context(), o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Prefix, "prefix", "", "install under this folder of the hosts instead of / (absolute)")
	f.StringVar(&o.Binary, "binary", "", "the shipd executable to install (default: found next to shipctl)")
	f.StringVar(&o.SSHUser, "ssh-user", "", "log in as this user (e.g. root) instead of the environment's")
	f.BoolVar(&o.Force, "force", false, "replace an existing /etc/shipd/shipd.yaml")
	o.hostFlags.register(cmd)
	return cmd
}

func runAgentInstall(ctx context.Context, g *Globals, o *agentInstallOptions) error {
	if o.Prefix != "" && (!strings.HasPrefix(o.Prefix, "/") || strings.Contains(o.Prefix, "..")) {
		return usageErrorf("--prefix %q: want an absolute folder on the hosts", o.Prefix)
	}
	o.Prefix = strings.TrimRight(o.Prefix, "/")
	_, env, p, h, err := g.environment(o.Env, o.hostFlags)
	if err != nil {
		return err
	}
	exe, err := g.Executable()
	if err != nil {
		return err
	}
	finder := &install.Finder{Explicit: o.Binary, Dir: filepath.Dir(exe), Want: install.OwnBuild()}
	hosts, err := install.Run(ctx, install.Options{
		Env: env, Dial: installDialer(h.target.Dial), Binary: finder.Find, Prefix: o.Prefix, Force: o.Force, SSHUser: o.SSHUser,
		Redactor: h.redact,
		Progress: func(e install.Event) {
			renderDeployEvent(g, p, deploy.Event{Host: e.Host, Step: e.Step, Level: e.Level, Msg: e.Msg})
		},
	})
	for _, hi := range hosts {
		renderInstall(g, p, hi)
	}
	if err != nil {
		return err
	}
	if o.Binary != "" && finder.Mismatch() != "" {
		p.Warn(finder.Mismatch())
	}
	return nil
}

func renderInstall(g *Globals, p *term.Printer, hi install.Result) {
	if g.JSON {
		files := make([]map[string]any, 0, len(hi.Files))
		for _, f := range hi.Files {
			files = append(files, map[string]any{"path": f.Path, "action": f.Action, "size": f.Size})
		}
		fields := map[string]any{"host": hi.Host, "arch": hi.Arch, "from": hi.From, "user": hi.User, "group": hi.Group,
			"files": files, "systemd": hi.Systemd, "service": hi.Service}
		if hi.Version != "" {
			fields["version"] = hi.Version
		}
		if hi.Service == install.ServiceNoSystemd {
			fields["command"] = hi.Command
		}
		if hi.Err != nil {
			fields["error"] = hi.Err.Error()
		}
		p.Event("agent_install", fields, "")
		if hi.Service == install.ServiceNoSystemd {
			p.Warn(fmt.Sprintf("%s has no systemd: shipd was installed but NOT started; run `%s` as %s under a supervisor", hi.Host, hi.Command, hi.User))
		}
		return
	}
	if hi.Err != nil {
		p.Event("agent_install", nil, fmt.Sprintf("==> %s: agent install FAILED: %v", hi.Host, hi.Err))
		return
	}
	var b strings.Builder
	fmt.Fprintf(&b, "==> %s: shipd for linux/%s, run as %s:%s; files:", hi.Host, hi.Arch, hi.User, hi.Group)
	counts := map[string]int{}
	for _, f := range hi.Files {
		counts[f.Action]++
	}
	for _, a := range []string{install.FileWritten, install.FileReplaced, install.FileUnchanged, install.FileKept} {
		if counts[a] > 0 {
			fmt.Fprintf(&b, " %d %s", counts[a], a)
		}
	}
	switch hi.Service {
	case install.ServiceNoSystemd:
		b.WriteString("; no systemd: shipd NOT started")
	case install.ServiceRunning:
		fmt.Fprintf(&b, "; shipd.service runs unchanged, left alone (%s)", hi.Version)
	default:
		fmt.Fprintf(&b, "; shipd.service %s, %s answers", hi.Service, hi.Version)
	}
	p.Event("agent_install", nil, b.String())
	if hi.Service == install.ServiceNoSystemd {
		p.Warn(fmt.Sprintf(`%s does not run systemd (no /run/systemd/system): shipd was installed but NOT started.
  Start it as %s under the host's own supervisor:
    %s
  and point shipctl at its socket with SHIP_AGENT_SOCKET if shipd.yaml names another.`, hi.Host, hi.User, hi.Command))
	}
}

type agentStatusOptions struct {
	hostFlags
	Env string
}

// newAgentStatusCmd builds the command; runF, when not nil, runs instead of runAgentStatus (tests).
func newAgentStatusCmd(g *Globals, runF func(context.Context, *agentStatusOptions) error) *cobra.Command {
	if runF == nil {
		runF = func(ctx context.Context, o *agentStatusOptions) error { return runAgentStatus(ctx, g, o) }
	}
	o := &agentStatusOptions{}
	cmd := &cobra.Command{
		Use:   "status ENV",
		Short: "Show shipd on each host of an environment: version, uptime, routes, releases",
		Long: `Ask shipd on every host of the environment ENV how it is: its version, pid and
uptime; each route (app/service, the address it listens on, the container and
address it routes to, that container's release, since when, requests served);
and each app's live release, the one before, a deploy running, and how the last
deploy ended. A host whose shipd does not answer makes the exit code 1.`,
		Example: `  shipctl agent status prod
  shipctl agent status prod --json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Env = args[0]
			return runF(cmd.Context(), o)
		},
	}
	o.hostFlags.register(cmd)
	return cmd
}

func runAgentStatus(ctx context.Context, g *Globals, o *agentStatusOptions) error {
	_, env, p, h, err := g.environment(o.Env, o.hostFlags)
	if err != nil {
		return err
	}
	hosts, err := deploy.AgentStatus(ctx, h.target)
	if err != nil {
		return err
	}
	failed := 0
	for _, ha := range hosts {
		if ha.Err != nil {
			failed++
		}
		renderAgentStatus(g, p, ha)
	}
	if failed > 0 {
		return fmt.Errorf("agent status of %s: shipd did not answer on %d of %d host(s)", env.Name, failed, len(hosts))
	}
	return nil
}

func renderAgentStatus(g *Globals, p *term.Printer, ha deploy.HostAgent) {
	if g.JSON {
		fields := map[string]any{"host": ha.Host}
		if ha.Status != nil {
			fields["shipd"] = ha.Status
		}
		if ha.Err != nil {
			fields["error"] = ha.Err.Error()
		}
		p.Event("agent_status", fields, "")
		return
	}
	var b strings.Builder
	if ha.Err != nil {
		fmt.Fprintf(&b, "%s: %v", ha.Host, ha.Err)
		p.Event("agent_status", nil, b.String())
		return
	}
	st := ha.Status
	fmt.Fprintf(&b, "%s: shipd %s, pid %d, up %s (since %s)", ha.Host, shipdVersion(st.Version), st.PID, st.Uptime.Std(), st.Started.Local().Format("2006-01-02 15:04:05"))
	b.WriteString("\n  routes:")
	if len(st.Routes) == 0 {
		b.WriteString(" none")
	}
	writeRoutes(&b, "    ", st.Routes, true)
	if len(st.Certs) > 0 {
		b.WriteString("\n  certificates:")
		writeCerts(&b, "    ", st.Certs)
	}
	b.WriteString("\n  apps:")
	if len(st.Apps) == 0 {
		b.WriteString(" none")
	}
	for _, a := range st.Apps {
		fmt.Fprintf(&b, "\n    %s  live %s", a.App, releaseOrNone(a.Release))
		if !a.Since.IsZero() {
			fmt.Fprintf(&b, " since %s", a.Since.Local().Format("2006-01-02 15:04:05"))
		}
		if a.Previous != "" {
			fmt.Fprintf(&b, ", previous %s", release.Short(a.Previous))
		}
		if a.Deploying != "" {
			fmt.Fprintf(&b, "; deploying %s now", release.Short(a.Deploying))
		}
		if a.LastResult != "" {
			fmt.Fprintf(&b, "; last: %s", a.LastResult)
			if !a.LastTime.IsZero() {
				fmt.Fprintf(&b, " at %s", a.LastTime.Local().Format("2006-01-02 15:04:05"))
			}
			if a.LastError != "" && a.LastResult != agentapi.ResultDeployed {
				fmt.Fprintf(&b, " (%s)", firstLine(a.LastError))
			}
		}
		fmt.Fprintf(&b, "\n      %s", a.Path)
	}
	p.Event("agent_status", nil, b.String())
}

// appRoutes are shipd's routes of one app.
func appRoutes(st *agentapi.Status, app string) []agentapi.Route {
	out := []agentapi.Route{}
	for _, r := range st.Routes {
		if r.App == app {
			out = append(out, r)
		}
	}
	return out
}

// writeRoutes writes one line per route: service (app/service with withApp), listen,
// target, the container and its release, since when, requests.
func writeRoutes(b *strings.Builder, indent string, routes []agentapi.Route, withApp bool) {
	width := 0
	name := func(r agentapi.Route) string {
		if withApp {
			return r.App + "/" + r.Service
		}
		return r.Service
	}
	for _, r := range routes {
		width = max(width, len(name(r)))
	}
	for _, r := range routes {
		target := r.Target
		if target == "" {
			target = "(no container: answers 503)"
		}
		fmt.Fprintf(b, "\n%s%-*s  %s -> %s", indent, width, name(r), routeFront(r), target)
		var about []string
		if r.Container != "" {
			about = append(about, r.Container)
		}
		if r.Release != "" {
			about = append(about, "release "+release.Short(r.Release))
		}
		if !r.Since.IsZero() {
			about = append(about, "since "+r.Since.Local().Format("2006-01-02 15:04:05"))
		}
		about = append(about, fmt.Sprintf("%d requests", r.Requests))
		if r.InFlight > 0 {
			about = append(about, fmt.Sprintf("%d in flight", r.InFlight))
		}
		fmt.Fprintf(b, "  (%s)", strings.Join(about, ", "))
		if r.Error != "" {
			fmt.Fprintf(b, " error: %s", r.Error)
		}
	}
}

func releaseOrNone(sha string) string {
	if sha == "" {
		return "no release"
	}
	return release.Short(sha)
}

func firstLine(s string) string {
	first, _, _ := strings.Cut(s, "\n")
	return first
}

// shipdVersion is shipd's version without its program name.
func shipdVersion(v string) string { return strings.TrimPrefix(v, "shipd ") }

// routeFront is where a route serves: its address, or on the shared front door its
// names and addresses ("https://shop.example.com (:80 and :443)").
func routeFront(r agentapi.Route) string {
	if len(r.Hosts) == 0 && !r.TLS {
		return r.Listen
	}
	scheme := "http://"
	if r.TLS {
		scheme = "https://"
	}
	hosts := "(any host)"
	if len(r.Hosts) > 0 {
		hosts = strings.Join(r.Hosts, ", "+scheme)
	}
	var addrs []string
	for _, a := range []string{r.Listen, r.ListenTLS} {
		if a != "" {
			addrs = append(addrs, a)
		}
	}
	paths := ""
	if len(r.Paths) > 0 {
		paths = " " + strings.Join(r.Paths, ", ")
	}
	return fmt.Sprintf("%s%s%s (%s)", scheme, hosts, paths, strings.Join(addrs, " and "))
}

// writeCerts writes one line per certificate: its name, until when it is valid, or why
// it could not be issued (with the fix).
func writeCerts(b *strings.Builder, indent string, certs []agentapi.Cert) {
	for _, c := range certs {
		fmt.Fprintf(b, "\n%s%s  ", indent, c.Host)
		switch {
		case c.Error != "":
			fmt.Fprintf(b, "NOT ISSUED: %s", c.Error)
		case c.NotAfter.IsZero():
			b.WriteString("not issued yet")
		default:
			fmt.Fprintf(b, "valid until %s", c.NotAfter.Local().Format("2006-01-02 15:04"))
		}
		if c.Custom {
			b.WriteString(" (the app's own certificate)")
		}
	}
}
