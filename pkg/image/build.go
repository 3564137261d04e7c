// Package image builds, tags, pushes and removes the images of a compose project's
// services through the Docker Engine API.
package image

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/compose-spec/compose-go/v2/types"
	"github.com/docker/docker/api/types/build"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/jsonmessage"
	archive "github.com/moby/go-archive"
	"github.com/moby/patternmatcher/ignorefile"
)

// ErrBuildFailed marks a Dockerfile step that failed.
var ErrBuildFailed = errors.New("build failed")

// Event is one line of build progress.
type Event struct {
	Service string
	Msg     string
}

// Builder builds images on one engine.
type Builder struct {
	api client.APIClient
}

// New returns a Builder for the engine behind api.
func New(api client.APIClient) *Builder { return &Builder{api: api} }

// Options control a build.
type Options struct {
	// Pull always pulls base images (docker compose build --pull).
	Pull bool
	// Progress receives every line the builder writes; may be nil.
	Progress func(Event)
}

// BuildError is a failed build: the step and the output that led to it.
type BuildError struct {
	Service string
	Msg     string
	Tail    []string
}

func (e *BuildError) Error() string {
	s := fmt.Sprintf("build %s: %s", e.Service, e.Msg)
	if len(e.Tail) > 0 {
		s += "\n    " + strings.Join(e.Tail, "\n    ")
	}
	return s
}

func (e *BuildError) Is(target error) bool { return target == ErrBuildFailed }

// Build builds service's build config into the image tag with the classic builder.
func (b *Builder) Build(ctx context.Context, service string, cfg types.BuildConfig, tag string, o Options) error {
	buildCtx, dockerfile, err := tarContext(cfg)
	if err != nil {
		return fmt.Errorf("build %s: %w", service, err)
	}
	defer buildCtx.Close()
	resp, err := b.api.ImageBuild(ctx, buildCtx, build.ImageBuildOptions{
		Tags:        []string{tag},
		Dockerfile:  dockerfile,
		BuildArgs:   cfg.Args,
		Target:      cfg.Target,
		Labels:      cfg.Labels,
		CacheFrom:   cfg.CacheFrom,
		NoCache:     cfg.NoCache,
		PullParent:  o.Pull || cfg.Pull,
		ShmSize:     int64(cfg.ShmSize),
		ExtraHosts:  cfg.ExtraHosts.AsList(":"),
		NetworkMode: cfg.Network,
		Remove:      true,
		ForceRemove: true,
		Version:     build.BuilderV1,
	})
	if err != nil {
		return fmt.Errorf("build %s: %w", service, err)
	}
	defer resp.Body.Close()
	return readStream(resp.Body, func(msg string) {
		if o.Progress != nil {
			o.Progress(Event{Service: service, Msg: msg})
		}
	}, func(msg string, tail []string) error {
		return &BuildError{Service: service, Msg: msg, Tail: tail}
	})
}

// Remove deletes images by reference, ignoring ones already gone.
func (b *Builder) Remove(ctx context.Context, refs ...string) error {
	var errs []error
	for _, ref := range refs {
		_, err := b.api.ImageRemove(ctx, ref, image.RemoveOptions{Force: true, PruneChildren: true})
		if err != nil && !isNotFound(err) {
			errs = append(errs, fmt.Errorf("remove image %s: %w", ref, err))
		}
	}
	return errors.Join(errs...)
}

func isNotFound(err error) bool {
	return err != nil && (strings.Contains(err.Error(), "No such image") || strings.Contains(strings.ToLower(err.Error()), "not found"))
}

// readStream reads the engine's JSON message stream, passing each line on, and turns
// an error message into fail(msg, last lines).
func readStream(r io.Reader, line func(string), fail func(string, []string) error) error {
	dec := json.NewDecoder(r)
	var tail []string
	for {
		var m jsonmessage.JSONMessage
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		if m.Error != nil {
			return fail(m.Error.Message, tail)
		}
		text := strings.TrimRight(m.Stream, "\n")
		if text == "" && m.Status != "" {
			text = strings.TrimSpace(m.ID + " " + m.Status + " " + m.ProgressMessage)
		}
		for _, l := range strings.Split(text, "\n") {
			if strings.TrimSpace(l) == "" {
				continue
			}
			line(l)
			tail = append(tail, l)
			if len(tail) > 20 {
				tail = tail[1:]
			}
		}
	}
}

// tarContext makes the build context: the context folder less what .dockerignore
// excludes (the Dockerfile and .dockerignore always go in, as with docker build).
func tarContext(cfg types.BuildConfig) (io.ReadCloser, string, error) {
	dir := cfg.Context
	if strings.Contains(dir, "://") || strings.HasPrefix(dir, "git@") {
		return nil, "", fmt.Errorf("context %s: only a local folder can be a build context", dir)
	}
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return nil, "", fmt.Errorf("context %s is not a folder", dir)
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
		return nil, "", fmt.Errorf("dockerfile %s must be inside the context %s", dockerfile, dir)
	}
	if _, err := os.Stat(abs); err != nil {
		return nil, "", fmt.Errorf("dockerfile %s: %w", abs, err)
	}
	var excludes []string
	if f, err := os.Open(filepath.Join(dir, ".dockerignore")); err == nil {
		excludes, err = ignorefile.ReadAll(f)
		f.Close()
		if err != nil {
			return nil, "", fmt.Errorf("%s: %w", filepath.Join(dir, ".dockerignore"), err)
		}
	}
	if len(excludes) > 0 {
		excludes = append(excludes, "!"+filepath.ToSlash(rel), "!.dockerignore")
	}
	tr, err := archive.TarWithOptions(dir, &archive.TarOptions{ExcludePatterns: excludes})
	if err != nil {
		return nil, "", err
	}
	return tr, filepath.ToSlash(rel), nil
}
