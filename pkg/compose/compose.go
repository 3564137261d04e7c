// Package compose loads a Docker Compose application through compose-go, parses the
// `x-ship` extension, pins our images to a sha and refuses, by name and before
// anything runs, every compose key that ship's engine does not implement.
package compose

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"
)

// ErrInvalid marks a compose file that cannot be used as written.
var ErrInvalid = errors.New("invalid compose file")

// Options say which compose files to load and how.
type Options struct {
	// Dir is the folder relative paths resolve against (the application's repository).
	Dir string
	// Files are the compose files, relative to Dir; default docker-compose.yml.
	Files []string
	// Name is the compose project name.
	Name string
	// EnvFiles hold values for interpolation (an environment's env_file), relative to Dir.
	// Without any, Dir/.env is read when present, as docker compose does.
	EnvFiles []string
	// Environ is the process environment used for interpolation, as KEY=VALUE; nil means os.Environ().
	Environ []string
	// Profiles to enable; services with other profiles are left out.
	Profiles []string
	// SkipCheck leaves out the support check and compose's schema validation (compiling
	// the schema alone takes ~10 ms): for a command that only reads which images the
	// file builds from a tree a build has already checked (push).
	SkipCheck bool
}

// Project is a loaded compose project with ship's per-service settings.
type Project struct {
	*types.Project
	// Ship holds each service's parsed `x-ship` settings (zero value when absent).
	Ship map[string]Ship
	// Built maps each service with `build:` to the image reference it is built as.
	Built map[string]string
}

// Load reads, interpolates, merges and validates the compose files.
func Load(ctx context.Context, o Options) (p *Project, err error) {
	defer func() {
		// compose-go is a large parser; whatever it trips over is the file's problem to
		// report, never a crash of ours.
		if r := recover(); r != nil {
			p, err = nil, fmt.Errorf("%w: compose-go could not parse the file (%v)", ErrInvalid, r)
		}
	}()
	paths, envFiles, err := o.files()
	if err != nil {
		return nil, err
	}
	environ := o.Environ
	if environ == nil {
		environ = os.Environ()
	}
	newOptions := func(extra ...cli.ProjectOptionsFn) (*cli.ProjectOptions, error) {
		return cli.NewProjectOptions(paths, append([]cli.ProjectOptionsFn{
			cli.WithWorkingDirectory(o.Dir),
			cli.WithName(o.Name),
			cli.WithEnv(environ),
			cli.WithEnvFiles(envFiles...),
			cli.WithDotEnv,
			cli.WithProfiles(o.Profiles),
			cli.WithResolvedPaths(true),
		}, extra...)...)
	}
	var load []cli.ProjectOptionsFn
	if o.SkipCheck {
		load = append(load, cli.WithLoadOptions(func(lo *loader.Options) { lo.SkipValidation = true }))
	}
	po, err := newOptions(load...)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	tp, err := po.LoadProject(ctx)
	if err != nil {
		if problems := portProblems(paths); len(problems) > 0 {
			return nil, &Error{Files: paths, Problems: problems}
		}
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	dropOptionalDeps(tp)
	p = &Project{Project: tp, Ship: map[string]Ship{}, Built: map[string]string{}}

	var problems []Problem
	if !o.SkipCheck {
		// Keys are never interpolated, so the check reads the model without it (compose-go's
		// LoadModel would interpolate without the environment and warn of unset variables).
		mo, err := newOptions(cli.WithInterpolation(false))
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
		}
		model, err := mo.LoadModel(ctx)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
		}
		problems = append(problems, checkModel(model, tp.ServiceNames(), newLocator(paths))...)
	}
	problems = append(problems, p.parseShips(paths...)...)
	if len(problems) > 0 {
		sort.SliceStable(problems, func(i, j int) bool {
			a, b := problems[i], problems[j]
			if a.File != b.File {
				return a.File < b.File
			}
			return a.Line < b.Line
		})
		return nil, &Error{Files: paths, Problems: problems}
	}
	return p, nil
}

// files are o's compose files (docker-compose.yml when it names none) and env files,
// resolved against o.Dir; one that is not there is ErrInvalid, naming it.
func (o Options) files() (paths, envFiles []string, err error) {
	files := o.Files
	if len(files) == 0 {
		files = []string{"docker-compose.yml"}
	}
	paths = make([]string, len(files))
	for i, f := range files {
		paths[i] = resolve(o.Dir, f)
		if _, err := os.Stat(paths[i]); err != nil {
			return nil, nil, fmt.Errorf("%w: %s: %v", ErrInvalid, paths[i], errors.Unwrap(err))
		}
	}
	envFiles = make([]string, len(o.EnvFiles))
	for i, f := range o.EnvFiles {
		envFiles[i] = resolve(o.Dir, f)
		if _, err := os.Stat(envFiles[i]); err != nil {
			return nil, nil, fmt.Errorf("%w: env_file %s: %v", ErrInvalid, envFiles[i], errors.Unwrap(err))
		}
	}
	return paths, envFiles, nil
}

// dropOptionalDeps removes from each service the dependencies with required: false on
// services the project does not run (in a profile not enabled), as docker compose
// leaves them out of what it starts and of the depends_on label: written out with
// them, the resolved file would name a service it does not define.
func dropOptionalDeps(p *types.Project) {
	for name, s := range p.Services {
		changed := false
		for dep, d := range s.DependsOn {
			if _, ok := p.Services[dep]; !ok && !d.Required {
				if !changed {
					s.DependsOn = maps.Clone(s.DependsOn)
					changed = true
				}
				delete(s.DependsOn, dep)
			}
		}
		if changed {
			if len(s.DependsOn) == 0 {
				s.DependsOn = nil
			}
			p.Services[name] = s
		}
	}
}

// Problem is one thing in a compose file that ship cannot run, with where it is written
// when that is known (Line 0: the file as a whole).
type Problem struct {
	File string
	Line int
	Msg  string
}

func (p Problem) String() string {
	switch {
	case p.File == "":
		return p.Msg
	case p.Line == 0:
		return p.File + ": " + p.Msg
	}
	return fmt.Sprintf("%s:%d: %s", p.File, p.Line, p.Msg)
}

// parseShips fills in every service's x-ship settings and lists their problems, at the
// line of the service's x-ship key when files can be read (the last file that has it).
func (p *Project) parseShips(files ...string) []Problem {
	loc := newLocator(files)
	at := func(name string) Problem {
		pr := loc.at([]string{"services", name, ShipKey})
		if pr.File == "" {
			pr.File = files[0]
		}
		return pr
	}
	var problems []Problem
	for _, name := range p.ServiceNames() {
		ship, errs := parseShip(p.Services[name].Extensions[ShipKey])
		for _, e := range errs {
			pr := at(name)
			pr.Msg = fmt.Sprintf("service %q: %s: %s", name, ShipKey, e)
			problems = append(problems, pr)
		}
		p.Ship[name] = ship
	}
	for _, c := range append(checkShip(p), checkHealth(p)...) {
		pr := at(c.service)
		pr.Msg = c.msg
		problems = append(problems, pr)
	}
	return problems
}

// LoadResolved reads a compose file that Load already resolved and that was written
// out (a release on a host): without interpolation, since a "$" in it is literal, and
// without the support check it passed when it was made. file names it in errors and
// workDir is its project's working directory.
func LoadResolved(ctx context.Context, name, workDir, file string, data []byte) (p *Project, err error) {
	defer func() {
		if r := recover(); r != nil {
			p, err = nil, fmt.Errorf("%w: %s: compose-go could not parse the file (%v)", ErrInvalid, file, r)
		}
	}()
	tp, err := loader.LoadWithContext(ctx, types.ConfigDetails{
		WorkingDir:  workDir,
		ConfigFiles: []types.ConfigFile{{Filename: file, Content: data}},
		Environment: types.Mapping{},
	}, func(o *loader.Options) {
		o.SkipInterpolation = true
		o.SetProjectName(name, true)
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrInvalid, file, err)
	}
	// docker compose labels every container with the file it came from
	// (com.docker.compose.project.config_files): the release's file on the host.
	tp.ComposeFiles = []string{file}
	p = &Project{Project: tp, Ship: map[string]Ship{}, Built: map[string]string{}}
	if problems := p.parseShips(file); len(problems) > 0 {
		return nil, &Error{Files: []string{file}, Problems: problems}
	}
	return p, nil
}

// Error lists every problem found in the compose files at once.
type Error struct {
	Files    []string
	Problems []Problem
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %d problem(s) that ship cannot run:", strings.Join(e.Files, ", "), len(e.Problems))
	for _, p := range e.Problems {
		b.WriteString("\n  " + p.String())
	}
	return b.String()
}

// Is makes errors.Is(err, ErrInvalid) true.
func (e *Error) Is(target error) bool { return target == ErrInvalid }

func resolve(dir, f string) string {
	if filepath.IsAbs(f) || dir == "" {
		return f
	}
	return filepath.Join(dir, f)
}

// ServicesInOrder returns the service names sorted, for stable output.
func (p *Project) ServicesInOrder() []string {
	names := p.ServiceNames()
	sort.Strings(names)
	return names
}
