package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"
)

// ErrUnhealthy is matched, with errors.Is, by every *HealthError.
var ErrUnhealthy = errors.New("container unhealthy")

// HealthError says that a container did not become healthy (or running, or did not
// complete successfully) in time: which container, in what state, and the last lines
// it logged.
type HealthError struct {
	Service, Container string
	// Status says what went wrong: "unhealthy (...)", "exited with code 1",
	// "starting: not healthy after 2m0s", ...
	Status string
	// Logs are the container's last log lines (up to 20), oldest first.
	Logs []string
}

func (e *HealthError) Error() string {
	return withLogs(fmt.Sprintf("container %s: %s", e.Container, e.Status), e.Logs)
}

// withLogs is an error message followed by a container's last log lines, indented.
func withLogs(msg string, logs []string) string {
	if len(logs) == 0 {
		return msg
	}
	var b strings.Builder
	b.WriteString(msg + "; its last log lines:")
	for _, l := range logs {
		b.WriteString("\n    " + l)
	}
	return b.String()
}

// Is makes errors.Is(err, ErrUnhealthy) true.
func (e *HealthError) Is(target error) bool { return target == ErrUnhealthy }

// target is one container to wait on.
type target struct {
	service, id, name string
}

// waitHealthy polls the container until it is healthy, or running when it has no
// health check (with needCheck, having none is an error: depends_on service_healthy).
// Exiting, restarting, turning unhealthy or the timeout fail with a *HealthError.
func (e *Engine) waitHealthy(ctx context.Context, c target, timeout time.Duration, needCheck bool, rep *reporter) error {
	return e.pollHealthy(ctx, c, timeout, needCheck, rep, nil)
}

// pollHealthy is waitHealthy; first, when set, is given the container as its first
// inspect shows it (its addresses, for an HTTP check that starts beside the wait).
//
// Once a first inspect finds it still starting, the engine's events of the container
// (health_status, die) are streamed: each one is acted on as it comes (healthy ends
// the wait at once, anything else is looked at with an inspect), so over a far link
// the wait ends half a round trip after the change rather than up to a poll and a
// round trip after it, with one request instead of one per poll. The container is
// inspected once more as the stream opens (a change before it would be missed), and
// every 2s still; without the stream (the engine refused it, or it broke) the wait
// polls every e.poll.
func (e *Engine) pollHealthy(ctx context.Context, c target, timeout time.Duration, needCheck bool, rep *reporter, first func(Replica)) error {
	rep.event(c.service, c.name, "wait", "waiting until healthy")
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	deadline := time.Now().Add(timeout)
	var w *healthWatch
	for {
		asked := time.Now()
		ins, err := e.inspect(ctx, c.id)
		if err != nil {
			return fmt.Errorf("inspect container %s: %w", c.name, err)
		}
		if first != nil {
			first(replicaOf(ins))
			first = nil
		}
		st := ins.State
		switch st.Status {
		case container.StateExited, container.StateDead:
			return e.healthError(ctx, c, fmt.Sprintf("exited with code %d", st.ExitCode))
		case container.StateRestarting:
			return e.healthError(ctx, c, fmt.Sprintf("restarting: exited with code %d", st.ExitCode))
		}
		status := string(st.Status)
		if st.Health == nil {
			if needCheck {
				return fmt.Errorf("container %s has no health check, and depends_on asks for service_healthy", c.name)
			}
			if st.Status == container.StateRunning {
				rep.event(c.service, c.name, "healthy", "running (no health check)")
				return nil
			}
		} else {
			switch st.Health.Status {
			case container.Healthy:
				rep.event(c.service, c.name, "healthy", "healthy")
				return nil
			case container.Unhealthy:
				return e.healthError(ctx, c, "unhealthy"+lastProbe(st.Health))
			}
			status = string(st.Health.Status)
		}
		if time.Now().After(deadline) {
			return e.healthError(ctx, c, fmt.Sprintf("%s: not healthy after %s", status, timeout))
		}
		if w == nil && st.Health != nil {
			w = e.watchHealth(ctx, c.id)
		}
		healthy, err := w.next(ctx, e.poll-time.Since(asked), time.Until(deadline))
		if err != nil {
			return err
		}
		if healthy {
			rep.event(c.service, c.name, "healthy", "healthy")
			return nil
		}
	}
}

// healthWatch is a stream of one container's health_status and die events (see
// pollHealthy); a nil one has none.
type healthWatch struct {
	actions <-chan string // closed when the stream ends
	opened  <-chan struct{}
}

// healthWatchPoll is how often a wait with a stream of events inspects all the same.
const healthWatchPoll = 2 * time.Second

// watchHealth streams the container's health_status and die events until ctx ends.
func (e *Engine) watchHealth(ctx context.Context, id string) *healthWatch {
	actions, opened := make(chan string, 8), make(chan struct{})
	go func() {
		defer close(actions)
		res := e.api.Events(ctx, client.EventsListOptions{Filters: make(client.Filters).
			Add("type", "container").Add("container", id).Add("event", "health_status", "die")})
		close(opened)
		for {
			select {
			case m := <-res.Messages:
				select {
				case actions <- string(m.Action):
				case <-ctx.Done():
					return
				}
			case <-res.Err: // the stream failed or ended: the wait polls
				return
			case <-ctx.Done():
				return
			}
		}
	}()
	return &healthWatch{actions: actions, opened: opened}
}

// next waits until the container is worth inspecting again: the stream has just
// opened, an event came, or poll (without a stream; else healthWatchPoll) has
// passed, never beyond left. healthy says the event was health_status: healthy.
func (w *healthWatch) next(ctx context.Context, poll, left time.Duration) (healthy bool, err error) {
	var actions <-chan string
	var opened <-chan struct{}
	if w != nil && w.actions != nil {
		actions, opened, poll = w.actions, w.opened, healthWatchPoll
	}
	t := time.NewTimer(max(0, min(poll, left)))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false, ctx.Err()
	case <-t.C:
	case <-opened:
		w.opened = nil
	case a, ok := <-actions:
		if !ok {
			w.actions = nil
			return false, nil
		}
		return a == "health_status: healthy", nil
	}
	return false, nil
}

// waitCompleted polls the container until it exits; any code but 0, or the timeout,
// fails with a *HealthError.
func (e *Engine) waitCompleted(ctx context.Context, c target, timeout time.Duration, rep *reporter) error {
	rep.event(c.service, c.name, "wait", "waiting until it completes")
	deadline := time.Now().Add(timeout)
	for {
		ins, err := e.inspect(ctx, c.id)
		if err != nil {
			return fmt.Errorf("inspect container %s: %w", c.name, err)
		}
		st := ins.State
		if st.Status == container.StateExited || st.Status == container.StateDead {
			if st.ExitCode != 0 {
				return e.healthError(ctx, c, fmt.Sprintf("exited with code %d", st.ExitCode))
			}
			rep.event(c.service, c.name, "exited", "exited with code 0")
			return nil
		}
		if time.Now().After(deadline) {
			return e.healthError(ctx, c, fmt.Sprintf("%s: not completed after %s", st.Status, timeout))
		}
		if err := sleep(ctx, e.poll); err != nil {
			return err
		}
	}
}

// healthError builds a *HealthError with the container's last log lines.
func (e *Engine) healthError(ctx context.Context, c target, status string) error {
	// The logs are worth fetching even when ctx is being cancelled by a sibling's failure.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	lines, _ := e.tail(ctx, c.id, healthLogLines)
	return &HealthError{Service: c.service, Container: c.name, Status: status, Logs: lines}
}

// tail returns the container's last n log lines, stdout and stderr interleaved as the
// engine sent them.
func (e *Engine) tail(ctx context.Context, id string, n int) ([]string, error) {
	ins, err := e.inspect(ctx, id)
	if err != nil {
		return nil, err
	}
	rc, err := e.api.ContainerLogs(ctx, id, client.ContainerLogsOptions{
		ShowStdout: true, ShowStderr: true, Tail: fmt.Sprint(n),
	})
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	var lines []string
	err = readLines(rc, ins.Config != nil && ins.Config.Tty, func(_, line string) {
		lines = append(lines, line)
	})
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return lines, err
}

// lastProbe renders the output of the last failed health probe, if any, on one line.
func lastProbe(h *container.Health) string {
	if h == nil || len(h.Log) == 0 {
		return ""
	}
	last := h.Log[len(h.Log)-1]
	if last == nil {
		return ""
	}
	out := strings.Join(strings.Fields(last.Output), " ")
	if out == "" {
		return fmt.Sprintf(" (health check exit code %d)", last.ExitCode)
	}
	const max = 200
	if len(out) > max {
		out = out[:max] + "..."
	}
	return fmt.Sprintf(" (health check: %s)", out)
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// waitHTTP GETs h.Path on the container's address on network (the engine's host's
// loopback for network_mode host) and h.Port until it answers 2xx, through e.Dial when
// set, and returns the answer's status. Its first attempt takes the container from
// first when set (what a list or an inspect made beside it showed), the others
// inspect it; the attempts share one connection while it stays open (through SSH, a
// new connection is a round trip of its own). The container exiting, or no 2xx
// answer by deadline, fails with a *HealthError that says what the last attempt got.
func (e *Engine) waitHTTP(ctx context.Context, c target, h HTTPHealth, network string, deadline time.Time, rep *reporter, first <-chan Replica) (string, error) {
	dial := e.Dial
	if dial == nil {
		var d net.Dialer
		dial = d.DialContext
	}
	hc := &http.Client{
		Timeout:   2 * time.Second,
		Transport: &http.Transport{DialContext: dial, MaxIdleConnsPerHost: 1},
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
	defer hc.CloseIdleConnections()
	rep.event(c.service, c.name, "wait", "waiting until GET "+h.Path+" answers 2xx")
	var last string
	for {
		asked := time.Now() // attempts start e.poll apart (see pollHealthy)
		r, err := e.replicaFrom(ctx, c, first)
		first = nil
		if err != nil {
			return "", err
		}
		if r.State != string(container.StateRunning) {
			return "", e.healthError(ctx, c, fmt.Sprintf("%s (exit code %d) while GET %s was waited for", r.State, r.ExitCode, h.Path))
		}
		addr, err := r.Addr(network, h.Port)
		if _, ok := r.IPs["host"]; network == "" && ok {
			// network_mode host: the port is the host's.
			addr, err = net.JoinHostPort("127.0.0.1", strconv.Itoa(h.Port)), nil
		}
		if err != nil {
			last = err.Error()
		} else if last, err = getOnce(ctx, hc, "http://"+addr+h.Path); err == nil {
			return last, nil
		} else if strings.Contains(last, "administratively prohibited") {
			return "", fmt.Errorf("container %s: x-ship.health: GET %s goes through the SSH connection to the host, whose sshd refuses TCP forwarding (%s): set AllowTcpForwarding yes (or local) in its sshd_config", c.name, h.Path, last)
		}
		if time.Now().After(deadline) {
			return "", e.healthError(ctx, c, fmt.Sprintf("x-ship.health: GET %s did not answer 2xx in time (last: %s)", h.Path, last))
		}
		if err := sleep(ctx, e.poll-time.Since(asked)); err != nil {
			return "", err
		}
	}
}

// replicaFrom is the container as first gives it, when set, else as an inspect shows it.
func (e *Engine) replicaFrom(ctx context.Context, c target, first <-chan Replica) (Replica, error) {
	if first != nil {
		select {
		case r := <-first:
			return r, nil
		case <-ctx.Done():
			return Replica{}, ctx.Err()
		}
	}
	r, err := e.replica(ctx, c.id)
	if err != nil {
		return Replica{}, fmt.Errorf("inspect container %s: %w", c.name, err)
	}
	return r, nil
}

// getOnce GETs url once: the status on a 2xx answer, else what went wrong.
func getOnce(ctx context.Context, hc *http.Client, url string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err.Error(), err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err.Error(), err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return resp.Status, errors.New(resp.Status)
	}
	return resp.Status, nil
}
