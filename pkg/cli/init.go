package cli

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/shipdeploy/ship/pkg/compose"
	"github.com/shipdeploy/ship/pkg/config"
)

// composeNames are the files init looks for, in this order.
var composeNames = []string{"docker-compose.yml", "docker-compose.yaml", "compose.yaml", "compose.yml"}

const defaultRegistry = "registry.example.com:5000"

type initOptions struct {
	Dir      string // the application's folder: the compose file is looked for here
	Config   string // the file to write, relative to Dir unless absolute
	Compose  string // the compose file, relative to Dir unless absolute; "": look for one
	App      string // "": the compose file's name:, else Dir's name made valid
	Registry string
	Force    bool

	// Ask for the app name and registry; set when stdin is a terminal and
	// neither --yes nor --json was given. Flags given are not asked for.
	AskApp, AskRegistry bool
}

// newInitCmd builds the command; runF, when not nil, runs instead of runInit (tests).
func newInitCmd(g *Globals, runF func(context.Context, *initOptions) error) *cobra.Command {
	if runF == nil {
		runF = func(_ context.Context, o *initOptions) error { return runInit(g, o) }
	}
	o := &initOptions{}
	cmd := &cobra.Command{
		Use:   "init",
		Short: "Write a commented ship.yaml for the compose file in this folder",
		Long: `Write a ship.yaml for the Docker Compose application in the current folder.

init reads the compose file (docker-compose.yml, docker-compose.yaml, compose.yaml
or compose.yml; --compose names another) for its services, which of them are built
here and which ports they publish, and writes a ship.yaml in which every key is
explained, with example staging and prod environments to fill in. It never
overwrites an existing file unless --force is given.

On a terminal it asks for the app name and registry, showing the defaults;
--yes, --json or a flag for the value skips the question.`,
		Example: `  shipctl init
  shipctl init --app shop --registry registry.example.com:5000 --yes
  shipctl init --compose deploy/compose.prod.yml -c deploy/ship.yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			dir, err := os.Getwd()
			if err != nil {
				return fmt.Errorf("init: %w", err)
			}
			o.Dir = dir
			o.Config = g.ConfigPath
			if o.Config == "" && g.IO.Getenv != nil {
				o.Config = g.IO.Getenv("SHIP_CONFIG")
			}
			if o.Config == "" {
				o.Config = config.DefaultFile
			}
			interactive := g.IO.InTTY && !g.Yes && !g.JSON
			o.AskApp = interactive && !cmd.Flags().Changed("app")
			o.AskRegistry = interactive && !cmd.Flags().Changed("registry")
			return runF(cmd.Context(), o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Compose, "compose", "", "the compose file to read (default: the first of "+strings.Join(composeNames, ", ")+")")
	f.StringVar(&o.App, "app", "", "compose project name on the hosts (default: the compose file's name:, else this folder's name)")
	f.StringVar(&o.Registry, "registry", defaultRegistry, "registry the built images are pushed to, host[:port][/path]; \"\" to leave it out")
	f.BoolVar(&o.Force, "force", false, "overwrite an existing ship.yaml")
	return cmd
}

func runInit(g *Globals, o *initOptions) error {
	target := o.Config
	if !filepath.IsAbs(target) {
		target = filepath.Join(o.Dir, target)
	}
	if _, err := os.Lstat(target); err == nil && !o.Force {
		return usageErrorf("%s already exists; edit it, or run shipctl init --force to overwrite it", o.Config)
	}

	composeFile, err := findCompose(o.Dir, o.Compose)
	if err != nil {
		return err
	}
	data, err := os.ReadFile(composeFile)
	if err != nil {
		return fmt.Errorf("init: read compose file: %w", err)
	}
	facts, err := compose.ReadFacts(data)
	if err != nil {
		// The compose file is the input init was given: a wrong one is a usage error.
		return withCode(ExitUsage, fmt.Errorf("init: %s: %w", displayPath(o.Dir, composeFile), err))
	}
	g.Logger().Debug("read compose file", "file", composeFile, "services", len(facts.Services))

	// The compose path is written relative to ship.yaml, as the file's paths are read.
	composeRel := composeFile
	if rel, err := filepath.Rel(filepath.Dir(target), composeFile); err == nil {
		composeRel = filepath.ToSlash(rel)
	}

	app := o.App
	switch {
	case app != "" && config.AppName(app) != app:
		return usageErrorf("--app %q is not a valid compose project name; use lowercase letters, digits, \"-\" and \"_\", e.g. --app %s", app, config.AppName(app))
	case app == "" && facts.Name != "":
		app = config.AppName(facts.Name)
	case app == "":
		app = config.AppName(filepath.Base(o.Dir))
	}
	registry := o.Registry

	if o.AskApp || o.AskRegistry {
		asker := g.IO.Asker()
		if o.AskApp {
			app = asker.Ask("App name (compose project name on the hosts)", app, func(s string) error {
				if config.AppName(s) != s {
					return fmt.Errorf("use lowercase letters, digits, \"-\" and \"_\", e.g. %s", config.AppName(s))
				}
				return nil
			})
		}
		if o.AskRegistry {
			registry = asker.Ask("Registry for the built images (host[:port][/path])", registry, func(s string) error {
				return checkSettings(composeRel, app, s)
			})
		}
	}

	if err := checkSettings(composeRel, app, registry); err != nil {
		return usageErrorf("init: %v", err)
	}
	in := config.TemplateInput{App: app, Compose: composeRel, Registry: registry}
	for _, s := range facts.Services {
		in.Services = append(in.Services, config.TemplateService{Name: s.Name, Build: s.Build, Ports: s.Ports})
	}
	if err := writeFileAtomic(target, config.Template(in)); err != nil {
		// The temporary file's name would only confuse: say which file and why.
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return fmt.Errorf("init: write %s: %w", o.Config, err)
	}
	_, err = os.Stat(filepath.Join(filepath.Dir(target), config.DefaultTestCompose))
	reportInit(g, o, in, displayPath(o.Dir, composeFile), err == nil)
	return nil
}

// checkSettings says what is wrong with the ship.yaml these settings make,
// in words about the settings rather than about a file not yet written.
func checkSettings(compose, app, registry string) error {
	_, err := config.Parse(config.DefaultFile, config.Template(config.TemplateInput{App: app, Compose: compose, Registry: registry}))
	var cerr *config.Error
	if !errors.As(err, &cerr) {
		return err
	}
	msgs := make([]string, len(cerr.Problems))
	for i, p := range cerr.Problems {
		msgs[i] = p.Msg
	}
	return errors.New(strings.Join(msgs, "; "))
}

func reportInit(g *Globals, o *initOptions, in config.TemplateInput, composeFile string, hasTest bool) {
	var built, pulled []string
	for _, s := range in.Services {
		if s.Build {
			built = append(built, s.Name)
		} else {
			pulled = append(pulled, s.Name)
		}
	}

	if g.JSON {
		services := make([]map[string]any, len(in.Services))
		for i, s := range in.Services {
			ports := s.Ports
			if ports == nil {
				ports = []string{}
			}
			services[i] = map[string]any{"name": s.Name, "build": s.Build, "ports": ports}
		}
		newPrinter(g).Event("init", map[string]any{
			"file": o.Config, "app": in.App, "compose": composeFile, "registry": in.Registry,
			"services": services, "test_compose": hasTest,
		}, "")
		return
	}

	w := g.IO.Out
	fmt.Fprintf(w, "Wrote %s for app %q from %s:\n", o.Config, in.App, composeFile)
	if len(built) > 0 {
		fmt.Fprintf(w, "  built here and pushed: %s\n", strings.Join(built, ", "))
	}
	if len(pulled) > 0 {
		fmt.Fprintf(w, "  pulled on the hosts as written: %s\n", strings.Join(pulled, ", "))
	}
	if in.Registry == "" {
		fmt.Fprintln(w, "  no registry: set registry in the file or SHIP_REGISTRY before shipctl push")
	}
	shipctl := "shipctl"
	if o.Config != config.DefaultFile {
		shipctl += " -c " + o.Config
	}
	fmt.Fprintln(w, "\nNext:")
	step := 1
	fmt.Fprintf(w, "  %d. Replace the example hosts and paths under environments in %s with yours.\n", step, o.Config)
	step++
	if !hasTest {
		fmt.Fprintf(w, "  %d. Write %s with a service named \"test\": its exit code gates every deploy.\n", step, config.DefaultTestCompose)
		step++
	}
	fmt.Fprintf(w, "  %d. Run: %s ship staging (preflight, build, test, push, deploy)\n", step, shipctl)
}

// findCompose returns the compose file to read: named, or the first of
// composeNames in dir.
func findCompose(dir, named string) (string, error) {
	if named != "" {
		p := named
		if !filepath.IsAbs(p) {
			p = filepath.Join(dir, p)
		}
		if _, err := os.Stat(p); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return "", usageErrorf("--compose %s: no such file", named)
			}
			return "", fmt.Errorf("init: %w", err)
		}
		return p, nil
	}
	for _, name := range composeNames {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
			return p, nil
		}
	}
	return "", usageErrorf("no compose file in %s (looked for %s); name one with --compose FILE", dir, strings.Join(composeNames, ", "))
}

func displayPath(dir, p string) string {
	if rel, err := filepath.Rel(dir, p); err == nil && !strings.HasPrefix(rel, "..") {
		return rel
	}
	return p
}

// writeFileAtomic writes data to a temporary file beside path and renames it
// into place, so that no half-written ship.yaml is ever seen.
func writeFileAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // after a successful rename there is nothing to remove
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(0o644)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
