// Package cli holds shipctl's commands, as gh's pkg/cmd does: each parses its flags
// into an options struct and hands it to a run function, which gets its dependencies
// (the IO streams, the Docker engine, the SSH dialer, the registry) from one Factory,
// calls one function in pkg/, and renders what comes back through pkg/term. Errors
// become exit codes in one place (exit.go, codes.go).
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"
)

type warningFormatter struct{}

func (warningFormatter) Format(e *logrus.Entry) ([]byte, error) {
	return []byte(e.Level.String() + ": " + e.Message + "\n"), nil
}

// Globals are the flags every command shares, with the Factory of its dependencies.
type Globals struct {
	*Factory
	ConfigPath string
	JSON       bool
	Yes        bool
	Debug      bool
	// shown are the hosts whose failure a FAILED event printed (text output).
	shown *shownFailures
}

// Logger returns the debug logger: stderr with --debug, silent otherwise.
func (g *Globals) Logger() *slog.Logger {
	if !g.Debug {
		return slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return slog.New(slog.NewTextHandler(g.IO.ErrOut, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// NewRoot builds the command tree with the real dependencies.
func NewRoot(io *IOStreams) *cobra.Command { return newRoot(NewFactory(io)) }

// newRoot builds the command tree on f.
func newRoot(f *Factory) *cobra.Command {
	io := f.IO
	g := &Globals{Factory: f}
	root := &cobra.Command{
		Use:   "shipctl",
		Short: "Ship a Docker Compose application from a git checkout to your servers",
		Long: `shipctl takes a Docker Compose app from a git checkout to servers over SSH:
build the images, run the test compose file, push to the registry, and deploy
to an environment's hosts (agentless, or blue-green through shipd).`,
		Example: `  shipctl init                 # write ship.yaml from the compose file
  shipctl test                 # run docker-compose.test.yml; a pass is recorded here
  shipctl ship staging         # preflight, build, test, push, deploy
  shipctl deploy prod --yes    # deploy the pushed, tested commit (CI: --yes --json)
  shipctl status prod          # what each host runs
  shipctl rollback prod        # back to each host's previous release`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetIn(io.In)
	root.SetOut(io.Out)
	root.SetErr(io.ErrOut)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error {
		return withCode(ExitUsage, err)
	})
	pf := root.PersistentFlags()
	pf.StringVarP(&g.ConfigPath, "config", "c", "", "path to ship.yaml (default: ./ship.yaml, or $SHIP_CONFIG)")
	pf.BoolVar(&g.JSON, "json", false, "write NDJSON events to stdout instead of text")
	pf.BoolVarP(&g.Yes, "yes", "y", false, "answer yes to confirmations (for CI)")
	pf.BoolVar(&g.Debug, "debug", false, "log debug details to stderr")

	root.AddCommand(
		newVersionCmd(g),
		newCompletionCmd(g),
		newInitCmd(g, nil),
		newTestCmd(g, nil),
		newBuildCmd(g, nil),
		newPushCmd(g, nil),
		newShipCmd(g, nil),
		newDeployCmd(g, nil),
		newRollbackCmd(g, nil),
		newStatusCmd(g, nil),
		newHistoryCmd(g, nil),
		newLogsCmd(g, nil),
		newLockCmd(g, nil),
		newUnlockCmd(g, nil),
		newAgentCmd(g),
	)
	usageArgs(g, root)
	completeArgs(g, root)
	return root
}

// usageArgs makes wrong positional arguments a usage error (exit 2), like bad flags;
// a command that wants an environment and got none says which there are.
func usageArgs(g *Globals, cmd *cobra.Command) {
	if args := cmd.Args; args != nil {
		_, rest, _ := strings.Cut(cmd.Use, " ")
		wantsEnv := strings.HasPrefix(rest, "ENV")
		cmd.Args = func(c *cobra.Command, a []string) error {
			err := args(c, a)
			if err != nil && wantsEnv && len(a) == 0 {
				err = missingEnv(g, c)
			}
			return withCode(ExitUsage, err)
		}
	}
	for _, c := range cmd.Commands() {
		usageArgs(g, c)
	}
}

// missingEnv is the error of a command run without its ENV: the environments of
// ship.yaml, or why ship.yaml could not be read.
func missingEnv(g *Globals, c *cobra.Command) error {
	cfg, err := g.loadConfig()
	if err != nil {
		return fmt.Errorf("%s needs an environment of ship.yaml (%s ENV), and ship.yaml cannot be read: %w", c.CommandPath(), c.CommandPath(), err)
	}
	names := cfg.EnvNames()
	if len(names) == 0 {
		return fmt.Errorf("%s needs an environment (%s ENV), and %s has none: add one under environments:", c.CommandPath(), c.CommandPath(), cfg.File)
	}
	return fmt.Errorf("%s needs an environment: one of %s (from %s), e.g. %s %s", c.CommandPath(), strings.Join(names, ", "), cfg.File, c.CommandPath(), names[0])
}

// Main runs shipctl with args and returns the process exit code.
func Main(args []string, io *IOStreams) int { return run(args, NewFactory(io)) }

// run runs shipctl with args on f and returns the exit code.
func run(args []string, f *Factory) int {
	io := f.IO
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// A closed stdout (shipctl ... | head) must not kill us before we clean up: writes
	// then fail with EPIPE instead.
	signal.Ignore(syscall.SIGPIPE)
	root := newRoot(f)
	root.SetArgs(args)
	// compose-go warns through logrus (e.g. a variable that is not set): show those
	// as our warnings, on stderr.
	logrus.SetOutput(io.ErrOut)
	logrus.SetFormatter(warningFormatter{})
	err := root.ExecuteContext(ctx)
	if err != nil && strings.HasPrefix(err.Error(), "unknown command") {
		err = withCode(ExitUsage, err)
	}
	if err == nil {
		return ExitOK
	}
	code := exitCode(err)
	if code != ExitRestoreFailed && (errors.Is(err, context.Canceled) || code == ExitCancelled) {
		fmt.Fprintln(io.ErrOut, "cancelled")
		return ExitCancelled
	}
	fmt.Fprintln(io.ErrOut, "error: "+err.Error())
	return code
}
