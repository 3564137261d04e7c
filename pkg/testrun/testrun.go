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
	emit := func(kind, service, msg string) {
		if o.Progress != nil {
			o.Progress(Event{Kind: kind, Service: service, Msg: msg})
		}
	}
	res.Project = projectName(o.App)
	p, err := compose.Load(ctx, compose.Options{Dir: o.Dir, Files: []string{o.File}, Name: res.Project, Environ: o.Environ})
	if err != nil {
		return res, err
	}
	if _, ok := p.Services[o.Service]; !ok {
		return res, fmt.Errorf("%w: %s has no service %q (the test service, test.service in ship.yaml); it has: %s",
			compose.ErrInvalid, o.File, o.Service, strings.Join(p.ServicesInOrder(), ", "))
	}
	// Test-only images get the project's unique name, so removing them afterwards
	// can never touch an image of the user's.
	p.PinImages(func(img string) string {
		if !strings.HasPrefix(img, res.Project+"/") { // <project>/<service> already is
			img = res.Project + "/" + img
		}
		return img + ":test"
	})

	eng := engine.New(api)
	builder := image.New(api)
	var built []string
	defer func() {
		// Clean up even when ctx is done: a cancelled run must leave nothing behind.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
		defer cancel()
		emit("cleanup", "", "removing containers, networks, volumes and test images of "+res.Project)
		cerr := eng.Down(cctx, res.Project, engine.DownOptions{Volumes: true})
		cerr = errors.Join(cerr, builder.Remove(cctx, built...))
		if cerr != nil {
			err = errors.Join(err, fmt.Errorf("clean up %s: %w", res.Project, cerr))
		}
		res.Duration = time.Since(start)
	}()

	runCtx := ctx
	if o.Timeout > 0 {
		var cancel context.CancelFunc
		runCtx, cancel = context.WithTimeoutCause(ctx, o.Timeout, fmt.Errorf("%w: the suite ran longer than its timeout %s (test.timeout in ship.yaml)", ErrTestsFailed, o.Timeout))
		defer cancel()
	}
	timedOut := func(err error) error {
		if cause := context.Cause(runCtx); ctx.Err() == nil && errors.Is(cause, ErrTestsFailed) {
			return cause
		}
		return err
	}

	if err := eng.Check(runCtx, p.Project, nil); err != nil {
		return res, err
	}
	seen := map[string]bool{}
	for _, name := range p.ServicesInOrder() {
		ref, ok := p.Built[name]
		if !ok || seen[ref] {
			continue
		}
		seen[ref] = true
		built = append(built, ref)
		emit("build", name, "building "+ref)
		err := builder.Build(runCtx, name, *p.Services[name].Build, ref, image.Options{
			Pull: o.Pull, Builder: o.Builder, Auth: o.Auth,
			Progress: func(e image.Event) {
				kind := "build_detail"
				if e.Kind == image.KindStep || e.Kind == image.KindBuilder {
					kind = "build"
				}
				emit(kind, e.Service, e.Msg)
			},
		})
		if err != nil {
			return res, timedOut(err)
		}
	}

	err = eng.Up(runCtx, p.Project, engine.UpOptions{
		WaitTimeout: o.Timeout,
		Progress: func(e engine.Event) {
			msg := e.Msg
			if e.Service == "" {
				msg = e.Action + " " + msg // "network created x"
			}
			emit("engine", e.Service, msg)
		},
	})
	if err != nil {
		return res, timedOut(err)
	}

	// Logs follow every container from its first line until it stops; Down stops them.
	logCtx, stopLogs := context.WithCancel(context.WithoutCancel(ctx))
	defer stopLogs()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = eng.Logs(logCtx, res.Project, engine.LogOptions{Follow: true}, func(l engine.LogLine) {
			emit("log", l.Service, l.Text)
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

	code, err := eng.Wait(runCtx, res.Project, o.Service)
	if err != nil {
		return res, timedOut(err)
	}
	res.ExitCode = code
	// Stop the stack now so the log streams end with every line delivered.
	if err := eng.Down(context.WithoutCancel(ctx), res.Project, engine.DownOptions{}); err != nil {
		return res, err
	}
	waitLogs(10 * time.Second)
	emit("exit", o.Service, fmt.Sprintf("exited with code %d", code))
	if code != 0 {
		return res, fmt.Errorf("%w: service %q exited with code %d", ErrTestsFailed, o.Service, code)
	}
	return res, nil
}

func projectName(app string) string {
	b := make([]byte, 4)
	rand.Read(b)
	if app == "" {
		app = "ship"
	}
	return app + "-test-" + hex.EncodeToString(b)
}
