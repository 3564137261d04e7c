package deploy

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/shipdeploy/ship/pkg/release"
)

// HostsError is how a deploy or rollback failed, host by host: it matches the worst
// sentinel that happened (ErrRestoreFailed, ErrOutcomeUnknown, ErrDeployFailed,
// ErrLocked) and names
// each host that did not end deployed, with its error.
type HostsError struct {
	// Sentinel is the worst of ErrRestoreFailed, ErrOutcomeUnknown, ErrDeployFailed,
	// ErrLocked.
	Sentinel error
	// What is the command in a few words: "deploy of <sha>", "rollback to <sha>".
	What string
	// Total is how many hosts the command ran on; Hosts are those not deployed.
	Total int
	Hosts []HostResult
}

func (e *HostsError) Error() string { return e.text(nil) }

func (e *HostsError) Unwrap() error { return e.Sentinel }

// Brief is Error for a reader who has seen the hosts' failures already: a host for
// which shown is true is named with its result alone ("see above"), not its error
// again. Hosts whose error was not shown (a lock held by someone else, a host never
// reached) keep it.
func (e *HostsError) Brief(shown func(host string) bool) string { return e.text(shown) }

func (e *HostsError) text(shown func(host string) bool) string {
	lines := make([]string, 0, len(e.Hosts))
	seen := 0
	for _, h := range e.Hosts {
		line := fmt.Sprintf("%s: %s, on %s", h.Host, h.Result, release.Name(h.Current))
		if h.Result == ResultUnknown {
			line = fmt.Sprintf("%s: unknown, still running on the host (it was on %s)", h.Host, release.Name(h.Current))
		}
		switch {
		case h.Err != nil && shown != nil && shown(h.Host):
			seen++
			line += " (see above)"
		case h.Err != nil:
			line += ": " + h.Err.Error()
		}
		lines = append(lines, line)
	}
	verb := "failed"
	if e.Sentinel == ErrOutcomeUnknown {
		verb = "was not seen to end"
	}
	head := fmt.Sprintf("%s: %s %s on %d of %d host(s)", e.Sentinel, e.What, verb, len(e.Hosts), e.Total)
	if seen == len(e.Hosts) {
		// Every failure is above: one line names the hosts.
		names := make([]string, len(e.Hosts))
		for i, h := range e.Hosts {
			names[i] = h.Host
		}
		return fmt.Sprintf("%s: %s (see above)", head, strings.Join(names, ", "))
	}
	return head + ":\n  " + strings.Join(lines, "\n  ")
}

// err is the command's error from its hosts' results: nil when every host is
// deployed, else a *HostsError that matches the worst sentinel and names each host.
func (s *Summary) err(ctx context.Context, what string) error {
	rank := func(e error) int {
		switch e {
		case ErrRestoreFailed:
			return 4
		case ErrOutcomeUnknown:
			return 3
		case ErrDeployFailed:
			return 2
		case ErrLocked:
			return 1
		}
		return 0
	}
	he := &HostsError{What: what, Total: len(s.Hosts)}
	for _, h := range s.Hosts {
		var sentinel error
		switch h.Result {
		case ResultDeployed:
			continue
		case ResultRestoreFailed:
			sentinel = ErrRestoreFailed
		case ResultFailed:
			sentinel = ErrDeployFailed
		case ResultLocked:
			sentinel = ErrLocked
		case ResultUnknown:
			sentinel = ErrOutcomeUnknown
		}
		if sentinel != nil && rank(sentinel) > rank(he.Sentinel) {
			he.Sentinel = sentinel
		}
		he.Hosts = append(he.Hosts, h)
	}
	if len(he.Hosts) == 0 {
		return nil
	}
	if he.Sentinel == nil {
		he.Sentinel = ErrDeployFailed
	}
	if ctx.Err() != nil {
		return errors.Join(ctx.Err(), he)
	}
	return he
}
