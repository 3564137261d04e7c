package cli

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/moby/moby/client"
	"github.com/spf13/cobra"

	"github.com/shipdeploy/ship/pkg/compose"
	"github.com/shipdeploy/ship/pkg/config"
	"github.com/shipdeploy/ship/pkg/image"
	"github.com/shipdeploy/ship/pkg/term"
	"github.com/shipdeploy/ship/pkg/testrun"
	"github.com/shipdeploy/ship/pkg/vcs"
)

type pushOptions struct {
	Untested   bool
	AllowDirty bool
	Latest     bool
}

// newPushCmd builds the command; runF, when not nil, runs instead of runPush (tests).
func newPushCmd(g *Globals, runF func(context.Context, *pushOptions) error) *cobra.Command {
	if runF == nil {
		runF = func(ctx context.Context, o *pushOptions) error { return runPush(ctx, g, o) }
	}
	o := &pushOptions{}
	cmd := &cobra.Command{
		Use:   "push",
		Short: "Push the images built for this commit to the registry",
		Long: `Push the images shipctl build made for the checked-out commit
(<registry>/<image>:<git sha>) through the Docker Engine API.

A commit is pushed only when shipctl test passed for it (--untested pushes anyway,
with a warning), and a build of uncommitted changes only with --allow-dirty.
Before anything is pushed, the registry must answer and accept the credentials:
SHIP_REGISTRY_USER and SHIP_REGISTRY_PASSWORD, else what docker login saved in
docker's config.json (credential helpers too). After the push, each image's
manifest is looked up in the registry.`,
		Example: `  shipctl push
  shipctl push --latest
  SHIP_REGISTRY_USER=ci SHIP_REGISTRY_PASSWORD=... shipctl push --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runF(cmd.Context(), o)
		},
	}
	f := cmd.Flags()
	f.BoolVar(&o.Untested, "untested", false, "push even though no passing test run is recorded for the commit")
	f.BoolVar(&o.AllowDirty, "allow-dirty", false, "push a build of uncommitted changes (<sha>-dirty-<hash>)")
	f.BoolVar(&o.Latest, "latest", false, "also tag the images :latest and push that")
	return cmd
}

func runPush(ctx context.Context, g *Globals, o *pushOptions) error {
	cfg, err := g.loadConfig()
	if err != nil {
		return err
	}
	if err := requireRegistry(cfg); err != nil {
		return err
	}
	// The checkout (git), the compose file and the push's first round (the registry,
	// the engine) at once: none needs the others, and each takes a few milliseconds.
	// Their errors are told in the order of the steps.
	deps := newPushDeps(ctx, g, cfg, true)
	defer deps.close()
	var (
		info             vcs.Info
		proj             *compose.Project
		headErr, projErr error
		wg               sync.WaitGroup
	)
	wg.Go(func() { info, headErr = head(ctx, cfg) })
	wg.Go(func() { proj, projErr = loadDeployCompose(ctx, g, cfg, true) })
	wg.Wait()
	if headErr != nil {
		return headErr
	}
	p := newPrinter(g)
	if err := checkDirty(p, info, o.AllowDirty, "push"); err != nil {
		return err
	}
	if err := checkTested(g, p, info, o.Untested, true); err != nil {
		return err
	}
	if projErr != nil {
		return projErr
	}
	proj.PinImages(compose.RegistryRef(cfg.Registry, info.Version()))
	var refs []string
	for _, t := range image.Targets(proj) {
		refs = append(refs, t.Ref)
	}
	if len(refs) == 0 {
		p.Event("push_done", map[string]any{"version": info.Version(), "images": []string{}},
			fmt.Sprintf("==> nothing to push: no service in %s has build:", cfg.Compose))
		return nil
	}
	return pushImages(ctx, g, p, cfg, info, refs, o.Latest, deps)
}

// checkDirty refuses a build of uncommitted changes unless allowed.
func checkDirty(p *term.Printer, info vcs.Info, allow bool, verb string) error {
	if info.Clean {
		return nil
	}
	if !allow {
		return fmt.Errorf("the working tree has uncommitted changes, so its images are %s, not %s: commit first, or pass --allow-dirty to %s them anyway",
			info.Version(), info.SHA, verb)
	}
	p.Warn(fmt.Sprintf("%s: a build of uncommitted changes (--allow-dirty)", info.Version()))
	return nil
}

// checkTested refuses a version no test run passed for, unless untested says to go on;
// then it warns on stderr and, with --json, in the events as well. announce says
// which run it found.
func checkTested(g *Globals, p *term.Printer, info vcs.Info, untested, announce bool) error {
	version := info.Version()
	rec, ok, err := testrun.Passed(info, version)
	if err != nil {
		return err
	}
	if ok && !announce {
		return nil
	}
	if ok {
		p.Event("tested", map[string]any{"version": version, "tested_at": rec.Time, "file": rec.File},
			fmt.Sprintf("==> tests passed for %s (%s)", versionLabel(info, nil), rec.Time.Local().Format("2006-01-02 15:04:05")))
		return nil
	}
	if !untested {
		return fmt.Errorf("no passing test run is recorded for %s: run `shipctl test` first, or pass --untested to push it anyway", version)
	}
	msg := fmt.Sprintf("pushing %s UNTESTED: no passing `shipctl test` run is recorded for it (--untested)", version)
	p.WarnLoud(msg)
	return nil
}

// pushDeps are what a push needs besides the images: the credentials, the engine,
// and the registry check when it was started ahead (image.PreparePush). Errors are
// kept for the moment the push would have met them.
type pushDeps struct {
	kc       *image.Keychain
	api      *client.Client
	prepared *image.Prepared
	err      error
}

// newPushDeps gets the credentials and the engine; prepare also starts the registry
// check and the engine's version negotiation, to run while the caller does other work.
func newPushDeps(ctx context.Context, g *Globals, cfg *config.Config, prepare bool) *pushDeps {
	d := &pushDeps{}
	if d.kc, d.err = keychain(g, cfg); d.err != nil {
		return d
	}
	if d.api, d.err = g.Engine(); d.err != nil {
		d.err = fmt.Errorf("connect to the Docker engine: %w", d.err)
		return d
	}
	if prepare {
		d.prepared = image.New(d.api).PreparePush(ctx, []string{registryHost(cfg.Registry)}, d.kc)
	}
	return d
}

func (d *pushDeps) close() {
	if d.api != nil {
		d.api.Close()
	}
}

// pushImages pushes refs and says where they are; d, when not nil, has what to push
// with (else it is found now).
func pushImages(ctx context.Context, g *Globals, p *term.Printer, cfg *config.Config, info vcs.Info, refs []string, latest bool, d *pushDeps) error {
	if d == nil {
		d = newPushDeps(ctx, g, cfg, false)
		defer d.close()
	}
	if d.err != nil {
		return d.err
	}
	kc, api := d.kc, d.api

	p.Event("push_start", map[string]any{"version": info.Version(), "images": refs, "latest": latest, "registry": cfg.Registry},
		fmt.Sprintf("==> pushing %d image(s) of %s to %s", len(refs), versionLabel(info, nil), cfg.Registry))
	v := newProgressView(g, p)
	pushed, err := image.New(api).Push(ctx, refs, image.PushOptions{Auth: kc, Latest: latest, Live: v.isLive(), Progress: v.show, Prepared: d.prepared})
	v.close()
	if errors.Is(err, image.ErrNotBuilt) {
		// A mistyped registry names images that were never built: say which registry
		// was asked, and what it answered.
		host := registryHost(cfg.Registry)
		answer := "answers and takes the credentials"
		if perr := g.Registry(kc).Ping(ctx, host); perr != nil {
			answer = "answered: " + perr.Error()
		}
		err = fmt.Errorf("%w\nthe registry %s (from %s) was asked; it %s", err, host, registrySource(g, cfg), answer)
	}
	if err != nil {
		return pushHint(err, cfg)
	}
	var images []map[string]any
	for _, pu := range pushed {
		images = append(images, map[string]any{"image": pu.Ref, "digest": pu.Digest})
	}
	p.Event("push_done", map[string]any{"version": info.Version(), "images": images},
		fmt.Sprintf("==> pushed %d image(s) of %s; the registry has each of them", len(pushed), versionLabel(info, nil)))
	return nil
}

// pushHint adds what to do to a push error.
func pushHint(err error, cfg *config.Config) error {
	host := registryHost(cfg.Registry)
	switch {
	case errors.Is(err, image.ErrRegistryDown):
		return fmt.Errorf("%w\nhint: nothing was pushed; check that the registry is running, and that registry: in %s (or SHIP_REGISTRY) names it", err, cfg.File)
	case errors.Is(err, image.ErrRegistryAuth):
		return fmt.Errorf("%w\nhint: nothing was pushed; log in with `docker login %s`, or set SHIP_REGISTRY_USER and SHIP_REGISTRY_PASSWORD", err, host)
	case errors.Is(err, image.ErrNotBuilt):
		return fmt.Errorf("%w\nhint: run `shipctl build` first, or correct the registry if it is not the one the images were built for", err)
	}
	return err
}

// registrySource says where the registry came from: SHIP_REGISTRY or the file.
func registrySource(g *Globals, cfg *config.Config) string {
	if v := strings.TrimSpace(g.IO.Getenv("SHIP_REGISTRY")); v != "" {
		return "SHIP_REGISTRY"
	}
	return "registry: in " + cfg.File
}
