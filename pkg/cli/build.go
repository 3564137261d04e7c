package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/shipdeploy/ship/pkg/compose"
	"github.com/shipdeploy/ship/pkg/config"
	"github.com/shipdeploy/ship/pkg/engine"
	"github.com/shipdeploy/ship/pkg/image"
	"github.com/shipdeploy/ship/pkg/vcs"
)

type buildOptions struct {
	NoPull   bool
	Services []string // only these; nil is every service with build:
}

func newBuildCmd(g *Globals) *cobra.Command {
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
			return runBuild(cmd.Context(), g, o)
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
// readOnly leaves out the check of what the engine core supports: a push only reads
// which images the file builds.
func deployProject(ctx context.Context, g *Globals, cfg *config.Config, version string, readOnly bool) (*compose.Project, error) {
	p, err := compose.Load(ctx, compose.Options{Dir: cfg.Dir, Files: []string{cfg.Compose}, Name: cfg.App, Environ: environ(g), SkipCheck: readOnly})
	if err != nil {
		return nil, err
	}
	p.PinImages(compose.RegistryRef(cfg.Registry, version))
	return p, nil
}

// keychain finds registry credentials: SHIP_REGISTRY_USER and SHIP_REGISTRY_PASSWORD
// for the configured registry, else docker's config.json and credential helpers.
func keychain(g *Globals, cfg *config.Config) (*image.Keychain, error) {
	return image.KeychainFromEnv(g.IO.Getenv, cfg.Registry)
}

// buildImages builds the deploy compose file's images for info's version and returns
// their references.
func buildImages(ctx context.Context, g *Globals, p *printer, cfg *config.Config, info vcs.Info, o *buildOptions) ([]string, error) {
	version := info.Version()
	proj, err := deployProject(ctx, g, cfg, version, false)
	if err != nil {
		return nil, err
	}
	targets, err := pickTargets(image.Targets(proj), o.Services, cfg.Compose)
	if err != nil {
		return nil, err
	}
	if len(targets) == 0 {
		p.event("build_done", map[string]any{"version": version, "images": []string{}},
			fmt.Sprintf("==> nothing to build: no service in %s has build:", cfg.Compose))
		return nil, nil
	}
	kc, err := keychain(g, cfg)
	if err != nil {
		return nil, err
	}
	api, err := engine.Local()
	if err != nil {
		return nil, fmt.Errorf("connect to the Docker engine: %w", err)
	}
	defer api.Close()

	p.event("build_start", map[string]any{"version": version, "sha": info.SHA, "clean": info.Clean, "pull": !o.NoPull, "services": serviceNames(targets)},
		fmt.Sprintf("==> building %s", versionLabel(info, nil)))
	v := newProgressView(g, p)
	built, err := image.New(api).BuildAll(ctx, targets, image.Options{
		Pull: !o.NoPull, Builder: image.BuilderFromEnv(g.IO.Getenv), Auth: kc, Live: v.live, Progress: v.show,
	})
	v.close()
	if err != nil {
		var be *image.BuildError
		if errors.As(err, &be) {
			p.event("build_failed", map[string]any{"service": be.Service, "step": be.Step, "error": be.Msg, "output": nonNil(be.Tail)},
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
	p.event("build_done", map[string]any{"version": version, "images": refs},
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

// progressView renders build and push events: NDJSON with --json; on a terminal the
// steps and layers under way are redrawn in place below the finished ones; otherwise
// one line per finished step or layer (a step's output only with --debug).
type progressView struct {
	g    *Globals
	p    *printer
	live bool // a terminal, redrawn in place

	mu       sync.Mutex
	region   liveRegion
	builders map[string]bool
	stop     chan struct{}
	done     chan struct{}
}

func newProgressView(g *Globals, p *printer) *progressView {
	v := &progressView{g: g, p: p, live: g.IO.OutTTY && !g.JSON, builders: map[string]bool{}}
	if v.live {
		v.region = liveRegion{w: g.IO.Out, width: termWidth(g.IO.Out)}
		v.stop, v.done = make(chan struct{}), make(chan struct{})
		go v.tick()
	}
	return v
}

// tick redraws the region now and then, so that elapsed times move.
func (v *progressView) tick() {
	defer close(v.done)
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-v.stop:
			return
		case <-t.C:
			v.mu.Lock()
			v.region.redraw()
			v.mu.Unlock()
		}
	}
}

// close clears what is drawn in place; the view must not be used afterwards.
func (v *progressView) close() {
	if !v.live {
		return
	}
	close(v.stop)
	<-v.done
	v.mu.Lock()
	defer v.mu.Unlock()
	v.region.clear()
}

// line writes a finished line: above the region on a terminal.
func (v *progressView) line(kind string, fields map[string]any, text string) {
	if !v.live {
		v.p.event(kind, fields, text)
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	v.region.clear()
	fmt.Fprintln(v.g.IO.Out, text)
	v.region.draw()
}

func (v *progressView) setLive(key, text string, started time.Time) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.region.set(key, text, started)
}

func (v *progressView) dropLive(key string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.region.remove(key)
}

// show renders one event of a build or a push.
func (v *progressView) show(e image.Event) {
	with := func(kv ...any) map[string]any {
		m := map[string]any{}
		if e.Service != "" {
			m["service"] = e.Service
		}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i].(string)] = kv[i+1]
		}
		return m
	}
	switch e.Kind {
	case image.KindBuilder:
		if v.builders[e.Msg] {
			return
		}
		v.builders[e.Msg] = true
		builder, reason, _ := strings.Cut(strings.TrimPrefix(e.Msg, "builder: "), " (")
		fields := map[string]any{"builder": builder}
		if reason != "" {
			fields["reason"] = strings.TrimSuffix(reason, ")")
		}
		v.line("builder", fields, "==> "+e.Msg)
	case image.KindBuild:
		if e.Built == nil {
			v.line("build_image_start", with("image", e.Ref), fmt.Sprintf("==> %s: building %s", e.Service, e.Ref))
			return
		}
		v.line("build_image", with("image", e.Ref, "id", e.Built.ID, "seconds", round(e.Built.Duration)),
			fmt.Sprintf("==> %s: built %s in %.1fs", e.Service, e.Ref, e.Built.Duration.Seconds()))
	case image.KindStep:
		s := e.Step
		key := e.Service + "\x00" + s.ID
		if !s.Finished() {
			if v.live {
				text := e.Service + ": " + s.Line()
				if s.Detail != "" {
					text += "  " + s.Detail
				}
				v.setLive(key, text, s.Started)
			}
			return
		}
		v.dropLive(key)
		fields := with("step", s.Name, "status", string(s.State), "seconds", round(s.Duration))
		if s.Error != "" {
			fields["error"] = s.Error
		}
		v.line("build_step", fields, fmt.Sprintf("--> %s: %s", e.Service, s.Line()))
	case image.KindLog:
		step := ""
		if e.Step != nil {
			step = e.Step.Name
		}
		switch {
		case v.g.JSON:
			v.p.event("build_log", with("step", step, "line", e.Msg), "")
		case v.g.Debug:
			v.line("build_log", nil, fmt.Sprintf("    %s | %s", e.Service, e.Msg))
		case v.live && e.Step != nil:
			v.setLive(e.Service+"\x00"+e.Step.ID, e.Service+": "+e.Step.Line()+"  "+e.Msg, e.Step.Started)
		}
	case image.KindWarning:
		msg := e.Msg
		if e.Service != "" {
			msg = e.Service + ": " + msg
		}
		v.warn(msg)
	case image.KindStatus, image.KindImage:
		if v.g.Debug && !v.g.JSON {
			v.line("", nil, fmt.Sprintf("    %s: %s", e.Service, e.Msg))
		}
	case image.KindRegistry:
		v.line("registry", map[string]any{"registry": e.Ref, "msg": e.Msg}, "==> "+e.Msg)
	case image.KindPush:
		if e.Pushed == nil {
			v.line("push_image_start", map[string]any{"image": e.Ref}, "==> pushing "+e.Ref)
			return
		}
		pu := e.Pushed
		v.line("push_image", map[string]any{"image": e.Ref, "digest": pu.Digest, "size": pu.Size, "layers_sent": pu.Sent, "layers_found": pu.Found},
			fmt.Sprintf("==> pushed %s: %d layer(s) sent, %d already in the registry", e.Ref, pu.Sent, pu.Found))
	case image.KindLayer:
		l := e.Layer
		key := l.Ref + "\x00" + l.ID
		if !l.Done() {
			if v.live {
				text := l.ID + ": " + l.Status
				if l.Total > 0 {
					text += fmt.Sprintf(" %s %s/%s", bar(l.Current, l.Total, 20), bytesText(l.Current), bytesText(l.Total))
				}
				v.setLive(key, text, time.Time{})
			}
			return
		}
		v.dropLive(key)
		v.line("push_layer", map[string]any{"image": l.Ref, "layer": l.ID, "status": l.Status, "sent": l.Sent()}, "--> "+l.ID+": "+l.Status)
	case image.KindVerified:
		v.line("push_verified", map[string]any{"image": e.Ref, "digest": e.Pushed.Digest},
			fmt.Sprintf("==> %s is in the registry (%s)", e.Ref, e.Pushed.Digest))
	}
}

// warn writes a warning to stderr, or as an event with --json.
func (v *progressView) warn(msg string) {
	if !v.live {
		v.p.warn(msg)
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	v.region.clear()
	v.p.warn(msg)
	v.region.draw()
}

func round(d time.Duration) float64 { return d.Round(10 * time.Millisecond).Seconds() }

func bar(cur, total int64, width int) string {
	n := int(float64(width) * float64(cur) / float64(total))
	n = max(0, min(n, width))
	return "[" + strings.Repeat("=", n) + strings.Repeat(" ", width-n) + "]"
}

func bytesText(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1fGB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1fMB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1fkB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%dB", n)
}

func termWidth(w io.Writer) int {
	if f, ok := w.(*os.File); ok {
		if width, _, err := term.GetSize(int(f.Fd())); err == nil && width > 20 {
			return width
		}
	}
	return 80
}

// liveRegion is a few lines at the bottom of a terminal, redrawn in place.
type liveRegion struct {
	w     io.Writer
	width int
	lines []liveLine
	drawn int // lines on the screen now
}

type liveLine struct {
	key, text string
	started   time.Time
}

// maxLive is how many lines the region shows; the oldest ones beyond it are hidden.
const maxLive = 12

func (r *liveRegion) set(key, text string, started time.Time) {
	for i := range r.lines {
		if r.lines[i].key == key {
			r.lines[i].text = text
			if !started.IsZero() {
				r.lines[i].started = started
			}
			r.redraw()
			return
		}
	}
	if started.IsZero() {
		started = time.Now()
	}
	r.lines = append(r.lines, liveLine{key: key, text: text, started: started})
	r.redraw()
}

func (r *liveRegion) remove(key string) {
	for i := range r.lines {
		if r.lines[i].key == key {
			r.lines = append(r.lines[:i], r.lines[i+1:]...)
			r.redraw()
			return
		}
	}
}

func (r *liveRegion) redraw() {
	r.clear()
	r.draw()
}

// clear erases the region: up to its first line, and to the end of the screen.
func (r *liveRegion) clear() {
	if r.drawn > 0 {
		fmt.Fprintf(r.w, "\x1b[%dA\r\x1b[J", r.drawn)
		r.drawn = 0
	}
}

func (r *liveRegion) draw() {
	lines := r.lines
	if len(lines) > maxLive {
		lines = lines[len(lines)-maxLive:]
	}
	for _, l := range lines {
		text := fmt.Sprintf("%s  %.1fs", l.text, time.Since(l.started).Seconds())
		fmt.Fprintln(r.w, truncate(text, r.width-1))
	}
	r.drawn = len(lines)
}

func truncate(s string, width int) string {
	if width < 4 {
		return s
	}
	r := []rune(s)
	if len(r) <= width {
		return s
	}
	return string(r[:width-1]) + "…"
}
