// Package testrun runs an application's test compose file with the engine core under a
// unique project name: the exit code of the test service decides, and everything the
// run created (containers, networks, volumes, test-only images) is removed afterwards.
package testrun

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/moby/moby/client"

	"github.com/shipdeploy/ship/pkg/compose"
	"github.com/shipdeploy/ship/pkg/engine"
	"github.com/shipdeploy/ship/pkg/image"
)

// ErrTestsFailed means the test service exited non-zero, or the suite timed out.
var ErrTestsFailed = errors.New("tests failed")

// Options describe one run of the test stack.
type Options struct {
	Dir      string          // the application's folder
	File     string          // the test compose file, relative to Dir
	Service  string          // the service whose exit code decides
	App      string          // the app's name; the project is <app>-test-<random>
	Timeout  time.Duration   // for the whole run; 0 means no limit
	Environ  []string        // environment for interpolation; nil means the process's
	Pull     bool            // pull base images when building
	Builder  string          // image.BuilderAuto, BuilderBuildKit or BuilderClassic
	Auth     *image.Keychain // registry credentials for base images; nil pulls anonymously
	Progress func(Event)     // everything that happens, log lines included; may be nil
}

// Event is one thing that happened during the run. Kind is "build" (a builder or
// build step line), "build_detail" (what a step wrote), "engine", "log", "exit" or
// "cleanup".
type Event struct {
	Kind    string
	Service string
	Msg     string
}

// Result is what a run found.
type Result struct {
	Project  string
	ExitCode int
	Duration time.Duration
}

// Run builds, starts and waits for the test stack on the engine behind api, then
// removes what it made, also when ctx is cancelled or the timeout passes.
func Run(ctx context.Context, api client.APIClient, o Options) (res Result, err error) {
	start := time.Now()
	res.Project = projectName(o.App)
	p, err := load(ctx, o, res.Project)
	if err != nil {
		return res, err
	}
	r := &run{o: o, project: res.Project, eng: engine.New(api), builder: image.New(api)}
	// The test stack runs where shipctl does: its containers get the docker CLI's
	// proxies, as `docker compose up` gives them.
	if r.eng.Proxy, err = engine.ProxyEnv("", api.DaemonHost()); err != nil {
		return res, err
	}
	defer func() {
		if cerr := r.cleanUp(ctx); cerr != nil {
			err = errors.Join(err, cerr)
		}
		res.Duration = time.Since(start)
	}()

	runCtx := ctx
	if o.Timeout > 0 {
		var cancel context.CancelFunc
		runCtx, cancel = context.WithTimeoutCause(ctx, o.Timeout, fmt.Errorf("%w: the suite ran longer than its timeout %s (test.timeout in ship.yaml)", ErrTestsFailed, o.Timeout))
		defer cancel()
	}
	r.timedOut = func(err error) error {
		if cause := context.Cause(runCtx); ctx.Err() == nil && errors.Is(cause, ErrTestsFailed) {
			return cause
		}
		return err
	}

	if err := r.eng.Check(runCtx, p.Project, nil); err != nil {
		return res, err
	}
	if err := r.buildAll(runCtx, p); err != nil {
		return res, r.timedOut(err)
	}
	if err := r.up(runCtx, p); err != nil {
		return res, r.timedOut(err)
	}
	res.ExitCode, err = r.wait(ctx, runCtx)
	return res, err
}

// load reads the test compose file as the project named project, its images pinned
// to test-only names.
func load(ctx context.Context, o Options, project string) (*compose.Project, error) {
	p, err := compose.Load(ctx, compose.Options{Dir: o.Dir, Files: []string{o.File}, Name: project, Environ: o.Environ})
	if err != nil {
		return nil, err
	}
	if _, ok := p.Services[o.Service]; !ok {
		return nil, fmt.Errorf("%w: %s has no service %q (the test service, test.service in ship.yaml); it has: %s",
			compose.ErrInvalid, o.File, o.Service, strings.Join(p.ServicesInOrder(), ", "))
	}
	// Test-only images get the project's unique name, so removing them afterwards
	// can never touch an image of the user's.
	p.PinImages(func(img string) string {
		if !strings.HasPrefix(img, project+"/") { // <project>/<service> already is
			img = project + "/" + img
		}
		return img + ":test"
	})
	return p, nil
}

// run is one Run in progress.
type run struct {
	o        Options
	project  string
	eng      *engine.Engine
	builder  *image.Builder
	built    []string // the test images built, removed at the end
	timedOut func(error) error
}

func (r *run) emit(kind, service, msg string) {
	if r.o.Progress != nil {
		r.o.Progress(Event{Kind: kind, Service: service, Msg: msg})
	}
}

// cleanUp removes what the run made, even when ctx is done: a cancelled run must
// leave nothing behind.
func (r *run) cleanUp(ctx context.Context) error {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
	defer cancel()
	r.emit("cleanup", "", "removing containers, networks, volumes and test images of "+r.project)
	cerr := r.eng.Down(cctx, r.project, engine.DownOptions{Volumes: true})
	cerr = errors.Join(cerr, r.builder.Remove(cctx, r.built...))
	if cerr != nil {
		return fmt.Errorf("clean up %s: %w", r.project, cerr)
	}
	return nil
}

// buildAll builds each image the test stack builds, once.
func (r *run) buildAll(ctx context.Context, p *compose.Project) error {
	seen := map[string]bool{}
	for _, name := range p.ServicesInOrder() {
		ref, ok := p.Built[name]
		if !ok || seen[ref] {
			continue
		}
		seen[ref] = true
		r.built = append(r.built, ref)
		r.emit("build", name, "building "+ref)
		err := r.builder.Build(ctx, name, *p.Services[name].Build, ref, image.Options{
			Pull: r.o.Pull, Builder: r.o.Builder, Auth: r.o.Auth,
			Progress: func(e image.Event) {
				kind := "build_detail"
				if e.Kind == image.KindStep || e.Kind == image.KindBuilder {
					kind = "build"
				}
				r.emit(kind, e.Service, e.Msg)
			},
		})
		if err != nil {
			return err
		}
	}
	return nil
}

func (r *run) up(ctx context.Context, p *compose.Project) error {
	return r.eng.Up(ctx, p.Project, engine.UpOptions{
		WaitTimeout: r.o.Timeout,
		Progress: func(e engine.Event) {
			msg := e.Msg
			if e.Service == "" {
				msg = e.Action + " " + msg // "network created x"
			}
			r.emit("engine", e.Service, msg)
		},
	})
}

// wait follows the stack's logs until the test service exits, stops the stack and
// returns the service's exit code; non-zero is ErrTestsFailed.
func (r *run) wait(ctx, runCtx context.Context) (int, error) {
	// Logs follow every container from its first line until it stops; Down stops them.
	logCtx, stopLogs := context.WithCancel(context.WithoutCancel(ctx))
	defer stopLogs()
	done, attached := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		o := engine.LogOptions{Follow: true, Attached: func() { close(attached) }}
		_ = r.eng.Logs(logCtx, r.project, o, func(l engine.LogLine) {
			r.emit("log", l.Service, l.Text)
		})
	}()
	waitLogs := func(grace time.Duration) {
		select {
		case <-done:
		case <-time.After(grace):
			stopLogs()
			<-done
		}
	}
	defer waitLogs(0) // on the error paths: stop following at once

	code, err := r.eng.Wait(runCtx, r.project, r.o.Service)
	if err != nil {
		return 0, r.timedOut(err)
	}
	// Stop the stack now so the log streams end with every line delivered; once they
	// are open, since a test that exits at once would otherwise lose its lines.
	select {
	case <-attached:
	case <-done:
	}
	if err := r.eng.Down(context.WithoutCancel(ctx), r.project, engine.DownOptions{}); err != nil {
		return code, err
	}
	waitLogs(10 * time.Second)
	r.emit("exit", r.o.Service, fmt.Sprintf("exited with code %d", code))
	if code != 0 {
		return code, fmt.Errorf("%w: service %q exited with code %d", ErrTestsFailed, r.o.Service, code)
	}
	return code, nil
}

func projectName(app string) string {
	b := make([]byte, 4)
	rand.Read(b)
	if app == "" {
		app = "ship"
	}
	return app + "-test-" + hex.EncodeToString(b)
}
