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
