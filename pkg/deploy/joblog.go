package deploy

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/shipdeploy/ship/pkg/engine"
	"github.com/shipdeploy/ship/pkg/release"
)

// jobLines is how many of a job's last lines release.json keeps.
const jobLines = 50

// jobOutput keeps a job's last jobLines lines.
type jobOutput struct{ lines []string }

func (o *jobOutput) add(line string) {
	if len(o.lines) == jobLines {
		o.lines = append(o.lines[:0], o.lines[1:]...)
	}
	o.lines = append(o.lines, line)
}

// recordJob keeps how the job's run ended and its last lines in the release's
// release.json (scrubbed of secrets), for shipctl logs ENV JOB once its container is
// gone. A failure to write it is a warning: the deploy goes on.
func (r *Runner) recordJob(ctx context.Context, job string, err error, out *jobOutput) {
	run := release.JobRun{Service: job, Time: time.Now().UTC()}
	var je *engine.JobError
	switch {
	case errors.As(err, &je):
		run.Code = je.Code
		if len(out.lines) == 0 {
			out.lines = je.Logs
		}
	case err != nil:
		run.Code = -1
	}
	for _, l := range out.lines {
		if r.Redact != nil {
			l = r.Redact(l)
		}
		run.Lines = append(run.Lines, l)
	}
	if uerr := r.Store.UpdateInfo(ctx, r.SHA, func(i *release.Info) { i.SetJob(run) }); uerr != nil {
		r.note(StepJob, LevelWarn, fmt.Sprintf("keep the output of job %s in release.json: %v", job, uerr))
	}
}

// lastJobRuns splits services into the pre-deploy jobs among them, with their last
// run as the newest release that ran each recorded it, and the rest. A job's container
// is gone once the release runs; its output lives on in release.json.
func lastJobRuns(ctx context.Context, s *session, h *hostConn, services []string) (runs []jobRunOf, rest []string, err error) {
	if len(services) == 0 {
		return nil, nil, nil
	}
	infos, err := s.store(h).Releases(ctx)
	if err != nil {
		return nil, nil, err
	}
	for _, svc := range services {
		found := false
		for _, info := range infos {
			for _, j := range info.Jobs {
				if j.Service == svc && !found {
					runs = append(runs, jobRunOf{JobRun: j, SHA: info.SHA})
					found = true
				}
			}
		}
		if !found {
			rest = append(rest, svc)
		}
	}
	return runs, rest, nil
}

// jobRunOf is a job's run with the release it ran for.
type jobRunOf struct {
	release.JobRun
	SHA string
}

// showJobRuns gives fn the recorded lines of runs, each after an event that says
// which run they are.
func showJobRuns(h *hostConn, runs []jobRunOf, em *emitter, fn func(host string, l engine.LogLine)) {
	for _, r := range runs {
		em.info(h.name, StepJob, fmt.Sprintf("last run of pre-deploy job %s: release %s, exit code %d, ended %s (its container is gone; the last %d lines kept in release.json)",
			r.Service, release.Short(r.SHA), r.Code, r.Time.Local().Format("2006-01-02 15:04:05"), len(r.Lines)))
		for _, line := range r.Lines {
			fn(h.name, engine.LogLine{Service: r.Service, Stream: "stdout", Text: line})
		}
	}
}
