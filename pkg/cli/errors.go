package cli

import (
	"errors"
	"strings"
	"sync"

	"github.com/shipdeploy/ship/pkg/deploy"
)

// shownFailures are the hosts whose failure was printed as a FAILED event (text
// output): the command's last error line points at them instead of saying it again.
type shownFailures struct {
	mu    sync.Mutex
	hosts map[string]bool
}

// shownInit guards the first use of a Globals' shownFailures.
var shownInit sync.Mutex

// failures are g's shown failures, made on first use.
func (g *Globals) failures() *shownFailures {
	shownInit.Lock()
	defer shownInit.Unlock()
	if g.shown == nil {
		g.shown = &shownFailures{}
	}
	return g.shown
}

func (s *shownFailures) add(host string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.hosts == nil {
		s.hosts = map[string]bool{}
	}
	s.hosts[host] = true
}

func (s *shownFailures) has(host string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hosts[host]
}

// briefError is an error whose text leaves out what the events above said; it
// unwraps to the whole error, for the exit code.
type briefError struct {
	err error
	msg string
}

func (e *briefError) Error() string { return e.msg }
func (e *briefError) Unwrap() error { return e.err }

// brief is err as the last line of a text run prints it: each error once. A host
// whose failure was shown as a FAILED event is named with its result alone ("see
// above"). With --json, err is whole: its events and the result carry it.
func (g *Globals) brief(err error) error {
	var he *deploy.HostsError
	if g.JSON || err == nil || !errors.As(err, &he) {
		return err
	}
	full, short := he.Error(), he.Brief(g.failures().has)
	if full == short {
		return err
	}
	return &briefError{err: err, msg: strings.Replace(err.Error(), full, short, 1)}
}
