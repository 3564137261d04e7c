package deploy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/types"

	"github.com/shipdeploy/ship/pkg/config"
	"github.com/shipdeploy/ship/pkg/event"
	"github.com/shipdeploy/ship/pkg/redact"
	"github.com/shipdeploy/ship/pkg/release"
)

const (
	secret       = "sentinel-s3cr3t-value"
	testRegistry = "registry.test:5000"
	root         = "/srv/shop"
	shaA         = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	shaB         = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
	shaC         = "cccccccccccccccccccccccccccccccccccccccc"
)

// fixture is an app, its environment, and fake hosts to deploy it to.
type fixture struct {
	t      *testing.T
	cfg    *config.Config
	env    *config.Environment
	net    *fakeNet
	hosts  []*fakeHost
	reg    fakeRegistry
	redact *redact.Redactor

	mu     sync.Mutex
	events []Event
}

func newFixture(t *testing.T, compose string, hosts ...string) *fixture {
	t.Helper()
	if len(hosts) == 0 {
		hosts = []string{"deploy@web1"}
	}
	dir, err := filepath.Abs(filepath.Join("testdata", "app"))
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{
		t:      t,
		cfg:    &config.Config{File: filepath.Join(dir, "ship.yaml"), Dir: dir, App: "shop", Compose: compose, Registry: testRegistry},
		env:    &config.Environment{Name: "prod", Path: root, Keep: 5, EnvFile: ".env.prod", Project: "shop"},
		net:    &fakeNet{t: t, hosts: map[string]*fakeHost{}, dials: map[string]error{}},
		reg:    fakeRegistry{},
		redact: redact.New(),
	}
	for _, name := range hosts {
		h, err := config.ParseHost(name)
		if err != nil {
			t.Fatal(err)
		}
		f.env.Hosts = append(f.env.Hosts, h)
		fh := newFakeHost(name)
		fh.registry["redis:7"] = true
		f.net.hosts[name] = fh
		f.hosts = append(f.hosts, fh)
	}
	return f
}

// release prepares sha and makes its image pullable and present in the registry.
func (f *fixture) release(sha string) *Release {
	f.t.Helper()
	rel, err := Prepare(context.Background(), PrepareOptions{
		Config: f.cfg, Env: f.env, SHA: sha, Subject: "commit " + sha[:4], Environ: []string{}, Redactor: f.redact,
	})
	if err != nil {
		f.t.Fatalf("Prepare: %v", err)
	}
	for _, ref := range rel.Built {
		f.reg[ref] = true
		for _, h := range f.hosts {
			h.registry[ref] = true
		}
	}
	return rel
}

func (f *fixture) target() Target {
	return Target{
		App: f.cfg.App, Env: f.env, Dial: f.net.dial, Who: "tester@laptop", Redactor: f.redact,
		Progress: func(e Event) {
			f.mu.Lock()
			defer f.mu.Unlock()
			f.events = append(f.events, e)
		},
	}
}

func (f *fixture) options(rel *Release) Options {
	return Options{Target: f.target(), Release: rel, Registry: f.reg, From: "origin/main"}
}

func (f *fixture) deploy(rel *Release) (*Summary, error) {
	f.t.Helper()
	return Run(context.Background(), f.options(rel))
}

func (f *fixture) mustDeploy(rel *Release) {
	f.t.Helper()
	if _, err := f.deploy(rel); err != nil {
		f.t.Fatalf("deploy %s: %v\nevents:\n%s", release.Short(rel.SHA), err, f.eventText())
	}
}

func (f *fixture) eventText() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var b strings.Builder
	for _, e := range f.events {
		fmt.Fprintf(&b, "%s %s %s [%s] %s\n", e.Level, e.Host, e.Step, e.Service, e.Msg)
	}
	return b.String()
}

func (f *fixture) audit(h *fakeHost) []release.AuditEntry {
	f.t.Helper()
	data, _ := h.file(root + "/audit.log")
	var out []release.AuditEntry
	for _, line := range strings.Split(strings.TrimSpace(data), "\n") {
		if line == "" {
			continue
		}
		var e release.AuditEntry
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			f.t.Fatalf("audit line %q: %v", line, err)
		}
		out = append(out, e)
	}
	return out
}

func releaseJSON(t *testing.T, h *fakeHost, sha string) release.Info {
	t.Helper()
	data, ok := h.file(root + "/releases/" + sha + "/release.json")
	if !ok {
		t.Fatalf("no release.json for %s; files: %v", release.Short(sha), h.under(root))
	}
	var info release.Info
	if err := json.Unmarshal([]byte(data), &info); err != nil {
		t.Fatal(err)
	}
	return info
}

func ref(sha string) string { return testRegistry + "/shop/web:" + sha }

func TestFirstDeploy(t *testing.T) {
	f := newFixture(t, "docker-compose.yml")
	rel := f.release(shaA)
	sum, err := f.deploy(rel)
	if err != nil {
		t.Fatalf("deploy: %v\n%s", err, f.eventText())
	}
	h := f.hosts[0]
	if len(sum.Hosts) != 1 || sum.Hosts[0].Result != ResultDeployed || sum.Hosts[0].Current != shaA {
		t.Errorf("summary = %+v", sum.Hosts)
	}
	if got := h.link(root + "/current"); got != "releases/"+shaA {
		t.Errorf("current -> %q", got)
	}
	compose, ok := h.file(root + "/releases/" + shaA + "/docker-compose.yml")
	if !ok || h.nodes[root+"/releases/"+shaA+"/docker-compose.yml"].mode != 0o600 {
		t.Fatalf("compose file missing or not 0600: %v", h.under(root))
	}
	for _, want := range []string{"image: " + ref(shaA), "TOKEN: " + secret, "image: redis:7", "working_dir", "PRICE: $5"} {
		if want == "working_dir" {
			continue
		}
		if !strings.Contains(compose, want) {
			t.Errorf("compose file lacks %q:\n%s", want, compose)
		}
	}
	if strings.Contains(compose, "build:") || strings.Contains(compose, "env_file") {
		t.Errorf("compose file keeps build or env_file:\n%s", compose)
	}
	info := releaseJSON(t, h, shaA)
	if info.Result != release.Deployed || info.Who != "tester@laptop" || info.From != "origin/main" || info.CurrentSince.IsZero() || len(info.Built) != 1 {
		t.Errorf("release.json = %+v", info)
	}
	if h.exists(root + "/.lock") {
		t.Error("the lock was not released")
	}
	if got := h.running("shop"); got["web"] != ref(shaA) || got["redis"] != "redis:7" {
		t.Errorf("running = %v", got)
	}
	if len(h.pulls) != 2 {
		t.Errorf("pulls = %v, want the app's image and redis", h.pulls)
	}
	audit := f.audit(h)
	if len(audit) != 1 || audit[0].Event != release.AuditDeploy || audit[0].Result != ResultDeployed || audit[0].SHA != shaA || audit[0].Prev != "" {
		t.Errorf("audit = %+v", audit)
	}
	if strings.Contains(f.eventText(), secret) {
		t.Errorf("events hold the secret:\n%s", f.eventText())
	}
	if !strings.Contains(f.eventText(), "on "+release.Short(shaA)+" (deployed)") {
		t.Errorf("no done event:\n%s", f.eventText())
	}
	if got := h.under(root + "/.tmp"); len(got) != 0 {
		t.Errorf(".tmp holds %v", got)
	}
}

func TestRedeploySameSHAChangesNothing(t *testing.T) {
	f := newFixture(t, "docker-compose.yml")
	rel := f.release(shaA)
	f.mustDeploy(rel)
	h := f.hosts[0]
	starts := fmt.Sprint(h.starts)
	pulls := len(h.pulls)
	f.mustDeploy(rel)
	if fmt.Sprint(h.starts) != starts {
		t.Errorf("containers started again: %s, before %s", fmt.Sprint(h.starts), starts)
	}
	if len(h.pulls) != pulls {
		t.Errorf("pulled again: %v", h.pulls)
	}
	if got := len(f.audit(h)); got != 2 {
		t.Errorf("audit has %d lines, want 2", got)
	}
	if info := releaseJSON(t, h, shaA); info.Result != release.Deployed {
		t.Errorf("release.json = %+v", info)
	}
}

func TestNewSHAPrunes(t *testing.T) {
	f := newFixture(t, "docker-compose.yml")
	f.env.Keep = 1
	f.mustDeploy(f.release(shaA))
	f.mustDeploy(f.release(shaB))
	h := f.hosts[0]
	if got := h.link(root + "/current"); got != "releases/"+shaB {
		t.Errorf("current -> %q", got)
	}
	if h.exists(root + "/releases/" + shaA) {
		t.Errorf("keep 1 kept the old release: %v", h.under(root+"/releases"))
	}
	if fmt.Sprint(h.removed) != fmt.Sprint([]string{ref(shaA)}) {
		t.Errorf("removed images %v, want the old app image only", h.removed)
	}
	if got := h.running("shop")["web"]; got != ref(shaB) {
		t.Errorf("web runs %s", got)
	}
	audit := f.audit(h)
	if len(audit) != 2 || audit[1].Prev != shaA || audit[1].SHA != shaB {
		t.Errorf("audit = %+v", audit)
	}
}

func TestUnhealthyRestoresPrevious(t *testing.T) {
	f := newFixture(t, "docker-compose.yml")
	f.mustDeploy(f.release(shaA))
	h := f.hosts[0]
	relB := f.release(shaB)
	h.unhealthy = func(s types.ServiceConfig) bool { return s.Image == ref(shaB) }
	sum, err := f.deploy(relB)
	if !errors.Is(err, ErrDeployFailed) || errors.Is(err, ErrRestoreFailed) {
		t.Fatalf("err = %v, want ErrDeployFailed", err)
	}
	if strings.Contains(err.Error(), secret) || !strings.Contains(err.Error(), redact.Redacted) {
		t.Errorf("the error is not redacted: %v", err)
	}
	if strings.Contains(f.eventText(), secret) {
		t.Errorf("events hold the secret:\n%s", f.eventText())
	}
	if r := sum.Hosts[0]; r.Result != ResultFailed || r.Current != shaA {
		t.Errorf("result = %+v", r)
	}
	if got := h.link(root + "/current"); got != "releases/"+shaA {
		t.Errorf("current -> %q", got)
	}
	if got := h.running("shop")["web"]; got != ref(shaA) {
		t.Errorf("web runs %s, want the previous release", got)
	}
	if info := releaseJSON(t, h, shaB); info.Result != release.Failed || !info.CurrentSince.IsZero() {
		t.Errorf("release.json of the failed release = %+v", info)
	}
	audit := f.audit(h)
	last := audit[len(audit)-1]
	if last.Result != ResultFailed || last.Current != shaA || last.Error == "" || strings.Contains(last.Error, secret) {
		t.Errorf("audit = %+v", last)
	}
	if !strings.Contains(f.eventText(), "on "+release.Short(shaA)+" (deploy of "+release.Short(shaB)+" failed; previous release restored)") {
		t.Errorf("no done event:\n%s", f.eventText())
	}
	if h.exists(root + "/.lock") {
		t.Error("the lock was not released")
	}
}

func TestUnhealthyFirstDeployStops(t *testing.T) {
	f := newFixture(t, "docker-compose.yml")
	h := f.hosts[0]
	h.unhealthy = func(s types.ServiceConfig) bool { return s.Name == "web" }
	sum, err := f.deploy(f.release(shaA))
	if !errors.Is(err, ErrDeployFailed) {
		t.Fatalf("err = %v", err)
	}
	if r := sum.Hosts[0]; r.Current != "" {
		t.Errorf("result = %+v", r)
	}
	if h.exists(root + "/current") {
		t.Error("current was made")
	}
	if got := h.running("shop"); len(got) != 0 {
		t.Errorf("still running: %v", got)
	}
	if !strings.Contains(f.eventText(), "no previous release") {
		t.Errorf("the events do not say there was nothing to go back to:\n%s", f.eventText())
	}
}

func TestRestoreFails(t *testing.T) {
	f := newFixture(t, "docker-compose.yml")
	f.mustDeploy(f.release(shaA))
	h := f.hosts[0]
	h.unhealthy = func(s types.ServiceConfig) bool { return s.Name == "web" }
	sum, err := f.deploy(f.release(shaB))
	if !errors.Is(err, ErrRestoreFailed) {
		t.Fatalf("err = %v, want ErrRestoreFailed", err)
	}
	if r := sum.Hosts[0]; r.Result != ResultRestoreFailed {
		t.Errorf("result = %+v", r)
	}
}

func TestJobs(t *testing.T) {
	t.Run("succeeds", func(t *testing.T) {
		f := newFixture(t, "with-job.yml")
		h := f.hosts[0]
		h.jobLogs = []string{"migrating 1 of 2", "token " + secret, "done"}
		f.mustDeploy(f.release(shaA))
		// Its output, line by line as it ran, between the job's start and its success.
		var seen []string
		for _, e := range f.events {
			switch {
			case e.Step == StepJobOutput && e.Service == "migrate":
				seen = append(seen, e.Msg)
			case e.Step == StepJob && strings.HasPrefix(e.Msg, "running"):
				seen = append(seen, "start")
			case e.Step == StepJob && strings.HasSuffix(e.Msg, "succeeded"):
				seen = append(seen, "end")
			}
		}
		if got := strings.Join(seen, "|"); got != "start|migrating 1 of 2|token [redacted]|done|end" {
			t.Errorf("the job's output as shown = %q", got)
		}
		jobs := releaseJSON(t, h, shaA).Jobs
		if len(jobs) != 1 || jobs[0].Service != "migrate" || jobs[0].Code != 0 || strings.Join(jobs[0].Lines, "|") != "migrating 1 of 2|token [redacted]|done" {
			t.Errorf("release.json's jobs = %+v", jobs)
		}
		if h.starts["migrate"] != 1 {
			t.Errorf("the job ran %d times", h.starts["migrate"])
		}
		if _, ok := h.running("shop")["migrate"]; ok || h.containers["shop/migrate"] != nil {
			t.Error("the job's container was not removed")
		}
		if h.running("shop")["web"] != ref(shaA) {
			t.Errorf("running = %v", h.running("shop"))
		}
	})
	t.Run("fails", func(t *testing.T) {
		f := newFixture(t, "with-job.yml")
		f.mustDeploy(f.release(shaA))
		h := f.hosts[0]
		h.jobExit["migrate"] = 3
		h.jobLogs = []string{"migrating", "error: column exists; token " + secret}
		sum, err := f.deploy(f.release(shaB))
		var je *JobError
		if !errors.Is(err, ErrDeployFailed) || !errors.As(sum.Hosts[0].Err, &je) || je.Code != 3 {
			t.Fatalf("err = %v", err)
		}
		if !strings.Contains(err.Error(), "column exists") || strings.Contains(err.Error(), secret) {
			t.Errorf("the error lacks the job's logs or holds the secret: %v", err)
		}
		if got := h.link(root + "/current"); got != "releases/"+shaA {
			t.Errorf("current -> %q", got)
		}
		if h.running("shop")["web"] != ref(shaA) {
			t.Errorf("web was switched: %v", h.running("shop"))
		}
		if jobs := releaseJSON(t, h, shaB).Jobs; len(jobs) != 1 || jobs[0].Code != 3 || len(jobs[0].Lines) != 2 || strings.Contains(jobs[0].Lines[1], secret) {
			t.Errorf("release.json's jobs of the failed release = %+v", jobs)
		}
	})
}

func TestLocked(t *testing.T) {
	f := newFixture(t, "docker-compose.yml", "deploy@web1", "deploy@web2")
	rel := f.release(shaA)
	other := Holder{Who: "alice@desk", Machine: "desk", PID: 4242, Command: "deploy", SHA: shaB, Time: time.Now()}
	lockHost(t, f.hosts[1], other)

	sum, err := f.deploy(rel)
	var le *LockedError
	if !errors.Is(err, ErrLocked) || !errors.As(err, &le) || le.Host != "deploy@web2" || le.Holder.Who != "alice@desk" {
		t.Fatalf("err = %v", err)
	}
	if sum.Hosts[1].Result != ResultLocked || sum.Hosts[0].Result != ResultSkipped {
		t.Errorf("results = %+v", sum.Hosts)
	}
	for _, h := range f.hosts {
		if h.exists(root + "/releases") {
			t.Errorf("%s: something was uploaded: %v", h.name, h.under(root))
		}
	}
	if f.hosts[0].exists(root + "/.lock") {
		t.Error("web1's lock was not released")
	}
	if holder, _ := f.hosts[1].file(root + "/.lock/holder.json"); !strings.Contains(holder, "alice") {
		t.Error("web2's lock was touched")
	}

	t.Run("wait", func(t *testing.T) {
		o := f.options(rel)
		o.LockWait = 10 * time.Second
		o.LockPoll = 10 * time.Millisecond
		progress := o.Progress
		o.Progress = func(e Event) {
			progress(e)
			if strings.HasPrefix(e.Msg, "waiting up to") {
				// alice releases her lock once the deploy waits for it.
				f.hosts[1].RemoveAll(context.Background(), root+"/.lock")
			}
		}
		if _, err := Run(context.Background(), o); err != nil {
			t.Fatalf("deploy with --lock-wait: %v", err)
		}
		if !strings.Contains(f.eventText(), "waiting up to 10s for the lock held by alice@desk") {
			t.Errorf("no waiting event:\n%s", f.eventText())
		}
	})
}

func lockHost(t *testing.T, h *fakeHost, holder Holder) {
	t.Helper()
	data, err := json.Marshal(holder)
	if err != nil {
		t.Fatal(err)
	}
	h.put(root+"/.lock/holder.json", data)
}

// TestStaleLockTakenOver: a lock is taken over only when its heartbeat has stopped for
// longer than the bound; a fresh heartbeat keeps it, whatever the hostname and pid say
// (two containers share both), and a lock without a heartbeat is never stale.
func TestStaleLockTakenOver(t *testing.T) {
	f := newFixture(t, "docker-compose.yml")
	me := Me("deploy", "")
	gone := Holder{Who: "tester@laptop", Machine: me.Machine, PID: me.PID + 1, Command: "deploy", SHA: shaB, Token: "gone",
		Heartbeat: time.Now().Add(-time.Minute), Refresh: "10s"}
	lockHost(t, f.hosts[0], gone)
	f.mustDeploy(f.release(shaA))
	if !strings.Contains(f.eventText(), "took over the lock left by tester@laptop") {
		t.Errorf("no warning:\n%s", f.eventText())
	}
	if f.hosts[0].exists(root + "/.lock") {
		t.Error("the lock was not released after the deploy")
	}

	for _, tt := range []struct {
		name   string
		holder Holder
	}{
		{"a fresh heartbeat on the same machine, of a pid not seen here", Holder{Who: "root@ci", Machine: me.Machine, PID: me.PID + 1, Command: "deploy", Token: "other",
			Heartbeat: time.Now().Add(-15 * time.Second), Refresh: "10s"}},
		{"the same machine and pid: another container", Holder{Who: "root@ci", Machine: me.Machine, PID: me.PID, Command: "deploy", Token: "other",
			Heartbeat: time.Now(), Refresh: "10s"}},
		{"no heartbeat (an older shipctl)", Holder{Who: "tester@laptop", Machine: me.Machine, PID: me.PID + 1, Command: "deploy", Time: time.Now().Add(-time.Hour)}},
		{"a manual lock is never stale", Holder{Who: "tester@laptop", Machine: me.Machine, PID: me.PID + 1, Command: "lock", Heartbeat: time.Now().Add(-time.Hour), Refresh: "1s"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			lockHost(t, f.hosts[0], tt.holder)
			t.Cleanup(func() { f.hosts[0].RemoveAll(context.Background(), root+"/.lock") })
			if _, err := f.deploy(f.release(shaA)); !errors.Is(err, ErrLocked) {
				t.Errorf("err = %v, want ErrLocked", err)
			}
		})
	}
}

// TestLockHeartbeat: a deploy that holds its lock refreshes holder.json's heartbeat
// while it runs, so that a deploy judging the lock later does not take it over.
func TestLockHeartbeat(t *testing.T) {
	h := newFakeHost("web1")
	l := release.Layout(root)
	em := newEmitter(nil, nil)
	me := Me("deploy", shaA)
	me.Refresh = "10ms"
	if err := acquire(context.Background(), h, l, "web1", me, 0, 0, em); err != nil {
		t.Fatal(err)
	}
	first, _ := h.file(root + "/.lock/holder.json")
	beats := make(chan struct{})
	h.fault = func(op, p string, data []byte) (error, bool) {
		if op == "rename" && strings.HasSuffix(p, " "+root+"/.lock/holder.json") {
			select {
			case beats <- struct{}{}:
			default:
			}
		}
		return nil, false
	}
	ls := heartbeat(context.Background(), func() release.FS { return h }, l, "web1", me, 10*time.Millisecond, em)
	<-beats
	<-beats
	ls.stop()
	var got Holder
	data, _ := h.file(root + "/.lock/holder.json")
	if err := json.Unmarshal([]byte(data), &got); err != nil {
		t.Fatal(err)
	}
	if data == first || !got.mine(me) || got.Heartbeat.Before(me.Time) {
		t.Errorf("holder.json after two heartbeats:\n%s\nfirst:\n%s", data, first)
	}
	if _, stale := got.stale(time.Now()); stale {
		t.Errorf("a lock with a fresh heartbeat is stale: %+v", got)
	}
	if _, stale := got.stale(got.Heartbeat.Add(31 * time.Millisecond)); !stale {
		t.Errorf("a lock whose heartbeat is 3 intervals old is not stale: %+v", got)
	}
	if left := h.under(root + "/.lock"); len(left) != 1 {
		t.Errorf("the heartbeat left files in the lock: %v", left)
	}
}

func TestConnectionCutDuringUpload(t *testing.T) {
	f := newFixture(t, "docker-compose.yml")
	f.mustDeploy(f.release(shaA))
	h := f.hosts[0]
	startsBefore := fmt.Sprint(h.starts)
	h.fault = func(op, p string, data []byte) (error, bool) {
		if op == "write" && strings.HasSuffix(p, "docker-compose.yml") {
			return fmt.Errorf("write %s: %w", p, errCut), true
		}
		return nil, false
	}
	relB := f.release(shaB)
	sum, err := f.deploy(relB)
	if !errors.Is(err, ErrDeployFailed) || errors.Is(err, ErrRestoreFailed) {
		t.Fatalf("err = %v, want ErrDeployFailed (nothing was touched)", err)
	}
	if r := sum.Hosts[0]; r.Current != shaA {
		t.Errorf("result = %+v", r)
	}
	h.fault = nil
	h.dead = false
	if got := h.link(root + "/current"); got != "releases/"+shaA {
		t.Errorf("current -> %q", got)
	}
	if h.exists(root + "/releases/" + shaB) {
		t.Errorf("a partial release is in releases/: %v", h.under(root+"/releases"))
	}
	for _, p := range h.under(root + "/releases") {
		if strings.Contains(p, "tmp") || strings.HasPrefix(p, ".") {
			t.Errorf("a temporary file in releases/: %s", p)
		}
	}
	if fmt.Sprint(h.starts) != startsBefore {
		t.Errorf("containers changed: %v", h.starts)
	}
	// The deploy connected again to put things in order: no lock left, nothing
	// staged, the failure in audit.log.
	if h.dials != 3 {
		t.Errorf("%d dials, want a second one for the failed deploy", h.dials)
	}
	if h.exists(root+"/.lock") || len(h.under(root+"/.tmp")) > 0 {
		t.Errorf("left behind: %v", h.under(root))
	}
	if a := f.audit(h); len(a) != 2 || a[1].Result != ResultFailed || a[1].Current != shaA {
		t.Errorf("audit = %+v", a)
	}
	if !strings.Contains(f.eventText(), "the connection broke") {
		t.Errorf("no warning of the broken connection:\n%s", f.eventText())
	}

	f.mustDeploy(relB)
	if got := h.link(root + "/current"); got != "releases/"+shaB {
		t.Errorf("after the retry current -> %q", got)
	}
	if got := h.under(root + "/.tmp"); len(got) != 0 {
		t.Errorf(".tmp holds %v after the retry", got)
	}
}

func TestParallelHostsFailIndependently(t *testing.T) {
	f := newFixture(t, "docker-compose.yml", "deploy@web1", "deploy@web2", "deploy@web3")
	f.env.Parallel = 2
	f.mustDeploy(f.release(shaA))
	f.hosts[1].unhealthy = func(s types.ServiceConfig) bool { return s.Image == ref(shaB) }
	sum, err := f.deploy(f.release(shaB))
	if !errors.Is(err, ErrDeployFailed) {
		t.Fatalf("err = %v", err)
	}
	want := []struct {
		result  event.Result
		current string
	}{{ResultDeployed, shaB}, {ResultFailed, shaA}, {ResultDeployed, shaB}}
	for i, w := range want {
		if r := sum.Hosts[i]; r.Result != w.result || r.Current != w.current {
			t.Errorf("%s: %+v, want %s on %s", r.Host, r, w.result, release.Short(w.current))
		}
	}
	if !strings.Contains(err.Error(), "failed on 1 of 3 host(s)") || !strings.Contains(err.Error(), "deploy@web2") {
		t.Errorf("err = %v", err)
	}
}

func TestPreflightTouchesNothing(t *testing.T) {
	t.Run("image not pushed", func(t *testing.T) {
		f := newFixture(t, "docker-compose.yml")
		rel := f.release(shaA)
		delete(f.reg, ref(shaA))
		_, err := f.deploy(rel)
		if !errors.Is(err, ErrNotInRegistry) || !strings.Contains(err.Error(), ref(shaA)) {
			t.Fatalf("err = %v", err)
		}
		if len(f.hosts[0].ops) != 0 {
			t.Errorf("the host was used: %v", f.hosts[0].ops)
		}
	})
	t.Run("a host unreachable", func(t *testing.T) {
		f := newFixture(t, "docker-compose.yml", "deploy@web1", "deploy@web2")
		f.net.dials["deploy@web2"] = errors.New("connect: connection refused")
		_, err := f.deploy(f.release(shaA))
		if err == nil || !strings.Contains(err.Error(), "deploy@web2: connect: connection refused") {
			t.Fatalf("err = %v", err)
		}
		assertUntouched(t, f.hosts[0])
	})
	t.Run("an engine down", func(t *testing.T) {
		f := newFixture(t, "docker-compose.yml", "deploy@web1", "deploy@web2")
		f.hosts[0].pingErr = errors.New("Cannot connect to the Docker daemon")
		_, err := f.deploy(f.release(shaA))
		if err == nil || !strings.Contains(err.Error(), "deploy@web1: Cannot connect") {
			t.Fatalf("err = %v", err)
		}
		assertUntouched(t, f.hosts[1])
	})
	t.Run("confirmation refused", func(t *testing.T) {
		f := newFixture(t, "docker-compose.yml")
		o := f.options(f.release(shaA))
		var got Preview
		o.Confirm = func(ctx context.Context, p Preview) error {
			got = p
			return context.Canceled
		}
		_, err := Run(context.Background(), o)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v", err)
		}
		if got.SHA != shaA || len(got.Hosts) != 1 || !got.Hosts[0].Plan.Changes() || got.Subject != "commit aaaa" {
			t.Errorf("preview = %+v", got)
		}
		assertUntouched(t, f.hosts[0])
	})
}

// assertUntouched fails if anything but reads, and the lock taken and released again
// (and the upload's stage made and removed), happened on h, or if the lock or a
// folder of the app's is left behind.
func assertUntouched(t *testing.T, h *fakeHost) {
	t.Helper()
	for _, op := range h.ops {
		verb, p, _ := strings.Cut(op, " ")
		switch {
		case verb == "readlink", verb == "read", verb == "readdir", verb == "ping", verb == "check", verb == "containers", verb == "hasimage":
		case (verb == "mkdir" || verb == "remove") && strings.HasPrefix(p, root+"/.tmp/release-"):
			// The upload's stage, made by the preflight (removed again, below).
		case (verb == "mkdirall" || verb == "remove") && (p == root || p == root+"/.tmp"),
			strings.HasPrefix(p, root+"/.lock"), strings.HasPrefix(p, root+"/.tmp/unlocked-"):
			// The lock, taken in the preflight and released when nothing follows.
		default:
			t.Errorf("%s: %s happened before the first change was allowed", h.name, op)
		}
	}
	if h.exists(root) {
		t.Errorf("%s: the app's folder was left behind: %v", h.name, h.under(root))
	}
}

func TestConnectionLostForGood(t *testing.T) {
	f := newFixture(t, "docker-compose.yml")
	f.mustDeploy(f.release(shaA))
	h := f.hosts[0]
	h.fault = func(op, p string, data []byte) (error, bool) {
		if op == "up" {
			f.net.dials["deploy@web1"] = errors.New("connect: connection refused")
			return errCut, true
		}
		return nil, false
	}
	sum, err := f.deploy(f.release(shaB))
	if !errors.Is(err, ErrRestoreFailed) {
		t.Fatalf("err = %v, want ErrRestoreFailed: the host may run a part of the release", err)
	}
	if r := sum.Hosts[0]; r.Result != ResultRestoreFailed || !strings.Contains(r.Err.Error(), "shipctl unlock") {
		t.Errorf("result = %+v", r)
	}
}

func TestCancelDuringApplyRestores(t *testing.T) {
	f := newFixture(t, "docker-compose.yml")
	f.mustDeploy(f.release(shaA))
	h := f.hosts[0]
	ctx, cancel := context.WithCancel(context.Background())
	fired := false
	var during map[string]string
	// Ctrl-C while the engine applies shaB: its container has been recreated.
	h.afterUp = func() error {
		if fired {
			return nil
		}
		fired = true
		during = maps.Clone(h.runningLocked("shop"))
		cancel()
		return context.Canceled
	}
	o := f.options(f.release(shaB))
	sum, err := Run(ctx, o)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if during["web"] != ref(shaB) {
		t.Fatalf("when cancelled the host ran %v: the test does not cut the apply", during)
	}
	if r := sum.Hosts[0]; r.Current != shaA || r.Result != ResultFailed {
		t.Errorf("result = %+v", r)
	}
	if got := h.running("shop")["web"]; got != ref(shaA) {
		t.Errorf("web runs %s after the cancellation, want %s put back", got, ref(shaA))
	}
	events := f.eventText()
	for _, want := range []string{"putting back " + release.Short(shaA), release.Short(shaA) + " is running and healthy again", "(deploy of " + release.Short(shaB) + " failed; previous release restored)"} {
		if !strings.Contains(events, want) {
			t.Errorf("no %q in the events:\n%s", want, events)
		}
	}
	if link := h.link(root + "/current"); link != "releases/"+shaA {
		t.Errorf("current -> %s", link)
	}
	if a := f.audit(h); len(a) != 2 || a[1].Result != ResultFailed || a[1].Current != shaA {
		t.Errorf("audit: %+v", a)
	}
	if h.exists(root + "/.lock") {
		t.Error("the lock was kept")
	}
}

func TestPrepare(t *testing.T) {
	f := newFixture(t, "docker-compose.yml")
	rel := f.release(shaA)
	if fmt.Sprint(rel.Images) != fmt.Sprint([]string{"redis:7", ref(shaA)}) || fmt.Sprint(rel.Built) != fmt.Sprint([]string{ref(shaA)}) {
		t.Errorf("images %v, built %v", rel.Images, rel.Built)
	}
	if rel.Project.WorkingDir != root+"/releases/"+shaA || rel.Project.Name != "shop" {
		t.Errorf("project %s in %s", rel.Project.Name, rel.Project.WorkingDir)
	}
	if got := f.redact.String("x " + secret + " y"); got != "x "+redact.Redacted+" y" {
		t.Errorf("the env_file's value is not known as a secret: %q", got)
	}

	t.Run("local bind mount refused", func(t *testing.T) {
		f := newFixture(t, "local-bind.yml")
		_, err := Prepare(context.Background(), PrepareOptions{Config: f.cfg, Env: f.env, SHA: shaA, Environ: []string{}})
		if err == nil || !strings.Contains(err.Error(), `service "web": the bind mount of ./data`) || strings.Contains(err.Error(), "/srv/shared") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("compose file of another commit", func(t *testing.T) {
		f := newFixture(t, "docker-compose.yml")
		old := []byte("services:\n  web:\n    build: ./web\n    image: shop/web\n    command: [old]\n")
		rel, err := Prepare(context.Background(), PrepareOptions{Config: f.cfg, Env: f.env, SHA: shaA, Compose: old, Environ: []string{}})
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := rel.Project.Services["redis"]; ok || !strings.Contains(string(rel.File), "- old") {
			t.Errorf("not the given file:\n%s", rel.File)
		}
	})
	t.Run("config file is the release's", func(t *testing.T) {
		want := []string{root + "/releases/" + shaA + "/docker-compose.yml"}
		if fmt.Sprint(rel.Project.ComposeFiles) != fmt.Sprint(want) {
			t.Errorf("config files %v, want %v", rel.Project.ComposeFiles, want)
		}
	})
	t.Run("optional dependency on a disabled service", func(t *testing.T) {
		f := newFixture(t, "optional-dep.yml")
		rel, err := Prepare(context.Background(), PrepareOptions{Config: f.cfg, Env: f.env, SHA: shaA, Environ: []string{}})
		if err != nil {
			t.Fatalf("a file that loads fails at deploy: %v", err)
		}
		if strings.Contains(string(rel.File), "metrics") {
			t.Errorf("the release's file names the disabled service:\n%s", rel.File)
		}
		back, err := loadRelease(context.Background(), "shop", release.Layout(root), shaA, rel.File)
		if err != nil {
			t.Fatalf("read back: %v", err)
		}
		deps := back.Services["web"].DependsOn
		if _, ok := deps["redis"]; !ok || len(deps) != 1 {
			t.Errorf("web depends on %v, want redis only", deps)
		}
	})
	t.Run("no registry", func(t *testing.T) {
		f := newFixture(t, "docker-compose.yml")
		f.cfg.Registry = ""
		_, err := Prepare(context.Background(), PrepareOptions{Config: f.cfg, Env: f.env, SHA: shaA})
		if !errors.Is(err, config.ErrInvalid) {
			t.Errorf("err = %v", err)
		}
	})
}
