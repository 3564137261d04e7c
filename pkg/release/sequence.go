package release

import (
	"context"
	"errors"
	"fmt"
)

// ErrNotSent is the error of a step of Sequence that was not carried out: proceed
// said no.
var ErrNotSent = errors.New("not carried out, as a step before it failed")

// Step is one request of an ordered Sequence: a symlink's making, a rename, a
// file's or an empty folder's removal, or an append.
type Step struct {
	// Op is "symlink", "rename", "remove", "rmdir" or "append".
	Op string
	// Path is what is made, renamed, removed or appended to; To is a rename's
	// target, or what a symlink holds.
	Path, To string
	// Data is an append's (at most 64 KiB, written whole).
	Data []byte
}

// SymlinkStep makes name a symbolic link holding target.
func SymlinkStep(target, name string) Step { return Step{Op: "symlink", Path: name, To: target} }

// RenameStep renames from to to in one step, replacing a file or symlink at to.
func RenameStep(from, to string) Step { return Step{Op: "rename", Path: from, To: to} }

// RemoveStep removes the file p.
func RemoveStep(p string) Step { return Step{Op: "remove", Path: p} }

// RmdirStep removes the folder p, which should be empty by then.
func RmdirStep(p string) Step { return Step{Op: "rmdir", Path: p} }

// AppendStep adds data at the end of name (created with mode 0644), in one write.
func AppendStep(name string, data []byte) Step { return Step{Op: "append", Path: name, Data: data} }

// Sequencer is an FS that carries a Sequence out itself, sending its steps without
// waiting for each one's answer (pkg/sshhost's: two round trips over SFTP, where
// one after the other takes one or two each). It keeps Sequence's rules: the
// steps are carried out in the order given, then only when proceed says so. ok
// false: it cannot (nothing was sent), and Sequence goes the plain way.
type Sequencer interface {
	Sequence(ctx context.Context, first []Step, proceed func(errs []error) bool, then []Step) (firstErrs, thenErrs []error, ok bool)
}

// Sequence carries out first's steps in order; proceed is given their errors, and
// when it says yes, then's steps are carried out in order after them (else each
// has ErrNotSent). A step that fails does not stop those after it in its list:
// what must not happen after a failure goes in then. An FS that is a Sequencer
// does it itself; otherwise the steps go one after the other (an rmdir removes
// what the folder still holds).
func Sequence(ctx context.Context, f FS, first []Step, proceed func(errs []error) bool, then []Step) (firstErrs, thenErrs []error) {
	if s, ok := f.(Sequencer); ok {
		if fe, te, ok := s.Sequence(ctx, first, proceed, then); ok {
			return fe, te
		}
	}
	firstErrs = make([]error, len(first))
	for i, s := range first {
		firstErrs[i] = runStep(ctx, f, s)
	}
	thenErrs = make([]error, len(then))
	if !proceed(firstErrs) {
		for i := range thenErrs {
			thenErrs[i] = ErrNotSent
		}
		return firstErrs, thenErrs
	}
	for i, s := range then {
		thenErrs[i] = runStep(ctx, f, s)
	}
	return firstErrs, thenErrs
}

// runStep carries out one step with f's methods.
func runStep(ctx context.Context, f FS, s Step) error {
	switch s.Op {
	case "rename":
		return f.Rename(ctx, s.Path, s.To)
	case "symlink":
		return f.Symlink(ctx, s.To, s.Path)
	case "remove", "rmdir":
		return f.RemoveAll(ctx, s.Path)
	case "append":
		return f.Append(ctx, s.Path, s.Data)
	}
	return fmt.Errorf("a sequence's step %q on %s", s.Op, s.Path)
}

// SwitchSteps are the switch of current to sha as steps of a Sequence: the rename
// of the symlink Upload staged under .tmp/ over current, after its making when
// Upload left that to the switch (UploadLooked's recordLater). ok is false when
// Upload staged none (taken: a second call has none either); SwitchCurrent then
// makes one.
func (s *Store) SwitchSteps(sha string) (steps []Step, ok bool) {
	link, made := s.stagedLink(sha)
	if link == "" {
		return nil, false
	}
	if !made {
		steps = append(steps, SymlinkStep(CurrentLink(sha), link))
	}
	return append(steps, RenameStep(link, s.Layout.Current())), true
}

// LeftoverSteps remove what the upload of sha left under .tmp/ (the emptied stage
// of a release the host had), taken: steps of the run's end, so that the next
// upload has nothing to sweep.
func (s *Store) LeftoverSteps(sha string) []Step {
	s.mu.Lock()
	defer s.mu.Unlock()
	stage := s.stages[sha]
	delete(s.stages, sha)
	if stage == "" {
		return nil
	}
	return []Step{RmdirStep(stage)}
}

// CommitStep is Commit as one step of a Sequence: the staged release.json renamed
// into place. When it fails, Discard removes the staged file.
func (s *Store) CommitStep(st *Staged) Step {
	return RenameStep(st.tmp, s.Layout.Info(st.sha))
}

// AuditStep is AppendAudit as one step of a Sequence: e's line added to audit.log.
func (s *Store) AuditStep(e AuditEntry) (Step, error) {
	data, err := auditLine(e)
	if err != nil {
		return Step{}, err
	}
	return AppendStep(s.Layout.Audit(), data), nil
}
