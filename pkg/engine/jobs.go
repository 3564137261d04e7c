package engine

import (
	"context"
	"fmt"
	"time"

	"github.com/compose-spec/compose-go/v2/types"
)

// Defaults of JobOptions.
const (
	DefaultJobTimeout = 10 * time.Minute
	jobLogLines       = 20
	// jobLogFlush bounds the wait for the end of a job's log stream after its exit.
	jobLogFlush = 30 * time.Second
)

// JobOptions tune RunJob.
type JobOptions struct {
	// WaitTimeout bounds the start of what the job depends on (Up's WaitTimeout).
	WaitTimeout time.Duration
	// Timeout bounds the job's run, from its start to its exit; 0 is
	// DefaultJobTimeout.
	Timeout time.Duration
	// Progress, when set, receives the events of the job's Up.
	Progress func(Event)
	// Output, when set, receives each line the job writes, as it runs, from one
	// goroutine at a time; every line has been given to it when RunJob returns.
	Output func(LogLine)
}

// JobError says that a job exited with a code other than 0, with its last log lines.
type JobError struct {
	Service string
	Code    int
	// Logs are the job's last log lines, oldest first.
	Logs []string
}

func (e *JobError) Error() string {
	return withLogs(fmt.Sprintf("pre-deploy job %s exited with code %d", e.Service, e.Code), e.Logs)
}

// RunJob runs the job service of p to its end: Up of the service (with what it
// depends on), then a wait for its exit within o.Timeout. A job that exits with a
// code other than 0 returns a *JobError with its last log lines; one that runs past
// the timeout an error that says so.
func (e *Engine) RunJob(ctx context.Context, p *types.Project, service string, o JobOptions) error {
	if o.Timeout <= 0 {
		o.Timeout = DefaultJobTimeout
	}
	if err := e.Up(ctx, p, UpOptions{Services: []string{service}, WaitTimeout: o.WaitTimeout, Progress: o.Progress}); err != nil {
		return fmt.Errorf("start pre-deploy job %s: %w", service, err)
	}
	flush := func(bool) {}
	if o.Output != nil {
		streamed := make(chan struct{})
		lctx, stop := context.WithCancel(ctx)
		go func() {
			defer close(streamed)
			// Follow ends once the container has stopped and its log is read to the end.
			_ = e.Logs(lctx, p.Name, LogOptions{Services: []string{service}, Follow: true}, o.Output)
		}()
		flush = func(exited bool) {
			defer stop()
			if !exited {
				stop()
			}
			select {
			case <-streamed:
			case <-time.After(jobLogFlush):
				// An engine that never ends the stream: the lines given are the output.
				stop()
				<-streamed
			}
		}
	}
	jctx, cancel := context.WithTimeout(ctx, o.Timeout)
	code, err := e.Wait(jctx, p.Name, service)
	cancel()
	flush(err == nil)
	if err != nil {
		if jctx.Err() != nil && ctx.Err() == nil {
			return fmt.Errorf("pre-deploy job %s did not finish within %s", service, o.Timeout)
		}
		return fmt.Errorf("pre-deploy job %s: %w", service, err)
	}
	if code == 0 {
		return nil
	}
	je := &JobError{Service: service, Code: code}
	// The logs explain the failure even when the run was cancelled meanwhile.
	_ = e.Logs(context.WithoutCancel(ctx), p.Name, LogOptions{Services: []string{service}, Tail: fmt.Sprint(jobLogLines)}, func(l LogLine) {
		je.Logs = append(je.Logs, l.Text)
	})
	return je
}
