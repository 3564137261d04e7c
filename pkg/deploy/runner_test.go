package deploy

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/types"

	"github.com/shipdeploy/ship/pkg/compose"
	"github.com/shipdeploy/ship/pkg/engine"
	"github.com/shipdeploy/ship/pkg/event"
	"github.com/shipdeploy/ship/pkg/release"
)

// fakeStrategy records what the runner asked of it; fail fails Apply of a release.
type fakeStrategy struct {
	applied []string // step:sha
	downs   int
	fail    map[string]error
	changed bool
}

func (s *fakeStrategy) Progress(step event.Step) func(engine.Event) { return nil }
func (s *fakeStrategy) Apply(ctx context.Context, step event.Step, sha string, p *compose.Project) error {
	s.applied = append(s.applied, string(step)+":"+sha)
	s.changed = true
	return s.fail[sha]
}
func (s *fakeStrategy) Down(ctx context.Context) error { s.downs++; return nil }
func (s *fakeStrategy) Changed() bool                  { return s.changed }

// fakeJobs is the runner's engine: pulls and jobs recorded; jobErr fails every job.
type fakeJobs struct {
	pulls  [][]string
	jobs   []string
	jobErr error
}

func (e *fakeJobs) PullImages(ctx context.Context, p *types.Project, services []string, progress func(engine.Event)) error {
	e.pulls = append(e.pulls, services)
	return nil
}

func (e *fakeJobs) RunJob(ctx context.Context, p *types.Project, service string, o engine.JobOptions) error {
	e.jobs = append(e.jobs, service)
	return e.jobErr
}

func runnerProject() *compose.Project {
	return &compose.Project{
		Project: &types.Project{Name: "shop", Services: types.Services{"web": {Name: "web"}, "migrate": {Name: "migrate"}}},
		Ship:    map[string]compose.Ship{"migrate": {Job: compose.JobPreDeploy}},
	}
}

func newRunner(t *testing.T, kind Kind, sha, prev string) (*Runner, *fakeStrategy, *fakeJobs, *[]Note) {
	t.Helper()
	st := release.NewStore(release.OS{}, t.TempDir())
	for _, s := range []string{sha, prev} {
		if s != "" {
			if err := st.Upload(context.Background(), release.Info{SHA: s, Result: release.Uploaded}, []byte("services: {}\n")); err != nil {
				t.Fatal(err)
			}
		}
	}
	if prev != "" {
		if err := st.SwitchCurrent(context.Background(), prev); err != nil {
			t.Fatal(err)
		}
	}
	sw, jobs := &fakeStrategy{fail: map[string]error{}}, &fakeJobs{}
	var notes []Note
	r := &Runner{
		Kind: kind, Store: st, Engine: jobs, Strategy: sw, SHA: sha, Project: runnerProject(), Prev: prev,
		Load:   func(ctx context.Context, sha string) (*compose.Project, error) { return runnerProject(), nil },
		Audit:  release.AuditEntry{App: "shop", Who: "tester"},
		Report: func(n Note) { notes = append(notes, n) },
	}
	return r, sw, jobs, &notes
}

func TestRunnerDeploy(t *testing.T) {
	ctx := context.Background()
	r, sw, jobs, _ := newRunner(t, KindDeploy, "bbb", "aaa")
	out := r.Run(ctx)
	if out.Result != ResultDeployed || out.Current != "bbb" || out.Err != nil {
		t.Fatalf("outcome %+v", out)
	}
	if len(jobs.pulls) != 1 || jobs.pulls[0] != nil || strings.Join(jobs.jobs, ",") != "migrate" || strings.Join(sw.applied, ",") != "apply:bbb" {
		t.Errorf("pulls %v (a deploy pulls every service), jobs %v, applied %v", jobs.pulls, jobs.jobs, sw.applied)
	}
	if cur, _ := r.Store.Current(ctx); cur != "bbb" {
		t.Errorf("current %s", cur)
	}
	info, _ := r.Store.Info(ctx, "bbb")
	audit, _ := r.Store.Audit(ctx, 0)
	if info.Result != release.Deployed || info.CurrentSince.IsZero() || len(audit) != 1 || audit[0].Event != "deploy" || audit[0].Prev != "aaa" || audit[0].Result != ResultDeployed || audit[0].Who != "tester" {
		t.Errorf("release.json %+v; audit %+v", info, audit)
	}
}

func TestRunnerFailures(t *testing.T) {
	ctx := context.Background()
	boom := errors.New("boom")
	t.Run("a failed job changes nothing", func(t *testing.T) {
		r, sw, jobs, notes := newRunner(t, KindDeploy, "bbb", "aaa")
		jobs.jobErr = boom
		out := r.Run(ctx)
		if out.Result != ResultFailed || out.Current != "aaa" || out.Step != StepJob || !errors.Is(out.Err, boom) || out.Changed {
			t.Fatalf("outcome %+v", out)
		}
		if len(sw.applied) != 0 || !strings.Contains((*notes)[len(*notes)-1].Msg, "nothing was changed") {
			t.Errorf("applied %v; notes %+v", sw.applied, *notes)
		}
		if info, _ := r.Store.Info(ctx, "bbb"); info.Result != release.Failed {
			t.Errorf("release.json %+v", info)
		}
	})
	t.Run("a failed apply puts the previous release back", func(t *testing.T) {
		r, sw, _, _ := newRunner(t, KindDeploy, "bbb", "aaa")
		sw.fail["bbb"] = boom
		out := r.Run(ctx)
		if out.Result != ResultFailed || out.Current != "aaa" || !out.Changed || strings.Join(sw.applied, ",") != "apply:bbb,restore:aaa" {
			t.Fatalf("outcome %+v; applied %v", out, sw.applied)
		}
		if cur, _ := r.Store.Current(ctx); cur != "aaa" {
			t.Errorf("current %s", cur)
		}
		audit, _ := r.Store.Audit(ctx, 0)
		if len(audit) != 1 || audit[0].Result != ResultFailed || audit[0].Current != "aaa" || !strings.Contains(audit[0].Error, "boom") {
			t.Errorf("audit %+v", audit)
		}
	})
	t.Run("restore fails", func(t *testing.T) {
		r, sw, _, _ := newRunner(t, KindRollback, "bbb", "aaa")
		sw.fail["bbb"], sw.fail["aaa"] = boom, errors.New("bang")
		out := r.Run(ctx)
		if out.Result != ResultRestoreFailed || !strings.Contains(out.Err.Error(), "restoring aaa failed: bang") {
			t.Fatalf("outcome %+v", out)
		}
		if info, _ := r.Store.Info(ctx, "bbb"); info.Result != release.Uploaded {
			t.Errorf("a rollback changed the target's release.json: %+v", info)
		}
	})
	t.Run("without a previous release the app goes down", func(t *testing.T) {
		r, sw, _, _ := newRunner(t, KindDeploy, "bbb", "")
		sw.fail["bbb"] = boom
		out := r.Run(ctx)
		if out.Result != ResultFailed || out.Current != "" || sw.downs != 1 {
			t.Fatalf("outcome %+v, downs %d", out, sw.downs)
		}
	})
	t.Run("cancelled before the apply", func(t *testing.T) {
		r, sw, _, _ := newRunner(t, KindDeploy, "bbb", "aaa")
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		out := r.Run(cctx)
		if !errors.Is(out.Err, context.Canceled) || len(sw.applied) != 0 {
			t.Fatalf("outcome %+v; applied %v", out, sw.applied)
		}
		// The record is written though the context ended.
		if audit, _ := r.Store.Audit(ctx, 0); len(audit) != 1 {
			t.Errorf("audit %+v", audit)
		}
	})
	t.Run("an unreachable host is not recorded", func(t *testing.T) {
		r, sw, _, _ := newRunner(t, KindDeploy, "bbb", "aaa")
		sw.fail["bbb"] = boom
		r.Failed = func(ctx context.Context, step event.Step, err error) error { return errors.New("gone") }
		out := r.Run(ctx)
		if out.Unreachable == nil || !out.Changed || len(sw.applied) != 1 {
			t.Fatalf("outcome %+v; applied %v", out, sw.applied)
		}
		if audit, _ := r.Store.Audit(ctx, 0); len(audit) != 0 {
			t.Errorf("audit %+v", audit)
		}
	})
}

func TestRunnerRestoreKind(t *testing.T) {
	ctx := context.Background()
	r, sw, jobs, _ := newRunner(t, KindRestore, "aaa", "aaa")
	out := r.Run(ctx)
	if out.Result != ResultDeployed || len(jobs.jobs) != 0 || strings.Join(sw.applied, ",") != "apply:aaa" {
		t.Fatalf("outcome %+v; jobs %v, applied %v", out, jobs.jobs, sw.applied)
	}
	if len(jobs.pulls) != 1 || strings.Join(jobs.pulls[0], ",") != "web" {
		t.Errorf("a restore pulls the services, not the jobs: %v", jobs.pulls)
	}
	if _, err := os.Stat(r.Store.Layout.Audit()); !os.IsNotExist(err) {
		t.Errorf("a restore wrote audit.log: %v", err)
	}
}
