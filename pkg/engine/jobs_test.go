package engine_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/shipdeploy/ship/pkg/engine"
)

func TestRunJob(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	ctx := context.Background()
	// Its dependency starts first; the job exits 0.
	if err := s.eng.RunJob(ctx, s.load(fmt.Sprintf(jobYAML, "10s", "http://web:8080/up")), "migrate", engine.JobOptions{}); err != nil {
		t.Fatalf("run job: %v", err)
	}
	if m := s.inspect(s.name + "-migrate-1"); m.State.Status != "exited" || m.State.ExitCode != 0 {
		t.Errorf("migrate state = %s, exit code %d", m.State.Status, m.State.ExitCode)
	}

	// Its output is given line by line as it runs, all of it by the time RunJob returns.
	var out []engine.LogLine
	err := s.eng.RunJob(ctx, s.load(fmt.Sprintf(jobYAML, "1s", "http://nowhere.invalid:8080/")), "migrate", engine.JobOptions{
		Output: func(l engine.LogLine) { out = append(out, l) },
	})
	if !slices.ContainsFunc(out, func(l engine.LogLine) bool {
		return l.Service == "migrate" && strings.Contains(l.Text, "FAIL http://nowhere.invalid:8080/")
	}) {
		t.Errorf("the job's output as it ran = %+v, want its FAIL line", out)
	}
	var je *engine.JobError
	if !errors.As(err, &je) || je.Service != "migrate" || je.Code != 1 {
		t.Fatalf("failing job: %v, want a *JobError with code 1", err)
	}
	if !slices.ContainsFunc(je.Logs, func(l string) bool { return strings.Contains(l, "FAIL http://nowhere.invalid:8080/") }) {
		t.Errorf("job logs = %q, want the check's FAIL line", je.Logs)
	}
	if !strings.Contains(err.Error(), "pre-deploy job migrate exited with code 1") {
		t.Errorf("error %q", err)
	}
}
