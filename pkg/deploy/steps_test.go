package deploy

import (
	"context"
	"errors"
	"io/fs"
	"path"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/compose-spec/compose-go/v2/types"

	"github.com/shipdeploy/ship/pkg/engine"
	"github.com/shipdeploy/ship/pkg/release"
)

// step is one request's turn on the far side of a slow link, in the virtual time of a
// synctest bubble: a time that passes only while every goroutine waits, so that what
// a deploy's phase takes, divided by it, is how many steps of it waited for one
// another (requests in flight together share theirs). No wall clock is read. The
// lock's heartbeat (every 10s) never comes in the way of so short a deploy.
const step = time.Millisecond

// stepCosts are the turns each file-system request of a host takes: one each
// ("steps", what the deploy waits for), or the round trips of pkg/sshhost's pipelined
// SFTP client (a file's open, then its data; a listing's open, then its read).
var stepCosts = map[string]map[string]int{
	"steps":       {},
	"round trips": {"write": 2, "read": 2, "append": 2, "readdir": 2},
}

// steppedHost is a fakeHost whose file requests each take their cost in steps, and
// whose Up takes long next to them (the apply: what the deploy's background work
// hides behind). It has pkg/sshhost's batches: Lstat, MoveAway and RemoveIn, one step
// each, and Sequence, one step for its first requests and one for the rest.
type steppedHost struct {
	*fakeConn
	costs map[string]int
	mu    sync.Mutex
	upAt  time.Time // when the last Up ended
}

func (h *steppedHost) wait(op string) {
	n := h.costs[op]
	if n == 0 {
		n = 1
	}
	time.Sleep(time.Duration(n) * step)
}

func (h *steppedHost) MkdirAll(ctx context.Context, dir string) error {
	h.wait("mkdirall")
	return h.fakeConn.MkdirAll(ctx, dir)
}

func (h *steppedHost) Mkdir(ctx context.Context, dir string) error {
	h.wait("mkdir")
	return h.fakeConn.Mkdir(ctx, dir)
}

func (h *steppedHost) WriteFile(ctx context.Context, name string, data []byte, mode fs.FileMode) error {
	h.wait("write")
	return h.fakeConn.WriteFile(ctx, name, data, mode)
}

func (h *steppedHost) ReadFile(ctx context.Context, name string) ([]byte, error) {
	h.wait("read")
	return h.fakeConn.ReadFile(ctx, name)
}

func (h *steppedHost) Rename(ctx context.Context, from, to string) error {
	h.wait("rename")
	return h.fakeConn.Rename(ctx, from, to)
}

func (h *steppedHost) Symlink(ctx context.Context, target, name string) error {
	h.wait("symlink")
	return h.fakeConn.Symlink(ctx, target, name)
}

func (h *steppedHost) Readlink(ctx context.Context, name string) (string, error) {
	h.wait("readlink")
	return h.fakeConn.Readlink(ctx, name)
}

func (h *steppedHost) ReadDir(ctx context.Context, dir string) ([]fs.FileInfo, error) {
	h.wait("readdir")
	return h.fakeConn.ReadDir(ctx, dir)
}

func (h *steppedHost) RemoveAll(ctx context.Context, p string) error {
	h.wait("remove")
	return h.fakeConn.RemoveAll(ctx, p)
}

func (h *steppedHost) Append(ctx context.Context, name string, data []byte) error {
	h.wait("append")
	return h.fakeConn.Append(ctx, name, data)
}

func (h *steppedHost) Lstat(ctx context.Context, name string) (fs.FileInfo, error) {
	h.wait("lstat")
	if !h.exists(name) {
		return nil, notExist("lstat", name)
	}
	return nil, nil
}

// MoveAway renames from to to and removes it with files inside, in one step.
func (h *steppedHost) MoveAway(ctx context.Context, from, to string, files ...string) error {
	h.wait("moveaway")
	if err := h.fakeConn.Rename(ctx, from, to); err != nil {
		return err
	}
	for _, f := range files {
		_ = h.fakeConn.RemoveAll(ctx, path.Join(to, f))
	}
	return h.fakeConn.RemoveAll(ctx, to)
}

// RemoveIn removes files in dir, then dir, in one step.
func (h *steppedHost) RemoveIn(ctx context.Context, dir string, files ...string) error {
	h.wait("removein")
	for _, f := range files {
		_ = h.fakeConn.RemoveAll(ctx, path.Join(dir, f))
	}
	return h.fakeConn.RemoveAll(ctx, dir)
}

// Sequence carries out first, and then when proceed says so, one step each.
func (h *steppedHost) Sequence(ctx context.Context, first []release.Step, proceed func([]error) bool, then []release.Step) ([]error, []error, bool) {
	h.wait("sequence")
	ferrs, terrs := release.Sequence(ctx, h.fakeConn, first, func(errs []error) bool {
		if !proceed(errs) {
			return false
		}
		h.wait("sequence")
		return true
	}, then)
	return ferrs, terrs, true
}

func (h *steppedHost) Up(ctx context.Context, p *types.Project, o engine.UpOptions) error {
	time.Sleep(20 * step)
	err := h.fakeConn.Up(ctx, p, o)
	h.mu.Lock()
	h.upAt = time.Now()
	h.mu.Unlock()
	return err
}

// phases are the steps a deploy's phases took: from the start to the preflight's
// "ready" (connect, the checks, the lock, the preflight), from there to "uploaded",
// and from the end of the apply to the host's "done" (switch, record, audit, unlock,
// prune).
type phases struct{ preflight, upload, end int }

// steppedDeploy deploys sha with f's one host behind a steppedHost of costs, in a
// synctest bubble, and returns its phases.
func steppedDeploy(t *testing.T, f *fixture, sha string, costs map[string]int) phases {
	t.Helper()
	var got phases
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		at := map[string]time.Time{}
		var sh *steppedHost
		o := f.options(f.release(sha))
		o.Dial = func(ctx context.Context, dest string) (Host, error) {
			c, err := f.net.dial(ctx, dest)
			if err != nil {
				return nil, err
			}
			sh = &steppedHost{fakeConn: c.(*fakeConn), costs: costs}
			return sh, nil
		}
		o.Progress = func(e Event) {
			mu.Lock()
			defer mu.Unlock()
			for _, mark := range []string{"ready:", "uploaded ", "(deployed)"} {
				if strings.Contains(e.Msg, mark) {
					at[mark] = time.Now()
				}
			}
		}
		start := time.Now()
		if _, err := Run(context.Background(), o); err != nil {
			t.Fatalf("deploy %s: %v", sha, err)
		}
		steps := func(from, to time.Time) int { return int(to.Sub(from) / step) }
		got = phases{
			preflight: steps(start, at["ready:"]),
			upload:    steps(at["ready:"], at["uploaded "]),
			end:       steps(sh.upAt, at["(deployed)"]),
		}
	})
	return got
}

// assertEndOrder fails unless the last deploy's end went in its order, whatever went
// out together: current switched, then release.json's result put in place and the
// audit line written, then the lock released.
func assertEndOrder(t *testing.T, ops []string) {
	t.Helper()
	last := func(match func(verb, p string) bool) int {
		for i := len(ops) - 1; i >= 0; i-- {
			if verb, p, _ := strings.Cut(ops[i], " "); match(verb, p) {
				return i
			}
		}
		return -1
	}
	switched := last(func(verb, p string) bool { return verb == "rename" && strings.HasSuffix(p, " "+root+"/current") })
	recorded := last(func(verb, p string) bool { return verb == "rename" && strings.HasSuffix(p, "/release.json") })
	audited := last(func(verb, p string) bool { return verb == "append" && p == root+"/audit.log" })
	unlocked := last(func(verb, p string) bool { return verb == "rename" && strings.HasPrefix(p, root+"/.lock ") })
	if switched < 0 || !(switched < recorded && switched < audited && recorded < unlocked && audited < unlocked) {
		t.Errorf("the end's order: switch at %d, release.json at %d, audit line at %d, unlock at %d; want the switch first and the unlock last\n%s",
			switched, recorded, audited, unlocked, strings.Join(ops, "\n"))
	}
}

// TestDeploySteps pins how many steps of an agentless deploy wait for one another,
// phase by phase, on a host that has a release: the checks and the lock, then the
// preflight's reads (the lock's holder.json written meanwhile); the upload's writes,
// then its rename (a release the host has: nothing, as release.json is written with
// the result, current's new symlink made with the switch and nothing is left under
// .tmp/ to sweep); the end: current's symlink made and renamed over it, then
// (release.json's result, staged while the release was applied, renamed into place,
// the audit line, the upload's empty stage removed, the lock's release, prune
// meanwhile) in one ordered sequence once the switch is answered. In round trips of
// pkg/sshhost's client, where a file's read or write takes two and a sequence two,
// the end is two: the lock's heartbeat knows that the lock is the run's, and no read
// of holder.json comes before its release.
func TestDeploySteps(t *testing.T) {
	for _, tc := range []struct {
		name  string
		again bool // the release the host runs, deployed again
		keep  int  // releases kept: 1 prunes two
		want  map[string]phases
	}{
		{"unchanged", true, 5, map[string]phases{"steps": {2, 0, 2}, "round trips": {3, 0, 2}}},
		{"changed", false, 5, map[string]phases{"steps": {2, 2, 2}, "round trips": {3, 3, 2}}},
		{"changed and pruned", false, 1, map[string]phases{"steps": {2, 2, 2}, "round trips": {3, 3, 2}}},
	} {
		for cost, want := range tc.want {
			t.Run(tc.name+" in "+cost, func(t *testing.T) {
				f := newFixture(t, "docker-compose.yml")
				f.mustDeploy(f.release(shaA))
				f.mustDeploy(f.release(shaB))
				f.env.Keep = tc.keep
				sha := shaC
				if tc.again {
					sha = shaB
				}
				got := steppedDeploy(t, f, sha, stepCosts[cost])
				t.Logf("%s: preflight %d, upload %d, end %d", cost, got.preflight, got.upload, got.end)
				if tc.keep == 1 && f.hosts[0].exists(root+"/releases/"+shaA) {
					t.Errorf("not pruned: %v", f.hosts[0].under(root+"/releases"))
				}
				assertEndOrder(t, f.hosts[0].ops)
				if got != want {
					t.Errorf("%s: preflight, upload, end = %+v, want %+v\n%s", cost, got, want, f.eventText())
				}
			})
		}
	}
}

// TestDeployWhenLocked: a host locked by someone else is found locked by the try of
// its lock that goes with the checks, and nothing but reads happens on it.
func TestDeployWhenLocked(t *testing.T) {
	f := newFixture(t, "docker-compose.yml")
	f.mustDeploy(f.release(shaA))
	h := f.hosts[0]
	h.put(root+"/.lock/holder.json", []byte(`{"who":"someone@else","pid":7,"command":"lock"}`))
	ops := len(h.ops)
	if _, err := f.deploy(f.release(shaB)); !errors.Is(err, ErrLocked) {
		t.Fatalf("err = %v, want locked", err)
	}
	for _, op := range h.ops[ops:] {
		switch verb, p, _ := strings.Cut(op, " "); {
		case verb == "mkdir" && p == root+"/.lock", verb == "read", verb == "readlink", verb == "ping":
		default:
			t.Errorf("a locked host got %s", op)
		}
	}
}
