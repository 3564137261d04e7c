package deploy

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/types"

	"github.com/shipdeploy/ship/pkg/release"
)

func (f *fixture) rollback(sha string) (*Summary, error) {
	f.t.Helper()
	return Rollback(context.Background(), RollbackOptions{Target: f.target(), SHA: sha})
}

func TestRollback(t *testing.T) {
	f := newFixture(t, "docker-compose.yml")
	h := f.hosts[0]
	f.mustDeploy(f.release(shaA))
	f.mustDeploy(f.release(shaB))
	f.mustDeploy(f.release(shaC))
	pulls := len(h.pulls)

	steps := []struct {
		sha, want string
	}{
		{"", shaB},             // the previous release
		{"", shaC},             // and back, like cd -
		{shaA[:7], shaA},       // a prefix of a sha
		{shaB, shaB},           // a whole sha
		{"", shaA},             // previous is what was current before
		{shaA[:12] + "", shaA}, // to the current release: applied again, nothing changes
	}
	for _, st := range steps {
		sum, err := f.rollback(st.sha)
		if err != nil {
			t.Fatalf("rollback %q: %v\n%s", st.sha, err, f.eventText())
		}
		if r := sum.Hosts[0]; r.Result != ResultDeployed || r.Current != st.want {
			t.Fatalf("rollback %q: %+v, want on %s", st.sha, r, release.Short(st.want))
		}
		if got := h.link(root + "/current"); got != "releases/"+st.want {
			t.Fatalf("rollback %q: current -> %s", st.sha, got)
		}
		if got := h.running("shop")["web"]; got != ref(st.want) {
			t.Fatalf("rollback %q: web runs %s", st.sha, got)
		}
	}
	if len(h.pulls) != pulls {
		t.Errorf("a rollback pulled: %v", h.pulls[pulls:])
	}
	audit := f.audit(h)
	last := audit[len(audit)-1]
	if last.Event != release.AuditRollback || last.SHA != shaA || last.Result != ResultDeployed {
		t.Errorf("audit = %+v", last)
	}
	if h.exists(root + "/.lock") {
		t.Error("the lock was kept")
	}
}

// TestRollbackLockedNeverAsks: a rollback takes the locks before its question: a host
// locked by someone else fails it with ErrLocked without asking and with nothing
// changed; while the question is asked, the lock is the rollback's.
func TestRollbackLockedNeverAsks(t *testing.T) {
	f := newFixture(t, "docker-compose.yml", "deploy@web1", "deploy@web2")
	f.mustDeploy(f.release(shaA))
	f.mustDeploy(f.release(shaB))
	lockHost(t, f.hosts[1], Holder{Who: "alice@desk", Machine: "desk", PID: 4242, Command: "lock", Time: time.Now()})
	asked := false
	o := RollbackOptions{Target: f.target(), Confirm: func(context.Context, Preview) error { asked = true; return nil }}
	sum, err := Rollback(context.Background(), o)
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), "deploy@web2 is locked by alice@desk") {
		t.Fatalf("err = %v", err)
	}
	if asked {
		t.Error("the question was asked although a host is locked")
	}
	if len(sum.Hosts) != 2 || sum.Hosts[1].Result != ResultLocked || sum.Hosts[0].Result != ResultSkipped {
		t.Errorf("results = %+v", sum.Hosts)
	}
	for _, h := range f.hosts {
		if got := h.link(root + "/current"); got != "releases/"+shaB {
			t.Errorf("%s: current -> %s, want %s untouched", h.name, got, release.Short(shaB))
		}
	}
	if f.hosts[0].exists(root + "/.lock") {
		t.Error("the lock taken on web1 was kept")
	}

	// Unlocked: while asked, the lock is this rollback's.
	unlockHost(f.hosts[1])
	var holder string
	o.Confirm = func(context.Context, Preview) error {
		holder, _ = f.hosts[0].file(root + "/.lock/holder.json")
		return nil
	}
	if _, err := Rollback(context.Background(), o); err != nil {
		t.Fatalf("rollback: %v\n%s", err, f.eventText())
	}
	if !strings.Contains(holder, `"command": "rollback"`) || !strings.Contains(holder, `"who": "tester@laptop"`) {
		t.Errorf("holder.json while asked = %q, want this rollback's", holder)
	}
}

func TestRollbackRefusals(t *testing.T) {
	f := newFixture(t, "docker-compose.yml")
	if _, err := f.rollback(""); !errors.Is(err, ErrNoRelease) {
		t.Errorf("rollback of a host without releases: %v", err)
	}
	f.mustDeploy(f.release(shaA))
	if _, err := f.rollback(""); !errors.Is(err, ErrNoRelease) || !strings.Contains(err.Error(), "no previous release") {
		t.Errorf("rollback without a previous release: %v", err)
	}
	if _, err := f.rollback("deadbeef"); !errors.Is(err, ErrNoRelease) || !strings.Contains(err.Error(), "it has "+release.Short(shaA)) {
		t.Errorf("rollback to an unknown release: %v", err)
	}
	if got := len(f.audit(f.hosts[0])); got != 1 {
		t.Errorf("refused rollbacks were audited: %d lines", got)
	}
}

func TestRollbackFailureRestores(t *testing.T) {
	f := newFixture(t, "docker-compose.yml")
	h := f.hosts[0]
	f.mustDeploy(f.release(shaA))
	f.mustDeploy(f.release(shaB))
	h.unhealthy = func(s types.ServiceConfig) bool { return s.Image == ref(shaA) }
	sum, err := f.rollback("")
	if !errors.Is(err, ErrDeployFailed) {
		t.Fatalf("err = %v", err)
	}
	if r := sum.Hosts[0]; r.Result != ResultFailed || r.Current != shaB {
		t.Errorf("result = %+v", r)
	}
	if got := h.link(root + "/current"); got != "releases/"+shaB {
		t.Errorf("current -> %s", got)
	}
	if got := h.running("shop")["web"]; got != ref(shaB) {
		t.Errorf("web runs %s", got)
	}
}

func TestStatusAndHistory(t *testing.T) {
	f := newFixture(t, "docker-compose.yml", "deploy@web1", "deploy@web2")
	f.mustDeploy(f.release(shaA))
	f.mustDeploy(f.release(shaB))
	f.net.dials["deploy@web2"] = errors.New("connect: no route to host")

	st, err := Status(context.Background(), f.target())
	if err != nil {
		t.Fatal(err)
	}
	if len(st) != 2 || st[0].Current != shaB || st[0].Release == nil || st[0].Release.Who != "tester@laptop" || len(st[0].Containers) != 2 {
		t.Errorf("web1 = %+v", st[0])
	}
	if st[1].Err == nil || !strings.Contains(st[1].Err.Error(), "no route to host") {
		t.Errorf("web2 = %+v", st[1])
	}

	lockHost(t, f.hosts[0], Holder{Who: "alice@desk", Command: "lock", Reason: "db migration"})
	st, _ = Status(context.Background(), f.target())
	if st[0].Lock == nil || st[0].Lock.Reason != "db migration" {
		t.Errorf("lock = %+v", st[0].Lock)
	}

	hist, err := History(context.Background(), f.target(), 1)
	if err != nil {
		t.Fatal(err)
	}
	if hh := hist[0]; hh.Current != shaB || len(hh.Releases) != 2 || hh.Releases[0].SHA != shaB || len(hh.Audit) != 1 || hh.Audit[0].SHA != shaB {
		t.Errorf("history = %+v", hh)
	}
}

func TestLockAndUnlock(t *testing.T) {
	f := newFixture(t, "docker-compose.yml", "deploy@web1", "deploy@web2")
	ctx := context.Background()
	if err := Lock(ctx, f.target(), "release freeze"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.deploy(f.release(shaA)); !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), `"release freeze"`) {
		t.Errorf("deploy while locked: %v", err)
	}
	if err := Lock(ctx, f.target(), "again"); !errors.Is(err, ErrLocked) {
		t.Errorf("lock while locked: %v", err)
	}
	removed, err := Unlock(ctx, f.target(), UnlockOptions{})
	if err != nil || len(removed) != 2 {
		t.Fatalf("unlock of our own locks: %v, %v", removed, err)
	}
	for _, h := range f.hosts {
		if h.exists(root + "/.lock") {
			t.Errorf("%s is still locked", h.name)
		}
		audit := f.audit(h)
		if len(audit) != 2 || audit[0].Event != release.AuditLock || audit[0].Reason != "release freeze" || audit[1].Event != release.AuditUnlock {
			t.Errorf("%s: audit = %+v", h.name, audit)
		}
	}

	t.Run("held by someone else", func(t *testing.T) {
		lockHost(t, f.hosts[1], Holder{Who: "alice@desk", Machine: "desk", PID: 7, Command: "deploy", SHA: shaB})
		if _, err := Unlock(ctx, f.target(), UnlockOptions{}); !errors.Is(err, ErrLocked) {
			t.Errorf("unlock without --force: %v", err)
		}
		var asked []HostLock
		_, err := Unlock(ctx, f.target(), UnlockOptions{Confirm: func(_ context.Context, others []HostLock) error {
			asked = others
			return errors.New("no")
		}})
		if err == nil || len(asked) != 1 || asked[0].Host != "deploy@web2" || asked[0].Holder.Who != "alice@desk" {
			t.Errorf("unlock asked about %+v: %v", asked, err)
		}
		if !f.hosts[1].exists(root + "/.lock") {
			t.Error("a refused unlock removed the lock")
		}
		if removed, err := Unlock(ctx, f.target(), UnlockOptions{Force: true}); err != nil || len(removed) != 1 {
			t.Errorf("unlock --force: %v, %v", removed, err)
		}
	})
}

// unlockHost removes the lock lockHost put on h.
func unlockHost(h *fakeHost) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for p := range h.nodes {
		if p == root+"/.lock" || strings.HasPrefix(p, root+"/.lock/") {
			delete(h.nodes, p)
		}
	}
}
