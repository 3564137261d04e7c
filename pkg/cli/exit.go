package cli

import (
	"context"
	"errors"
	"fmt"

	"github.com/shipdeploy/ship/pkg/deploy"
)

// Exit codes, fixed by the design.
const (
	ExitOK            = 0
	ExitError         = 1
	ExitUsage         = 2
	ExitTestsFailed   = 3
	ExitDeployFailed  = 4
	ExitRestoreFailed = 5
	ExitLocked        = 6
	ExitCancelled     = 130
)

// ErrUsage marks a command line that cannot be run as written.
var ErrUsage = errors.New("usage")

// ExitError carries an explicit exit code with an error.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// withCode attaches an exit code to err.
func withCode(code int, err error) error {
	if err == nil {
		return nil
	}
	return &exitError{code: code, err: err}
}

func usageErrorf(format string, a ...any) error {
	return withCode(ExitUsage, fmt.Errorf(format, a...))
}

// exitCode is the one place errors become exit codes.
func exitCode(err error) int {
	var ee *exitError
	switch {
	case err == nil:
		return ExitOK
	case errors.As(err, &ee):
		return ee.code
	case restoreFailed(err):
		// A host may run neither release: that outweighs how the run ended, a
		// cancellation too.
		return ExitRestoreFailed
	case errors.Is(err, context.Canceled):
		return ExitCancelled
	case errors.Is(err, ErrUsage):
		return ExitUsage
	}
	for _, m := range errorCodes {
		if errors.Is(err, m.err) {
			return m.code
		}
	}
	return ExitError
}

// errorCodes maps the library's sentinel errors to exit codes; packages register theirs in codes.go.
var errorCodes []struct {
	err  error
	code int
}

// restoreFailed reports whether a restore failed: a host may run neither release.
// An outcome not seen (deploy.ErrOutcomeUnknown, also exit 5) is not one: cancelled
// by the user, it is 130.
func restoreFailed(err error) bool {
	return errors.Is(err, deploy.ErrRestoreFailed)
}
