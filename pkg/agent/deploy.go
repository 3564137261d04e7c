package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/shipdeploy/ship/pkg/agentapi"
	"github.com/shipdeploy/ship/pkg/compose"
	"github.com/shipdeploy/ship/pkg/deploy"
	"github.com/shipdeploy/ship/pkg/engine"
	"github.com/shipdeploy/ship/pkg/event"
	"github.com/shipdeploy/ship/pkg/proxy"
	"github.com/shipdeploy/ship/pkg/release"
)

// A deploy inside shipd (for `agent: true` environments). shipctl has uploaded
// <path>/releases/<sha>/docker-compose.yml; shipd then:
//
//  1. reads the release (refusing, before anything is touched, a routed service that
//     publishes ports, has a container_name, a network_mode, or a writable named
//     volume, and a listen address another app serves);
//  2. pulls its images through the local engine with the request's credentials;
//  3. runs its pre-deploy jobs (engine Up of the job, then its exit code): a failure
//     aborts before any switch;
//  4. replaces each service, in dependency order:
//     - a routed service blue-green: a new container beside the old one (the next
//     container number, the same compose labels), health-checked on its address on
//     the project network (x-ship.health, else the image's HEALTHCHECK and a TCP
//     connect, else a TCP connect), the route switched to it in one step, the old
//     container drained (x-ship.drain) and removed;
//     - a service with named volumes, published ports, a container_name or a
//     network_mode stop-first, through the engine's Up (never two copies at once);
//     - any other service start-first: the new container waited on until healthy,
//     then the old one removed;
//  5. removes the containers of services the release no longer has (and the finished
//     jobs), and the routes of services no longer routed;
//  6. points <path>/current at the release, sets release.json's result, appends a line
//     to <path>/audit.log, saves the state.
//
// A new container that fails its health check never receives traffic: it is removed,
// the old one keeps serving untouched, and the events carry its last log lines. When a
// failure comes after some service was already replaced, the previous release is put
// back the same way (blue-green); if that fails too the result is "restore-failed".
//
// Steps 2, 3 and 6 and the putting back after a failure are pkg/deploy's Runner, the
// one shipctl's agentless deploy runs too; step 4 and 5 are its Strategy here, swap
// (swap.go, bluegreen.go). The host's files go through pkg/release's Store over the
// local file system. What is shipd's own stays here: the state file (Deploying while
// a deploy runs, the routes), the routes, and reconcile after a restart.

// Kinds of deploy: the runner's, as the state file and the API name them.
const (
	kindDeploy   = string(deploy.KindDeploy)
	kindRollback = string(deploy.KindRollback)
	kindRestore  = string(deploy.KindRestore)
)

// ReleaseLabel is set on the containers shipd starts: the release they run.
const ReleaseLabel = "dev.ship.release"

const failLogLines = 20

var (
	appName = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]*$`)
	shaName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)
)

// request is a deploy, rollback or restore as shipd carries it out.
type request struct {
	kind           string
	app, path, sha string
	auth           map[string]string
	health         proxy.HealthCheck // timing only; the path is per service
	wait, job      time.Duration
	// keep, above 0, prunes after a deploy that made the release current: the
	// releases to keep (agentapi.DeployRequest.Keep).
	keep int
	// unlock is the token of shipctl's lock to release at the end ("" none).
	unlock string
	origin agentapi.Origin
}

// emitter sends a deploy's events to its client and to the log.
type emitter struct {
	mu  sync.Mutex
	fn  func(agentapi.Event)
	log *slog.Logger
}

func (e *emitter) emit(ev agentapi.Event) {
	if ev.Time.IsZero() {
		ev.Time = time.Now().UTC()
	}
	if ev.Level == "" {
		ev.Level = agentapi.LevelInfo
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	level := slog.LevelInfo
	switch ev.Level {
	case agentapi.LevelWarn:
		level = slog.LevelWarn
	case agentapi.LevelError:
		level = slog.LevelError
	}
	attrs := []any{"step", ev.Step}
	if ev.Service != "" {
		attrs = append(attrs, "service", ev.Service)
	}
	if len(ev.Logs) > 0 {
		attrs = append(attrs, "logs", ev.Logs)
	}
	e.log.Log(context.Background(), level, ev.Msg, attrs...)
	if e.fn != nil {
		e.fn(ev)
	}
}

func (e *emitter) info(step event.Step, service, msg string) {
	e.emit(agentapi.Event{Step: step, Service: service, Msg: msg})
}

func (e *emitter) warn(step event.Step, service, msg string) {
	e.emit(agentapi.Event{Step: step, Service: service, Level: agentapi.LevelWarn, Msg: msg})
}

// note shows a runner's note as the deploy's event.
func (e *emitter) note(n deploy.Note) {
	e.emit(agentapi.Event{Step: n.Step, Level: n.Level, Service: n.Service, Msg: n.Msg, Logs: n.Logs})
}

// checkRequest refuses a request that cannot name an app's release.
func checkRequest(app, path, sha string, needSHA bool) error {
	var problems []string
	if !appName.MatchString(app) {
		problems = append(problems, fmt.Sprintf("app %q is not a compose project name (lower-case letters, digits, - and _)", app))
	}
	if !filepath.IsAbs(path) || filepath.Clean(path) != path || path == "/" {
		problems = append(problems, fmt.Sprintf("path %q is not a clean absolute folder", path))
	}
	if (needSHA || sha != "") && !shaName.MatchString(sha) {
		problems = append(problems, fmt.Sprintf("sha %q is not a release name", sha))
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "; "))
	}
	return nil
}

// newStore is the app folder path on this host.
func newStore(path string) *release.Store { return release.NewStore(release.OS{}, path) }

// loadRelease reads a release's compose file as the agentless deploy reads it
// (compose.LoadResolved): no interpolation (the file is already resolved, and a "$" in a
// value is literal), the app as the project name, the release's folder as the working
// directory; so the config hashes match and a later agentless deploy leaves shipd's
// containers alone. ship's support check ran when shipctl made the file.
func loadRelease(ctx context.Context, app string, st *release.Store, sha string) (*compose.Project, error) {
	file := st.Layout.ComposeFile(sha)
	data, err := st.FS.ReadFile(ctx, file)
	if err != nil {
		return nil, err
	}
	return compose.LoadResolved(ctx, app, st.Layout.Release(sha), file, data)
}

// specs are the routes of a service of the deployment's release.
func (d *deployment) specs(ship compose.Ship) []routeSpec {
	return shipSpecs(ship, newStore(d.req.path).Layout.Release(d.req.sha))
}

// checkRelease refuses, by service and all at once, what shipd cannot deploy: the
// rules of compose's CheckAgent (the same that shipctl checks before it uploads), and
// a listen address another app serves.
func (a *agent) checkRelease(app string, st *release.Store, sha string, p *compose.Project) error {
	var problems []string
	for _, pr := range p.AgentProblems(st.Layout.ComposeFile(sha)) {
		problems = append(problems, pr.String())
	}
	for _, name := range p.ServicesInOrder() {
		ship := p.Ship[name]
		if !ship.Routed() || ship.Job != "" {
			continue
		}
		for idx, spec := range shipSpecs(ship, st.Layout.Release(sha)) {
			if !spec.front() {
				if other := a.listenConflict(app, name, spec.Listen); other != "" {
					problems = append(problems, fmt.Sprintf("service %q: listen %s is already served by %s", name, spec.Listen, other))
				}
			}
			problems = append(problems, a.frontConflicts(app, name, idx, spec)...)
			if msg := checkCustomCert(name, spec); msg != "" {
				problems = append(problems, msg)
			}
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("shipd cannot deploy this release:\n  %s", strings.Join(problems, "\n  "))
	}
	return nil
}

// checkWritable refuses, before anything changes, an app folder shipd may not write:
// it writes current, release.json and audit.log there. A probe file is made and
// removed. Under systemd the usual cause is the unit's sandbox: ProtectSystem=strict
// and ProtectHome=read-only leave writable only the folders ReadWritePaths= names.
func checkWritable(path string) error {
	f, err := os.CreateTemp(path, ".shipd-write-probe-*")
	if err == nil {
		name := f.Name()
		f.Close()
		return os.Remove(name)
	}
	if errors.Is(err, syscall.EROFS) {
		return fmt.Errorf("shipd may not write the app's folder %s: shipd.service lets it write only the folders its ReadWritePaths= names (/srv by default). "+
			"Add %s to ReadWritePaths= (`shipctl agent install ENV --ssh-user root` does it for the environment's path) and restart shipd, or move the app under /srv", path, path)
	}
	return fmt.Errorf("shipd (user %d) may not write the app's folder %s (%w): the user shipd runs as must own it", os.Getuid(), path, err)
}

// failureLogs splits a failure into its text, without the failed container's log
// lines, and those lines.
func failureLogs(err error) (string, []string) {
	var je *engine.JobError
	if errors.As(err, &je) {
		bare := *je
		bare.Logs = nil
		return strings.Replace(err.Error(), je.Error(), bare.Error(), 1), je.Logs
	}
	var f *failure
	if errors.As(err, &f) {
		return err.Error(), f.logs
	}
	return err.Error(), nil
}

// runner is the deploy.Runner of a request with the swap strategy.
func (a *agent) runner(req request, p *compose.Project, prev string, em *emitter) *deploy.Runner {
	st := newStore(req.path)
	sw := &swap{a: a, req: req, eng: a.engine(req.auth), em: em, p: p}
	return &deploy.Runner{
		Kind: deploy.Kind(req.kind), Store: st, Engine: sw.eng, Strategy: sw,
		SHA: req.sha, Project: p, Prev: prev,
		Load: func(ctx context.Context, sha string) (*compose.Project, error) {
			return loadRelease(ctx, req.app, st, sha)
		},
		WaitTimeout: req.wait, JobTimeout: req.job, RestoreTimeout: req.wait + req.health.Deadline + 2*time.Minute,
		Audit: release.AuditEntry{
			App: req.app, Env: req.origin.Env, Host: req.origin.Host, Who: req.origin.Who, From: req.origin.From, Agent: "shipd",
		},
		Report: em.note,
		Failed: func(ctx context.Context, step event.Step, err error) error {
			msg, logs := failureLogs(err)
			em.emit(agentapi.Event{Step: step, Level: agentapi.LevelError, Msg: fmt.Sprintf("%s of %s failed: %s", req.kind, release.Short(req.sha), msg), Logs: logs})
			return nil
		},
	}
}

// deploy carries out a deploy or rollback of a loaded release and returns its result.
// The caller holds the app's lock.
func (a *agent) deploy(ctx context.Context, req request, p *compose.Project, em *emitter) agentapi.Result {
	start := time.Now()
	prev, err := newStore(req.path).Current(ctx)
	if err != nil {
		em.warn(agentapi.StepPreflight, "", err.Error())
	}
	a.saveState(func(s *State) {
		app := s.app(req.app, req.path)
		app.Deploying = &Deploying{Kind: req.kind, Release: req.sha, From: prev, Started: time.Now().UTC()}
	})
	announce(em, req, p)
	out := a.runner(req, p, prev, em).Run(ctx)
	res := agentapi.Result{App: req.app, SHA: req.sha, Previous: prev, Result: out.Result, Current: out.Current}
	if out.Result != agentapi.ResultDeployed {
		cause, logs := failureLogs(out.Cause)
		res.Logs = logs
		switch {
		case out.Result == agentapi.ResultRestoreFailed:
			res.Error = strings.Replace(out.Err.Error(), out.Cause.Error(), cause, 1)
		case out.Changed:
			res.Error = fmt.Sprintf("%s; %s was put back", cause, release.Name(prev))
		default:
			res.Error = fmt.Sprintf("%s; nothing was switched, %s keeps serving", cause, release.Name(prev))
		}
	}
	res.Duration = agentapi.Duration(time.Since(start).Round(time.Millisecond))
	a.saveOutcome(req, prev, res)
	// The certificates of the release that now serves: shown where the user looks.
	a.syncCerts(ctx, req.app, func(level event.Level, service, msg string) {
		em.emit(agentapi.Event{Step: agentapi.StepSwitch, Level: level, Service: service, Msg: msg})
	})
	a.tellStatus()
	if req.kind == kindDeploy && req.keep > 0 && res.Result == agentapi.ResultDeployed {
		res.Pruned = a.prune(ctx, req, em)
	}
	if req.unlock != "" {
		res.Unlocked = a.releaseLock(req, em)
	}
	em.emit(doneEvent(req, prev, res))
	return res
}

// saveOutcome ends the deploy in the state: not under way any more, its result, and
// the release that serves.
func (a *agent) saveOutcome(req request, prev string, res agentapi.Result) {
	a.saveState(func(s *State) {
		app := s.app(req.app, req.path)
		app.Deploying = nil
		app.LastResult, app.LastError, app.LastTime = res.Result, res.Error, time.Now().UTC()
		if res.Result == agentapi.ResultDeployed {
			if prev != req.sha {
				app.Previous = prev
			}
			app.Release, app.Since = req.sha, time.Now().UTC()
		} else {
			app.Release = res.Current
		}
	})
}

// doneEvent is a deploy's last event: which release is current.
func doneEvent(req request, prev string, res agentapi.Result) agentapi.Event {
	switch res.Result {
	case agentapi.ResultDeployed:
		return agentapi.Event{Step: agentapi.StepDone, Level: agentapi.LevelInfo, Msg: fmt.Sprintf("on %s (%s in %s)", release.Short(req.sha), req.kind+"ed", time.Duration(res.Duration))}
	case agentapi.ResultFailed:
		return agentapi.Event{Step: agentapi.StepDone, Level: agentapi.LevelError, Msg: fmt.Sprintf("on %s (%s of %s failed; previous release kept)", release.Name(res.Current), req.kind, release.Short(req.sha))}
	}
	return agentapi.Event{Step: agentapi.StepDone, Level: agentapi.LevelError, Msg: fmt.Sprintf("%s of %s failed and %s could not be put back: check the host", req.kind, release.Short(req.sha), release.Name(prev))}
}
