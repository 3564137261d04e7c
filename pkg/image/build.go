// Package image builds, tags, pushes and removes the images of a compose project's
// services through the Docker Engine API: BuildKit through a session over the engine's
// API where the engine has it (the classic builder otherwise), registry credentials
// from docker's config.json or the caller, and a check of the registry before and
// after a push.
package image

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/compose-spec/compose-go/v2/types"
	"github.com/moby/moby/client"
	"github.com/moby/moby/client/pkg/versions"
	"github.com/moby/patternmatcher/ignorefile"
)

// ErrBuildFailed marks a Dockerfile step that failed.
var ErrBuildFailed = errors.New("build failed")

// Event kinds.
const (
	KindBuild    = "build"    // BuildAll starts an image, or has built it (Built is set)
	KindBuilder  = "builder"  // which builder runs, and why
	KindStep     = "step"     // a build step started, moved on or finished (Step is set)
	KindLog      = "log"      // one line a step wrote (Step names it)
	KindWarning  = "warning"  // a warning from the builder
	KindStatus   = "status"   // anything else the engine said
	KindImage    = "image"    // the build wrote the image: Msg is its ID
	KindRegistry = "registry" // a registry answered and accepted the credentials
	KindPush     = "push"     // a push started, or ended (Pushed is set)
	KindLayer    = "layer"    // a layer's push moved on (Layer is set)
	KindVerified = "verified" // the registry holds the pushed manifest
)

// Event is one thing a build or push reports. Msg is always the event as one line of
// text.
type Event struct {
	Service string
	Kind    string
	Msg     string
	Ref     string  // the image, for KindBuild, KindPush, KindVerified; the registry for KindRegistry
	Step    *Step   // KindStep, KindLog
	Built   *Built  // KindBuild at its end
	Layer   *Layer  // KindLayer
	Pushed  *Pushed // KindPush at its end, KindVerified
}

// StepState is where a step is.
type StepState string

// Step states.
const (
	StepRunning StepState = "running"
	StepDone    StepState = "done"
	StepCached  StepState = "cached"
	StepFailed  StepState = "failed"
)

// Step is one step of a build: a Dockerfile instruction, or the builder's own work
// ("[internal] load build context").
type Step struct {
	ID      string // the BuildKit vertex digest, or "step N" with the classic builder
	Name    string // "[2/3] COPY app /app"
	State   StepState
	Started time.Time
	// Duration is set once the step has finished.
	Duration time.Duration
	// Detail is the latest progress inside the step ("transferring context: 2.1MB").
	Detail string
	Error  string
}

// Finished reports whether the step is over, one way or the other.
func (s Step) Finished() bool { return s.State != StepRunning }

// Line is the step as one line of text: "Step 2/3 : COPY app /app  CACHED".
func (s Step) Line() string {
	name := stepTitle(s.Name)
	switch s.State {
	case StepCached:
		return name + "  CACHED"
	case StepDone:
		return fmt.Sprintf("%s  DONE %.1fs", name, s.Duration.Seconds())
	case StepFailed:
		return name + "  ERROR: " + s.Error
	}
	return name
}

// stepTitle writes BuildKit's "[stage 2/3] COPY x" the way the classic builder names
// its steps, "Step 2/3 : COPY x", so that output reads alike whichever builder ran.
func stepTitle(name string) string {
	if !strings.HasPrefix(name, "[") {
		return name
	}
	end := strings.Index(name, "] ")
	if end < 0 {
		return name
	}
	label, rest := name[1:end], name[end+2:]
	stage, count, ok := strings.Cut(label, " ")
	if !ok {
		stage, count = "", label
	}
	if n, m, ok := strings.Cut(count, "/"); !ok || !isDigits(n) || !isDigits(m) {
		return name
	}
	if stage == "" || strings.HasPrefix(stage, "stage-") {
		return "Step " + count + " : " + rest
	}
	return "Step " + count + " (" + stage + ") : " + rest
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

// Builder builds, pushes and removes images on one engine.
type Builder struct {
	api client.APIClient

	mu      sync.Mutex
	mode    string // "", BuilderBuildKit or BuilderClassic, once settled
	noKitBy string // why BuildKit is not used
}

// New returns a Builder for the engine behind api.
func New(api client.APIClient) *Builder { return &Builder{api: api} }

// Builders Options.Builder can ask for.
const (
	BuilderAuto     = ""
	BuilderBuildKit = "buildkit"
	BuilderClassic  = "classic"
)

// Options control a build.
type Options struct {
	// Pull always pulls base images (docker compose build --pull).
	Pull bool
	// Builder is BuilderAuto (BuildKit where the engine has it, else the classic
	// builder), BuilderBuildKit (never the classic one: DOCKER_BUILDKIT=1) or
	// BuilderClassic (DOCKER_BUILDKIT=0).
	Builder string
	// Auth has the credentials for pulling base images; nil pulls anonymously.
	Auth *Keychain
	// Live also reports steps as they start and move on, for a display that updates
	// in place; without it a step is reported once, when it has finished.
	Live bool
	// Progress receives the build's events; may be nil.
	Progress func(Event)
}

func (o Options) emit(e Event) {
	if o.Progress != nil {
		o.Progress(e)
	}
}

// BuildError is a failed build: the step and the output that led to it.
type BuildError struct {
	Service string
	Step    string // the failing step ("" when it is not known)
	Msg     string
	Tail    []string // the step's last lines of output
}

func (e *BuildError) Error() string {
	s := "build " + e.Service + ": "
	if e.Step != "" {
		s += stepTitle(e.Step) + ": "
	}
	s += e.Msg
	if len(e.Tail) > 0 {
		s += "\n    " + strings.Join(e.Tail, "\n    ")
	}
	return s
}

// Is makes errors.Is(err, ErrBuildFailed) true.
func (e *BuildError) Is(target error) bool { return target == ErrBuildFailed }

// refusedError is the engine turning BuildKit down; the build falls back.
type refusedError struct{ reason string }

func (e *refusedError) Error() string { return "BuildKit unavailable: " + e.reason }

// Build builds service's build config into the image tag: with BuildKit where the
// engine has it, else with the classic builder, saying which in a KindBuilder event.
func (b *Builder) Build(ctx context.Context, service string, cfg types.BuildConfig, tag string, o Options) error {
	src, err := localContext(cfg)
	if err != nil {
		return fmt.Errorf("build %s: %w", service, err)
	}
	mode, why := b.builderFor(ctx, o)
	if mode == BuilderBuildKit {
		err := b.buildKit(ctx, service, src, cfg, tag, o)
		var refused *refusedError
		if !errors.As(err, &refused) {
			return o.Auth.RedactError(err)
		}
		if o.Builder == BuilderBuildKit {
			return fmt.Errorf("build %s: %w (DOCKER_BUILDKIT=1 rules out the classic builder)", service, err)
		}
		b.mu.Lock()
		b.mode, b.noKitBy = BuilderClassic, refused.Error()
		b.mu.Unlock()
		why = refused.Error()
	}
	o.emit(Event{Service: service, Kind: KindBuilder, Msg: "builder: classic (" + why + ")"})
	return o.Auth.RedactError(b.classic(ctx, service, src, cfg, tag, o))
}

// builderFor settles which builder runs: asked for, or what the engine offers.
func (b *Builder) builderFor(ctx context.Context, o Options) (string, string) {
	if o.Builder == BuilderClassic {
		return BuilderClassic, "DOCKER_BUILDKIT=0"
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.mode != "" {
		return b.mode, b.noKitBy
	}
	ping, err := b.api.Ping(ctx, client.PingOptions{NegotiateAPIVersion: true})
	switch {
	case err != nil:
		// The build itself will say what is wrong with the engine.
		return BuilderBuildKit, ""
	case ping.OSType == "windows":
		b.mode, b.noKitBy = BuilderClassic, "BuildKit unavailable: the engine runs Windows containers"
	case ping.APIVersion != "" && versions.LessThan(ping.APIVersion, "1.39"):
		b.mode, b.noKitBy = BuilderClassic, "BuildKit unavailable: the engine's API "+ping.APIVersion+" is older than 1.39"
	default:
		b.mode = BuilderBuildKit
	}
	return b.mode, b.noKitBy
}

// source is a local build context: the folder, the Dockerfile in it and what
// .dockerignore leaves out.
type source struct {
	dir        string // the context folder, absolute
	dockerfile string // the Dockerfile, absolute
	rel        string // the Dockerfile relative to dir, slash-separated
	excludes   []string
}

func localContext(cfg types.BuildConfig) (source, error) {
	dir := cfg.Context
	if strings.Contains(dir, "://") || strings.HasPrefix(dir, "git@") {
		return source{}, fmt.Errorf("context %s: only a local folder can be a build context", dir)
	}
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return source{}, fmt.Errorf("context %s is not a folder", dir)
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return source{}, err
	}
	if cfg.DockerfileInline != "" {
		return source{}, fmt.Errorf("dockerfile_inline is not supported; write the Dockerfile to a file")
	}
	dockerfile := cfg.Dockerfile
	if dockerfile == "" {
		dockerfile = "Dockerfile"
	}
	abs := dockerfile
	if !filepath.IsAbs(abs) {
		abs = filepath.Join(dir, dockerfile)
	}
	rel, err := filepath.Rel(dir, abs)
	if err != nil || strings.HasPrefix(rel, "..") {
		return source{}, fmt.Errorf("dockerfile %s must be inside the context %s", dockerfile, dir)
	}
	if _, err := os.Stat(abs); err != nil {
		return source{}, fmt.Errorf("dockerfile %s: %w", abs, errors.Unwrap(err))
	}
	src := source{dir: dir, dockerfile: abs, rel: filepath.ToSlash(rel)}
	if f, err := os.Open(filepath.Join(dir, ".dockerignore")); err == nil {
		src.excludes, err = ignorefile.ReadAll(f)
		f.Close()
		if err != nil {
			return source{}, fmt.Errorf("%s: %w", filepath.Join(dir, ".dockerignore"), err)
		}
	}
	return src, nil
}

// Remove deletes images by reference, ignoring ones already gone.
func (b *Builder) Remove(ctx context.Context, refs ...string) error {
	var errs []error
	for _, ref := range refs {
		_, err := b.api.ImageRemove(ctx, ref, client.ImageRemoveOptions{Force: true, PruneChildren: true})
		if err != nil && !isNotFound(err) {
			errs = append(errs, fmt.Errorf("remove image %s: %w", ref, err))
		}
	}
	return errors.Join(errs...)
}

func isNotFound(err error) bool {
	return err != nil && (strings.Contains(err.Error(), "No such image") || strings.Contains(strings.ToLower(err.Error()), "not found"))
}
