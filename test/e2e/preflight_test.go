package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestShipPreflightFirst: ship checks the registry, the hosts and the lock before it
// builds or tests anything: a mistyped registry and a held lock fail within seconds,
// with the preflight step named, the right exit code, and nothing built.
func TestShipPreflightFirst(t *testing.T) {
	t.Parallel()
	s := newSite(t, siteOptions{})
	for _, tc := range []struct {
		name     string
		env      []string
		lock     bool
		wantCode int
		wantErr  string
	}{
		{name: "mistyped registry", env: []string{fmt.Sprintf("SHIP_REGISTRY=127.0.0.1:%d", freePort(t))}, wantCode: 1, wantErr: "registry 127.0.0.1:"},
		{name: "lock held", lock: true, wantCode: 6, wantErr: "is locked by"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.lock {
				if r := s.run("lock", "e2e", "--reason", "maintenance"); r.code != 0 {
					t.Fatalf("lock: %s", r)
				}
				t.Cleanup(func() { s.run("unlock", "e2e", "--yes") })
			}
			began := time.Now()
			r := run(t, s.dir, append(append([]string(nil), s.env...), tc.env...), "ship", "e2e", "--json")
			took := time.Since(began)
			t.Logf("shipctl ship to its failure (%s): %s", tc.name, took.Round(10*time.Millisecond))
			if r.code != tc.wantCode || !strings.Contains(r.stderr, tc.wantErr) {
				t.Fatalf("want exit %d and %q:\n%s", tc.wantCode, tc.wantErr, r)
			}
			evs := events(t, r)
			var kinds []string
			for _, ev := range evs {
				kinds = append(kinds, fmt.Sprint(ev["event"]))
			}
			for _, k := range kinds {
				if strings.HasPrefix(k, "build") || strings.HasPrefix(k, "test") || strings.HasPrefix(k, "push") {
					t.Errorf("%s ran before the preflight failed: %v", k, kinds)
				}
			}
			failed := eventsOf(evs, "ship_failed")
			if len(failed) != 1 || failed[0]["step"] != "preflight" || failed[0]["exit_code"] != float64(tc.wantCode) {
				t.Errorf("ship_failed = %v, want step preflight, exit_code %d", failed, tc.wantCode)
			}
		})
	}
}

// TestDeployLockBeforeQuestion: deploy takes the lock before it shows the plan and
// asks: a held lock fails it with exit 6 and no plan, and with --json its last event
// is one deploy_result that carries the exit code.
func TestDeployLockBeforeQuestion(t *testing.T) {
	t.Parallel()
	s := newSite(t, siteOptions{grace: "30s"})
	s.push(git(t, s.dir, "rev-parse", "HEAD"))
	if r := s.run("lock", "e2e", "--reason", "maintenance"); r.code != 0 {
		t.Fatalf("lock: %s", r)
	}
	t.Cleanup(func() { s.run("unlock", "e2e", "--yes") })
	began := time.Now()
	r := s.run("deploy", "e2e", "--untested", "--yes", "--json")
	t.Logf("shipctl deploy to its failure (lock held, grace 30s): %s", time.Since(began).Round(10*time.Millisecond))
	if r.code != 6 || !strings.Contains(r.stderr, `"maintenance"`) {
		t.Fatalf("want exit 6 naming the lock's reason:\n%s", r)
	}
	evs := events(t, r)
	if len(eventsOf(evs, "plan")) > 0 || len(eventsOf(evs, "grace")) > 0 {
		t.Errorf("the plan or the countdown came before the lock:\n%s", r)
	}
	last := evs[len(evs)-1]
	if last["event"] != "deploy_result" || last["exit_code"] != float64(6) {
		t.Errorf("last event = %v, want deploy_result with exit_code 6", last)
	}
	if len(eventsOf(evs, "deploy_result")) != 1 {
		t.Errorf("want one deploy_result:\n%s", r)
	}
}
