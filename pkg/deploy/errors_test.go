package deploy

import (
	"errors"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/types"

	"github.com/shipdeploy/ship/pkg/release"
)

// TestHostsErrorBrief: a host that fails a deploy shows its error as an error event;
// the command's error, briefed for a reader who saw those events, names the host with
// "see above" and does not say its error again, while the whole error (for --json, the
// notifications) keeps it.
func TestHostsErrorBrief(t *testing.T) {
	f := newFixture(t, "docker-compose.yml", "deploy@web1", "deploy@web2")
	f.mustDeploy(f.release(shaA))
	f.hosts[0].unhealthy = func(s types.ServiceConfig) bool { return s.Image == ref(shaB) }
	sum, err := f.deploy(f.release(shaB))
	var he *HostsError
	if !errors.As(err, &he) || !errors.Is(err, ErrDeployFailed) {
		t.Fatalf("err = %v (%T)", err, err)
	}
	hostErr := sum.Hosts[0].Err
	if hostErr == nil {
		t.Fatalf("web1: %+v, want its error", sum.Hosts[0])
	}
	shown := map[string]bool{}
	f.mu.Lock()
	for _, e := range f.events {
		if e.Level == LevelError && e.Step != StepDone && strings.Contains(hostErr.Error(), e.Msg) {
			shown[e.Host] = true
		}
	}
	f.mu.Unlock()
	if !shown["deploy@web1"] {
		t.Fatalf("web1's error %q is in no error event:\n%s", hostErr, f.eventText())
	}
	brief := he.Brief(func(host string) bool { return shown[host] })
	if want := "deploy failed: deploy of " + release.Short(shaB) + " failed on 1 of 2 host(s): deploy@web1 (see above)"; brief != want {
		t.Errorf("brief = %q\nwant    %q", brief, want)
	}
	if !strings.Contains(err.Error(), hostErr.Error()) {
		t.Errorf("the whole error %q lost web1's %q", err, hostErr)
	}
	// A host whose error no event showed keeps it.
	if got := he.Brief(func(string) bool { return false }); got != err.Error() {
		t.Errorf("brief with nothing shown = %q, want the whole error %q", got, err)
	}
}
