package deploy

import (
	"context"
	"strings"
	"testing"

	"github.com/shipdeploy/ship/pkg/engine"
)

// TestLogsOfAJob: shipctl logs ENV JOB shows the job's last run from release.json
// (its container is gone), scrubbed, after a line saying which run it is; the other
// services named still come from their containers.
func TestLogsOfAJob(t *testing.T) {
	f := newFixture(t, "with-job.yml")
	h := f.hosts[0]
	h.jobLogs = []string{"migrating", "token " + secret}
	f.mustDeploy(f.release(shaA))
	h.jobLogs = []string{"web says hi"}

	var got []string
	err := Logs(context.Background(), f.target(), engine.LogOptions{Services: []string{"migrate", "web"}}, func(host string, l engine.LogLine) {
		got = append(got, l.Service+": "+l.Text)
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := "migrate: migrating|migrate: token [redacted]|web: web says hi"; strings.Join(got, "|") != want {
		t.Errorf("lines = %q, want %q", strings.Join(got, "|"), want)
	}
	if !strings.Contains(f.eventText(), "last run of pre-deploy job migrate: release aaaaaaaaaaaa, exit code 0") {
		t.Errorf("no line saying which run:\n%s", f.eventText())
	}
}
