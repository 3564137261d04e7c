package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// otherPIDs starts shipctl in a PID namespace of its own, as shipctl in a container on
// the machine (or a CI job in a --network host container) runs: the same hostname, and
// pids that mean nothing to the other side. Without the right to make one (not root),
// the holder's identity is made the same for both sides through SHIP_LOCK_AS instead.
func otherPIDs(t *testing.T, s *site, env []string, args ...string) *proc {
	t.Helper()
	if err := exec.Command("unshare", "--pid", "--fork", "--kill-child", "true").Run(); err == nil {
		return startCmd(t, s.dir, append(slices.Clip(s.env), env...), "unshare", append([]string{"--pid", "--fork", "--kill-child", shipctl}, args...)...)
	}
	host, _ := os.Hostname()
	t.Logf("no PID namespace here; both sides say they are %s:1 (SHIP_LOCK_AS)", host)
	env = append(env, "SHIP_LOCK_AS="+host+":1")
	return start(t, s.dir, append(slices.Clip(s.env), env...), args...)
}

// slowRelease commits a release whose web takes a few seconds to become healthy, so
// that its deploy holds the lock long enough for the others to find it, and pushes it.
func slowRelease(s *site, delay string) string {
	s.t.Helper()
	sha := s.editCompose("slow start "+delay, func(c string) string {
		if i := strings.Index(c, "\n      SLOW_START:"); i >= 0 {
			end := strings.Index(c[i+1:], "\n")
			return c[:i] + "\n      SLOW_START: " + delay + c[i+1+end:]
		}
		return strings.Replace(c, "VERSION: ${VERSION:-v1}", "VERSION: ${VERSION:-v1}\n      SLOW_START: "+delay, 1)
	})
	s.push(sha)
	return sha
}

func noSFTPFailure(t *testing.T, who string, r result) {
	t.Helper()
	if r.code == 1 || strings.Contains(r.stdout+r.stderr, "sftp") {
		t.Errorf("%s failed on the lock:\n%s", who, r)
	}
}

// TestDeployLockSharedHostname (issue 9, item 4): two deploys from processes with the
// same hostname, one of them in another PID namespace, never take each other's lock:
// the one that finds it held exits 6, whether it comes while the other runs or both
// start together. A lock whose holder was killed is taken over once its heartbeat is
// three refresh intervals old, by exactly one of two deploys that wait for it, and
// neither fails on the race.
func TestDeployLockSharedHostname(t *testing.T) {
	t.Parallel()
	s := newSite(t, siteOptions{})
	deploys := 0

	t.Run("while it runs", func(t *testing.T) {
		sha := slowRelease(s, "6s")
		first := start(t, s.dir, s.env, "deploy", "e2e", "--untested", "--json")
		first.waitFor(t, `"msg":"locked `, 60*time.Second)
		second := otherPIDs(t, s, nil, "deploy", "e2e", "--untested").wait(t)
		if second.code != 6 || !strings.Contains(second.stderr, "is locked by") || strings.Contains(second.stdout+second.stderr, "taking over") {
			t.Errorf("the deploy in another PID namespace: want exit 6 naming the holder\n%s", second)
		}
		if r := first.wait(t); r.code != 0 {
			t.Errorf("the first deploy: %s", r)
		}
		deploys++
		if s.current() != sha {
			t.Errorf("current = %q, want %s", s.current(), sha)
		}
	})

	t.Run("started together", func(t *testing.T) {
		slowRelease(s, "5s")
		a := start(t, s.dir, s.env, "deploy", "e2e", "--untested")
		b := otherPIDs(t, s, nil, "deploy", "e2e", "--untested")
		ra, rb := a.wait(t), b.wait(t)
		codes := []int{ra.code, rb.code}
		slices.Sort(codes)
		if !slices.Equal(codes, []int{0, 6}) {
			t.Errorf("want one deploy and one exit 6, got %v\n--- a:\n%s\n--- b:\n%s", codes, ra, rb)
		}
		noSFTPFailure(t, "a", ra)
		noSFTPFailure(t, "b", rb)
		deploys++
	})

	t.Run("the lock of a killed deploy", func(t *testing.T) {
		sha := slowRelease(s, "7s")
		refresh := []string{"SHIP_LOCK_REFRESH=1s"}
		killed := start(t, s.dir, append(slices.Clip(s.env), refresh...), "deploy", "e2e", "--untested", "--json")
		killed.waitFor(t, `"msg":"locked `, 60*time.Second)
		killed.cmd.Process.Kill()
		killed.wait(t)
		holder, err := os.ReadFile(filepath.Join(s.path, ".lock", "holder.json"))
		if err != nil {
			t.Fatalf("the killed deploy left no lock: %v", err)
		}

		// Two deploys wait for it at once; one takes it over once stale, the other
		// waits for that one, and both deploy.
		args := []string{"deploy", "e2e", "--untested", "--lock-wait", "2m"}
		a := start(t, s.dir, append(slices.Clip(s.env), refresh...), args...)
		b := otherPIDs(t, s, refresh, args...)
		ra, rb := a.wait(t), b.wait(t)
		if ra.code != 0 || rb.code != 0 {
			t.Errorf("both deploys should succeed\n--- a:\n%s\n--- b:\n%s\nthe killed one's lock:\n%s", ra, rb, holder)
		}
		noSFTPFailure(t, "a", ra)
		noSFTPFailure(t, "b", rb)
		took := strings.Count(ra.stdout+ra.stderr+rb.stdout+rb.stderr, "took over the lock left by")
		if took != 1 {
			t.Errorf("%d deploys took the killed one's lock over, want 1\n--- a:\n%s\n--- b:\n%s", took, ra, rb)
		}
		deploys += 2
		if s.current() != sha {
			t.Errorf("current = %q, want %s", s.current(), sha)
		}
		if left, _ := filepath.Glob(filepath.Join(s.path, ".lock*")); len(left) > 0 {
			t.Errorf("a lock is left: %v", left)
		}
	})

	if a := s.audit(); len(a) != deploys {
		t.Errorf("audit.log has %d lines, want one per deploy that ran (%d): %+v", len(a), deploys, a)
	}
}
