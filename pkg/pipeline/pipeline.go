// Package pipeline is `shipctl ship`: preflight -> build -> test -> push -> deploy,
// one step after the other, the first that fails stopping the run. The preflight
// comes first so that nothing slow runs before what can fail at once has been
// checked. The steps themselves are the
// caller's (the same functions as shipctl build, test, push and deploy).
package pipeline

import (
	"context"
	"errors"
)

// The steps of a ship, in order.
const (
	StepPreflight = "preflight"
	StepBuild     = "build"
	StepTest      = "test"
	StepPush      = "push"
	StepDeploy    = "deploy"
)

// Steps lists every step in order.
var Steps = []string{StepPreflight, StepBuild, StepTest, StepPush, StepDeploy}

// Stages do the steps. Each is required.
type Stages struct {
	// Preflight checks, before anything slow or interactive, what can fail at once
	// (the hosts, the registry, the lock), and holds what it took until the run ends.
	Preflight func(ctx context.Context) error
	// Build builds the images and returns their references (none: nothing to push).
	Build func(ctx context.Context) ([]string, error)
	// Test runs the test stack; its error stops the run before anything leaves the
	// machine.
	Test func(ctx context.Context) error
	// Tested checks, before the push, that the test run just recorded is of this very
	// tree (a change made meanwhile is not): part of the push step.
	Tested func(ctx context.Context) error
	// Push pushes refs (not called when Build returned none).
	Push func(ctx context.Context, refs []string) error
	// Deploy deploys what was pushed.
	Deploy func(ctx context.Context) error
}

// StepError is the error of the step that stopped a run. Its message is the step's
// error's; errors.Is and errors.As see that error.
type StepError struct {
	Step string
	Err  error
}

func (e *StepError) Error() string { return e.Err.Error() }
func (e *StepError) Unwrap() error { return e.Err }

// Run does the steps in order and returns the images built. The first step that
// fails stops the run with a *StepError naming it.
func Run(ctx context.Context, s Stages) ([]string, error) {
	if s.Preflight == nil || s.Build == nil || s.Test == nil || s.Tested == nil || s.Push == nil || s.Deploy == nil {
		return nil, errors.New("pipeline: a stage is missing")
	}
	fail := func(step string, err error) ([]string, error) { return nil, &StepError{Step: step, Err: err} }
	if err := s.Preflight(ctx); err != nil {
		return fail(StepPreflight, err)
	}
	refs, err := s.Build(ctx)
	if err != nil {
		return fail(StepBuild, err)
	}
	if err := s.Test(ctx); err != nil {
		return fail(StepTest, err)
	}
	if err := s.Tested(ctx); err != nil {
		return fail(StepPush, err)
	}
	if len(refs) > 0 {
		if err := s.Push(ctx, refs); err != nil {
			return fail(StepPush, err)
		}
	}
	if err := s.Deploy(ctx); err != nil {
		return fail(StepDeploy, err)
	}
	return refs, nil
}
