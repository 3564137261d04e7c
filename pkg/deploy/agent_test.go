package deploy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shipdeploy/ship/pkg/agentapi"
	"github.com/shipdeploy/ship/pkg/compose"
	"github.com/shipdeploy/ship/pkg/event"
	"github.com/shipdeploy/ship/pkg/release"
)

// fakeShipd is shipd on a fakeHost: deploy says what a deploy does (it gets the host to
// switch current, as shipd would), status what GET /v1/status answers.
type fakeShipd struct {
	h    *fakeHost
	dial Dialer

	mu       sync.Mutex
	deploys  []agentapi.DeployRequest
	rollback []agentapi.RollbackRequest
	deploy   func(req agentapi.DeployRequest, fn func(agentapi.Event)) (*agentapi.Result, error)
	status   func(n int) (*agentapi.Status, error)
	statuses int
}

func (s *fakeShipd) Status(ctx context.Context) (*agentapi.Status, error) {
	s.mu.Lock()
	s.statuses++
	n, fn := s.statuses, s.status
	s.mu.Unlock()
	if fn == nil {
		return &agentapi.Status{Version: "shipd dev go1.26 linux/amd64", PID: 42, Uptime: agentapi.Duration(time.Minute)}, nil
	}
	return fn(n)
}

func (s *fakeShipd) Deploy(ctx context.Context, req agentapi.DeployRequest, fn func(agentapi.Event)) (*agentapi.Result, error) {
	s.mu.Lock()
	s.deploys = append(s.deploys, req)
	do := s.deploy
	s.mu.Unlock()
	return do(req, fn)
}

func (s *fakeShipd) Rollback(ctx context.Context, req agentapi.RollbackRequest, fn func(agentapi.Event)) (*agentapi.Result, error) {
	s.mu.Lock()
	s.rollback = append(s.rollback, req)
	s.mu.Unlock()
	s.h.switchTo(req.SHA)
	fn(agentapi.Event{Step: agentapi.StepSwitch, Service: "web", Msg: "healthy; :80 now routes to 172.18.0.3:8080"})
	return &agentapi.Result{App: req.App, SHA: req.SHA, Result: agentapi.ResultDeployed, Current: req.SHA}, nil
}

// switchTo points current at sha, as shipd does at the end of a deploy.
func (h *fakeHost) switchTo(sha string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.nodes[root+"/current"] = &fakeNode{isLink: true, link: "releases/" + sha, mode: fs.ModeSymlink | 0o777}
}

// agentConn is a connection to a fakeHost with shipd on it.
type agentConn struct {
	Host
	sh *fakeShipd
}

func (c agentConn) Shipd() Shipd { return c.sh }

// agentFixture is a fixture of an agent environment: every host runs a fakeShipd.
func agentFixture(t *testing.T, file string) (*fixture, *fakeShipd) {
	t.Helper()
	f := newFixture(t, file)
	f.env.Agent = true
	return f, &fakeShipd{h: f.hosts[0], dial: f.net.dial}
}

func (f *fixture) agentOptions(rel *Release, sh *fakeShipd) Options {
	o := f.options(rel)
	o.Dial = func(ctx context.Context, dest string) (Host, error) {
		h, err := sh.dial(ctx, dest)
		if err != nil {
			return nil, err
		}
		return agentConn{Host: h, sh: sh}, nil
	}
	o.RegistryAuth = func(ref string) (string, error) {
		if strings.HasPrefix(ref, testRegistry) {
			return "cmVnaXN0cnktYXV0aA==", nil
		}
		return "", nil
	}
	o.AgentWait = 5 * time.Second
	return o
}

func deployed(h *fakeHost) func(req agentapi.DeployRequest, fn func(agentapi.Event)) (*agentapi.Result, error) {
	return func(req agentapi.DeployRequest, fn func(agentapi.Event)) (*agentapi.Result, error) {
		fn(agentapi.Event{Step: agentapi.StepHealth, Service: "web", Msg: "shop-web-2: checking GET /up"})
		h.switchTo(req.SHA)
		fn(agentapi.Event{Step: agentapi.StepDone, Msg: "on " + release.Short(req.SHA)})
		return &agentapi.Result{App: req.App, SHA: req.SHA, Result: agentapi.ResultDeployed, Current: req.SHA}, nil
	}
}

func TestAgentDeploy(t *testing.T) {
	f, sh := agentFixture(t, "agent.yml")
	h := f.hosts[0]
	sh.deploy = deployed(h)
	rel := f.release(shaA)
	sum, err := Run(context.Background(), f.agentOptions(rel, sh))
	if err != nil {
		t.Fatalf("deploy: %v\n%s", err, f.eventText())
	}
	if sum.Hosts[0].Result != ResultDeployed || sum.Hosts[0].Current != shaA {
		t.Errorf("summary = %+v", sum.Hosts)
	}
	if len(sh.deploys) != 1 {
		t.Fatalf("shipd got %d deploys", len(sh.deploys))
	}
	req := sh.deploys[0]
	if req.App != "shop" || req.Path != root || req.SHA != shaA || req.Env != "prod" || req.Host != "deploy@web1" || req.Who != "tester@laptop" {
		t.Errorf("request = %s %+v", req, req.Origin)
	}
	if req.RegistryAuth[ref(shaA)] == "" || len(req.RegistryAuth) != 1 {
		t.Errorf("registry auth for %v", req.RegistryAuth)
	}
	// Uploaded as the agentless deploy does; shipd pulled and started: shipctl did not.
	if _, ok := h.file(root + "/releases/" + shaA + "/docker-compose.yml"); !ok {
		t.Errorf("not uploaded: %v", h.under(root))
	}
	if len(h.pulls) != 0 || len(h.running("shop")) != 0 {
		t.Errorf("shipctl pulled %v or ran %v itself", h.pulls, h.running("shop"))
	}
	// shipd writes audit.log and release.json's result: shipctl does not write them twice.
	if a := f.audit(h); len(a) != 0 {
		t.Errorf("shipctl wrote audit lines: %+v", a)
	}
	if h.exists(root + "/.lock") {
		t.Error("the lock was not released")
	}
	text := f.eventText()
	for _, want := range []string{
		"info deploy@web1 health [web] shop-web-2: checking GET /up",
		"info deploy@web1 done [] on " + release.Short(shaA) + " (deployed)",
		"shipd dev, up 1m0s",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("events lack %q:\n%s", want, text)
		}
	}
	if strings.Count(text, " done ") != 1 {
		t.Errorf("want one done event per host, shipctl's:\n%s", text)
	}
}

func TestAgentDeployFailedShowsLogs(t *testing.T) {
	f, sh := agentFixture(t, "agent.yml")
	h := f.hosts[0]
	sh.deploy = deployed(h)
	if _, err := Run(context.Background(), f.agentOptions(f.release(shaA), sh)); err != nil {
		t.Fatal(err)
	}
	logs := []string{"app v2 listening on :8080", "token " + secret}
	sh.deploy = func(req agentapi.DeployRequest, fn func(agentapi.Event)) (*agentapi.Result, error) {
		fn(agentapi.Event{Step: agentapi.StepHealth, Service: "web", Level: agentapi.LevelError, Msg: "service web: the new container shop-web-3 failed its health check", Logs: logs})
		res := &agentapi.Result{App: req.App, SHA: req.SHA, Result: agentapi.ResultFailed, Current: shaA, Previous: shaA,
			Error: "service web: the new container shop-web-3 failed its health check; nothing was switched", Logs: logs}
		return res, &agentapi.Error{Code: string(agentapi.ResultFailed), Msg: res.Error, Status: 200, Result: res}
	}
	sum, err := Run(context.Background(), f.agentOptions(f.release(shaB), sh))
	if !errors.Is(err, ErrDeployFailed) || errors.Is(err, ErrRestoreFailed) {
		t.Fatalf("deploy: %v, want ErrDeployFailed", err)
	}
	if hr := sum.Hosts[0]; hr.Result != ResultFailed || hr.Current != shaA {
		t.Errorf("host result %+v", hr)
	}
	for _, s := range []string{err.Error(), f.eventText()} {
		if !strings.Contains(s, "its last log lines:\n    app v2 listening on :8080") {
			t.Errorf("no log lines in:\n%s", s)
		}
		if strings.Contains(s, secret) {
			t.Errorf("the secret shows:\n%s", s)
		}
	}
	if a := f.audit(h); len(a) != 0 || h.exists(root+"/.lock") {
		t.Errorf("audit %+v, lock %v", a, h.exists(root+"/.lock"))
	}
}

func TestAgentPreflightNeedsShipd(t *testing.T) {
	f, sh := agentFixture(t, "agent.yml")
	sh.status = func(int) (*agentapi.Status, error) {
		return nil, errors.New("ssh deploy@web1: connect to the socket /run/shipd/shipd.sock on the host: open failed")
	}
	_, err := Run(context.Background(), f.agentOptions(f.release(shaA), sh))
	if !errors.Is(err, ErrNoAgent) || !strings.Contains(err.Error(), "shipctl agent install prod") {
		t.Fatalf("deploy without shipd: %v", err)
	}
	if got := f.hosts[0].under(root); len(got) != 0 || len(sh.deploys) != 0 {
		t.Errorf("the host was touched: %v", got)
	}
	// ship's preflight, before it builds, asks shipd too: no lock is taken.
	_, err = Open(context.Background(), OpenOptions{Target: f.agentOptions(f.release(shaA), sh).Target, SHA: shaA})
	if !errors.Is(err, ErrNoAgent) || f.hosts[0].exists(root) {
		t.Errorf("Open without shipd: %v; host: %v", err, f.hosts[0].under(root))
	}
}

func TestPrepareRefusesWhatShipdCannotSwap(t *testing.T) {
	f := newFixture(t, "agent-ports.yml")
	f.env.Agent = true
	_, err := Prepare(context.Background(), PrepareOptions{Config: f.cfg, Env: f.env, SHA: shaA, Environ: []string{}})
	if !errors.Is(err, compose.ErrInvalid) || !strings.Contains(err.Error(), `agent-ports.yml:6: service "web" publishes ports`) {
		t.Fatalf("Prepare: %v", err)
	}
	f.env.Agent = false
	if _, err := Prepare(context.Background(), PrepareOptions{Config: f.cfg, Env: f.env, SHA: shaA, Environ: []string{}}); err != nil {
		t.Errorf("agentless: %v", err)
	}
}

func TestAgentDeployLearnsTheOutcomeOfACutAnswer(t *testing.T) {
	for _, tt := range []struct {
		name   string
		last   agentapi.App
		result event.Result
		want   error
	}{
		{"put back after a restart", agentapi.App{LastResult: agentapi.ResultFailed, LastError: "deploy of bbbbbbbbbbbb was cut off by a shipd restart; aaaaaaaaaaaa was put back"}, ResultFailed, ErrDeployFailed},
		{"finished", agentapi.App{LastResult: agentapi.ResultDeployed, Release: shaB}, ResultDeployed, nil},
		{"restore failed", agentapi.App{LastResult: agentapi.ResultRestoreFailed, LastError: "putting aaaaaaaaaaaa back failed"}, ResultRestoreFailed, ErrRestoreFailed},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f, sh := agentFixture(t, "agent.yml")
			h := f.hosts[0]
			sh.deploy = deployed(h)
			if _, err := Run(context.Background(), f.agentOptions(f.release(shaA), sh)); err != nil {
				t.Fatal(err)
			}
			before := time.Now().UTC()
			sh.deploy = func(req agentapi.DeployRequest, fn func(agentapi.Event)) (*agentapi.Result, error) {
				fn(agentapi.Event{Step: agentapi.StepHealth, Service: "web", Msg: "checking"})
				if tt.result == ResultDeployed {
					h.switchTo(req.SHA)
				}
				return nil, fmt.Errorf("%w: unexpected EOF", agentapi.ErrNoResult)
			}
			sh.mu.Lock()
			sh.statuses = 0
			sh.status = func(n int) (*agentapi.Status, error) {
				switch {
				case n == 1: // the preflight
					return &agentapi.Status{Apps: []agentapi.App{{App: "shop", Release: shaA, LastResult: agentapi.ResultDeployed, LastTime: before}}}, nil
				case n == 2: // shipd restarting
					return nil, errors.New("connect: no such file or directory")
				case n < 5: // the restore after the restart
					return &agentapi.Status{PID: 7, Apps: []agentapi.App{{App: "shop", Release: shaA, Deploying: shaA, LastTime: before}}}, nil
				}
				app := tt.last
				app.App, app.LastTime = "shop", before.Add(time.Second)
				if app.Release == "" {
					app.Release = shaA
				}
				return &agentapi.Status{PID: 7, Apps: []agentapi.App{app}}, nil
			}
			sh.mu.Unlock()
			sum, err := Run(context.Background(), f.agentOptions(f.release(shaB), sh))
			if tt.want == nil && err != nil || tt.want != nil && !errors.Is(err, tt.want) {
				t.Fatalf("deploy: %v, want %v\n%s", err, tt.want, f.eventText())
			}
			if hr := sum.Hosts[0]; hr.Result != tt.result {
				t.Errorf("host result %+v", hr)
			}
			text := f.eventText()
			for _, want := range []string{"shipd's answer was cut", "shipd answers again (pid 7", "shipd is at work on " + release.Short(shaA)} {
				if !strings.Contains(text, want) {
					t.Errorf("events lack %q:\n%s", want, text)
				}
			}
			if a := f.audit(h); len(a) != 0 || h.exists(root+"/.lock") {
				t.Errorf("audit %+v, lock %v", a, h.exists(root+"/.lock"))
			}
		})
	}
}

func TestAgentDeployLockedByShipd(t *testing.T) {
	f, sh := agentFixture(t, "agent.yml")
	sh.deploy = func(req agentapi.DeployRequest, fn func(agentapi.Event)) (*agentapi.Result, error) {
		return nil, &agentapi.Error{Code: agentapi.CodeLocked, Msg: "app shop is locked: shipd is running its restore of aaaaaaaaaaaa after a restart", Status: 409}
	}
	_, err := Run(context.Background(), f.agentOptions(f.release(shaA), sh))
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), "is locked: shipd is running") {
		t.Fatalf("deploy: %v, want ErrLocked", err)
	}
	h := f.hosts[0]
	// shipd did not run it: shipctl records it, as a refusal that changed nothing.
	if a := f.audit(h); len(a) != 1 || a[0].Result != ResultLocked {
		t.Errorf("audit = %+v", a)
	}
	if info := releaseJSON(t, h, shaA); info.Result != release.Failed {
		t.Errorf("release.json = %+v", info)
	}
	if h.exists(root + "/.lock") {
		t.Error("the lock was not released")
	}
}

func TestAgentRollback(t *testing.T) {
	f, sh := agentFixture(t, "agent.yml")
	h := f.hosts[0]
	sh.deploy = deployed(h)
	for _, sha := range []string{shaA, shaB} {
		rel := f.release(sha)
		if _, err := Run(context.Background(), f.agentOptions(rel, sh)); err != nil {
			t.Fatal(err)
		}
		// shipd sets current_since, which Rollback goes by.
		info := releaseJSON(t, h, sha)
		info.CurrentSince = time.Now()
		data, _ := json.Marshal(info)
		h.put(root+"/releases/"+sha+"/release.json", data)
	}
	o := f.agentOptions(nil, sh)
	sum, err := Rollback(context.Background(), RollbackOptions{Target: o.Target, AgentWait: time.Second})
	if err != nil {
		t.Fatalf("rollback: %v\n%s", err, f.eventText())
	}
	if len(sh.rollback) != 1 || sh.rollback[0].SHA != shaA || sum.Hosts[0].Current != shaA {
		t.Errorf("rollback requests %+v, summary %+v", sh.rollback, sum.Hosts)
	}
	if h.link(root+"/current") != "releases/"+shaA || h.exists(root+"/.lock") {
		t.Errorf("current %s, lock %v", h.link(root+"/current"), h.exists(root+"/.lock"))
	}
	if !strings.Contains(f.eventText(), "on "+release.Short(shaA)+" (rolled back from "+release.Short(shaB)+")") {
		t.Errorf("events:\n%s", f.eventText())
	}
}

// TestAgentDeployUnknownOutcome (issue 9, item 8): when shipctl does not see how shipd's
// deploy ended (shipd does not answer again in time, or the command is cancelled while
// shipd carries it on), the host's result is "unknown", never a failure or a restore it
// did not see, and the error says where to look.
func TestAgentDeployUnknownOutcome(t *testing.T) {
	for _, cancelled := range []bool{false, true} {
		t.Run(fmt.Sprintf("cancelled=%v", cancelled), func(t *testing.T) {
			f, sh := agentFixture(t, "agent.yml")
			h := f.hosts[0]
			sh.deploy = deployed(h)
			if _, err := Run(context.Background(), f.agentOptions(f.release(shaA), sh)); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			sh.deploy = func(req agentapi.DeployRequest, fn func(agentapi.Event)) (*agentapi.Result, error) {
				fn(agentapi.Event{Step: agentapi.StepHealth, Service: "web", Msg: "checking"})
				if cancelled {
					cancel()
					return nil, context.Canceled
				}
				return nil, fmt.Errorf("%w: unexpected EOF", agentapi.ErrNoResult)
			}
			sh.mu.Lock()
			sh.statuses = 0
			sh.status = func(n int) (*agentapi.Status, error) {
				if n == 1 {
					return &agentapi.Status{Apps: []agentapi.App{{App: "shop", Release: shaA, LastResult: agentapi.ResultDeployed}}}, nil
				}
				return nil, errors.New("connect: no such file or directory")
			}
			sh.mu.Unlock()
			o := f.agentOptions(f.release(shaB), sh)
			o.AgentWait = 300 * time.Millisecond
			sum, err := Run(ctx, o)
			if !errors.Is(err, ErrOutcomeUnknown) || errors.Is(err, ErrRestoreFailed) || errors.Is(err, ErrDeployFailed) {
				t.Fatalf("deploy: %v, want only ErrOutcomeUnknown\n%s", err, f.eventText())
			}
			if cancelled != errors.Is(err, context.Canceled) {
				t.Errorf("cancelled %v, error %v", cancelled, err)
			}
			if hr := sum.Hosts[0]; hr.Result != ResultUnknown || hr.Current != shaA {
				t.Errorf("host result %+v", hr)
			}
			text := f.eventText() + err.Error()
			for _, want := range []string{"unknown, still running on the host", "`shipctl agent status " + f.env.Name + "`"} {
				if !strings.Contains(text, want) {
					t.Errorf("events lack %q:\n%s", want, text)
				}
			}
			for _, bad := range []string{"previous release kept", "restore failed"} {
				if strings.Contains(text, bad) {
					t.Errorf("events say %q:\n%s", bad, text)
				}
			}
			if h.exists(root + "/.lock") {
				t.Error("the lock is left")
			}
		})
	}
}

// shipd prunes after the deploy (the request's Keep) and says so: shipctl does not
// prune again. A shipd that does not know Keep answers without Pruned: shipctl prunes
// as without an agent.
func TestAgentDeployPrunesOnTheHost(t *testing.T) {
	for _, shipdPrunes := range []bool{true, false} {
		t.Run(fmt.Sprintf("shipd prunes %v", shipdPrunes), func(t *testing.T) {
			f, sh := agentFixture(t, "agent.yml")
			f.env.Keep = 1
			h := f.hosts[0]
			sh.deploy = deployed(h)
			if _, err := Run(context.Background(), f.agentOptions(f.release(shaA), sh)); err != nil {
				t.Fatalf("deploy A: %v\n%s", err, f.eventText())
			}
			if shipdPrunes {
				sh.deploy = func(req agentapi.DeployRequest, fn func(agentapi.Event)) (*agentapi.Result, error) {
					res, err := deployed(h)(req, fn)
					fn(agentapi.Event{Step: agentapi.StepPrune, Msg: "removed 1 old release(s): " + release.Short(shaA)})
					res.Pruned = &agentapi.Pruned{Releases: []string{shaA}}
					return res, err
				}
			}
			if _, err := Run(context.Background(), f.agentOptions(f.release(shaB), sh)); err != nil {
				t.Fatalf("deploy B: %v\n%s", err, f.eventText())
			}
			if got := sh.deploys[1].Keep; got != 1 {
				t.Errorf("the request's Keep = %d, want the environment's 1", got)
			}
			// The fake shipd removed nothing itself: the old release is there when
			// shipctl left the prune to shipd, gone when shipctl pruned.
			if kept := h.exists(root + "/releases/" + shaA); kept != shipdPrunes {
				t.Errorf("old release there: %v; want %v: %v", kept, shipdPrunes, h.under(root+"/releases"))
			}
			text := f.eventText()
			if n := strings.Count(text, " prune [] removed 1 old release(s): "+release.Short(shaA)); n != 1 {
				t.Errorf("%d prune events, want 1 (shipd's or shipctl's):\n%s", n, text)
			}
			if h.exists(root + "/.lock") {
				t.Error("the lock was not released")
			}
		})
	}
}

// shipd releases shipctl's lock at the end (the request's Unlock, the holder's token)
// and says so: shipctl sends no request of its own for it. A shipd that did not (from
// before Unlock) leaves it to shipctl, as before.
func TestAgentDeployUnlockedOnTheHost(t *testing.T) {
	for _, shipdUnlocks := range []bool{true, false} {
		t.Run(fmt.Sprintf("shipd unlocks %v", shipdUnlocks), func(t *testing.T) {
			f, sh := agentFixture(t, "agent.yml")
			h := f.hosts[0]
			var token string
			sh.deploy = func(req agentapi.DeployRequest, fn func(agentapi.Event)) (*agentapi.Result, error) {
				res, err := deployed(h)(req, fn)
				data, _ := h.file(root + "/.lock/holder.json")
				var holder Holder
				if json.Unmarshal([]byte(data), &holder) != nil || holder.Token == "" || holder.Token != req.Unlock {
					t.Errorf("the request's Unlock %q is not the holder's token: %s", req.Unlock, data)
				}
				token = req.Unlock
				if shipdUnlocks {
					if err := h.RemoveAll(context.Background(), root+"/.lock"); err != nil {
						t.Fatal(err)
					}
					fn(agentapi.Event{Step: agentapi.StepLock, Msg: "unlocked"})
					res.Unlocked = true
				}
				return res, err
			}
			if _, err := Run(context.Background(), f.agentOptions(f.release(shaA), sh)); err != nil {
				t.Fatalf("deploy: %v\n%s", err, f.eventText())
			}
			if token == "" {
				t.Fatal("shipd was not asked to deploy")
			}
			if h.exists(root + "/.lock") {
				t.Error("the lock was not released")
			}
			text := f.eventText()
			if n := strings.Count(text, " lock [] unlocked"); n != 1 {
				t.Errorf("%d unlocked events, want 1 (shipd's or shipctl's):\n%s", n, text)
			}
			if strings.Contains(text, "already gone") || strings.Contains(text, "heartbeat") {
				t.Errorf("a warning about the lock:\n%s", text)
			}
		})
	}
}
