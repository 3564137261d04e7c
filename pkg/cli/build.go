package cli

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"github.com/shipdeploy/ship/pkg/compose"
	"github.com/shipdeploy/ship/pkg/config"
	"github.com/shipdeploy/ship/pkg/image"
	"github.com/shipdeploy/ship/pkg/term"
	"github.com/shipdeploy/ship/pkg/vcs"
)

type buildOptions struct {
	NoPull   bool
	Services []string // only these; nil is every service with build:
}

// newBuildCmd builds the command; runF, when not nil, runs instead of runBuild (tests).
func newBuildCmd(g *Globals, runF func(context.Context, *buildOptions) error) *cobra.Command {
	if runF == nil {
		runF = func(ctx context.Context, o *buildOptions) error { return runBuild(ctx, g, o) }
	}
	o := &buildOptions{}
	cmd := &cobra.Command{
		Use:   "build [SERVICE...]",
		Short: "Build the images of the compose file's services, tagged with the git sha",
		Long: `Build every service of the compose file that has build: (or only the SERVICEs
named), through the Docker Engine API, as <registry>/<image>:<git sha>. With
uncommitted changes the tag is <sha>-dirty-<hash of the change>, which push and
deploy refuse unless given --allow-dirty.

BuildKit builds where the engine offers it (RUN --mount=type=cache, multi-stage
targets, build args and .dockerignore as with docker buildx); otherwise the classic
builder does, and the output says why. DOCKER_BUILDKIT=0 asks for the classic
builder, DOCKER_BUILDKIT=1 for BuildKit only. Base images are always pulled
(docker compose build --pull) unless --no-pull is given.`,
		Example: `  shipctl build
  shipctl build web --no-pull
  shipctl build --json`,
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Services = args
			return runF(cmd.Context(), o)
		},
	}
	cmd.Flags().BoolVar(&o.NoPull, "no-pull", false, "do not pull newer base images")
	return cmd
}

func runBuild(ctx context.Context, g *Globals, o *buildOptions) error {
	cfg, info, err := g.checkout(ctx)
	if err != nil {
		return err
	}
	p := newPrinter(g)
	_, err = buildImages(ctx, g, p, cfg, info, o)
	return err
}

// head reads the checkout: images are tagged with its commit, so there must be one.
// checkout loads ship.yaml, requires its registry and reads the checkout's HEAD: what
// build and push start with.
func (g *Globals) checkout(ctx context.Context) (*config.Config, vcs.Info, error) {
	cfg, err := g.loadConfig()
	if err != nil {
		return nil, vcs.Info{}, err
	}
	if err := requireRegistry(cfg); err != nil {
		return nil, vcs.Info{}, err
	}
	info, err := head(ctx, cfg)
	return cfg, info, err
}

func head(ctx context.Context, cfg *config.Config) (vcs.Info, error) {
	info, err := vcs.Head(ctx, cfg.Dir)
	if errors.Is(err, vcs.ErrNotRepo) {
		return info, fmt.Errorf("%w: images are tagged with the commit they are built from; run git init and commit first", err)
	}
	return info, err
}

// requireRegistry makes a missing registry a config error (exit 2).
func requireRegistry(cfg *config.Config) error {
	if cfg.Registry != "" {
		return nil
	}
	return &config.Error{Problems: []config.Problem{{File: cfg.File,
		Msg: "registry: not set; images are pushed as <registry>/<image>:<sha>: add e.g. \"registry: registry.example.com:5000\", or set SHIP_REGISTRY"}}}
}

// registryHost is the host[:port] of a registry written host[:port][/path].
func registryHost(registry string) string {
	host, _, _ := strings.Cut(registry, "/")
	return host
}

// deployProject loads the deploy compose file with its built images pinned to version.
func deployProject(ctx context.Context, g *Globals, cfg *config.Config, version string) (*compose.Project, error) {
	p, err := loadDeployCompose(ctx, g, cfg, false)
	if err != nil {
		return nil, err
	}
	p.PinImages(compose.RegistryRef(cfg.Registry, version))
	return p, nil
}

// loadDeployCompose loads the deploy compose file, its images not pinned yet. readOnly
// leaves out the checks of what the engine core supports and of compose's schema: a
// push only reads which images the file builds, and the build of the same tree that
// made them checked both.
func loadDeployCompose(ctx context.Context, g *Globals, cfg *config.Config, readOnly bool) (*compose.Project, error) {
	return compose.Load(ctx, compose.Options{Dir: cfg.Dir, Files: []string{cfg.Compose}, Name: cfg.App, Environ: environ(g), SkipCheck: readOnly})
}

// keychain finds registry credentials: SHIP_REGISTRY_USER and SHIP_REGISTRY_PASSWORD
// for the configured registry, else docker's config.json and credential helpers.
func keychain(g *Globals, cfg *config.Config) (*image.Keychain, error) {
	return image.KeychainFromEnv(g.IO.Getenv, cfg.Registry)
}

// buildImages builds the deploy compose file's images for info's version and returns
// their references.
func buildImages(ctx context.Context, g *Globals, p *term.Printer, cfg *config.Config, info vcs.Info, o *buildOptions) ([]string, error) {
	version := info.Version()
	proj, err := deployProject(ctx, g, cfg, version)
	if err != nil {
		return nil, err
	}
	targets, err := pickTargets(image.Targets(proj), o.Services, cfg.Compose)
	if err != nil {
		return nil, err
	}
	if len(targets) == 0 {
		p.Event("build_done", map[string]any{"version": version, "images": []string{}},
			fmt.Sprintf("==> nothing to build: no service in %s has build:", cfg.Compose))
		return nil, nil
	}
	kc, err := keychain(g, cfg)
	if err != nil {
		return nil, err
	}
	api, err := g.Engine()
	if err != nil {
		return nil, fmt.Errorf("connect to the Docker engine: %w", err)
	}
	defer api.Close()

	p.Event("build_start", map[string]any{"version": version, "sha": info.SHA, "clean": info.Clean, "pull": !o.NoPull, "services": serviceNames(targets)},
		fmt.Sprintf("==> building %s", versionLabel(info, nil)))
	v := newProgressView(g, p)
	built, err := image.New(api).BuildAll(ctx, targets, image.Options{
		Pull: !o.NoPull, Builder: image.BuilderFromEnv(g.IO.Getenv), Auth: kc, Live: v.isLive(), Progress: v.show,
	})
	v.close()
	if err != nil {
		var be *image.BuildError
		if errors.As(err, &be) {
			p.Event("build_failed", map[string]any{"service": be.Service, "step": be.Step, "error": be.Msg, "output": nonNil(be.Tail)},
				fmt.Sprintf("==> build of %s FAILED", be.Service))
			if msg := strings.ToLower(be.Msg); strings.Contains(msg, "401 unauthorized") || strings.Contains(msg, "authorization failed") {
				return nil, fmt.Errorf("%w\nhint: a registry would not let the builder pull; log in to it with `docker login` (SHIP_REGISTRY_USER and SHIP_REGISTRY_PASSWORD count only for %s)", err, registryHost(cfg.Registry))
			}
		}
		return nil, err
	}
	refs := make([]string, len(built))
	for i, b := range built {
		refs[i] = b.Ref
	}
	p.Event("build_done", map[string]any{"version": version, "images": refs},
		fmt.Sprintf("==> built %d image(s) for %s", len(refs), versionLabel(info, nil)))
	return refs, nil
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func serviceNames(ts []image.Target) []string {
	names := make([]string, len(ts))
	for i, t := range ts {
		names[i] = t.Service
	}
	return names
}

// pickTargets keeps the targets of the services named, refusing unknown names.
func pickTargets(all []image.Target, services []string, file string) ([]image.Target, error) {
	if len(services) == 0 {
		return all, nil
	}
	byName := map[string]image.Target{}
	var names []string
	for _, t := range all {
		byName[t.Service] = t
		names = append(names, t.Service)
	}
	sort.Strings(names)
	var picked []image.Target
	for _, s := range services {
		t, ok := byName[s]
		if !ok {
			return nil, usageErrorf("no service %q with build: in %s; built services: %s", s, file, strings.Join(names, ", "))
		}
		picked = append(picked, t)
	}
	return picked, nil
}
