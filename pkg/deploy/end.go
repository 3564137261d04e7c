package deploy

import (
	"context"
	"errors"
	"fmt"

	"github.com/shipdeploy/ship/pkg/release"
)

// end switches current to the run's release and records it, in one sequence of
// the host's file system (release.Sequence): first the rename of the symlink the
// upload staged over current; once that is answered, and only when it succeeded,
// release.json's result put in place (staged while the release was applied), the
// audit line, and last the caller's unlock (Unlocking), carried out in that order.
// Over SFTP that is two round trips. A switch that fails is the run's failure:
// nothing after it was sent. What fails after it is a warning, and release.json
// is then written the long way.
func (r *Runner) end(ctx context.Context) error {
	bg := context.WithoutCancel(ctx)
	st := r.takeStaged()
	var first []release.Step
	if steps, ok := r.Store.SwitchSteps(r.SHA); ok {
		first = steps
	} else if err := r.Store.SwitchCurrent(ctx, r.SHA); err != nil {
		r.st = st
		return err
	}
	switched, committed := r.endSequence(bg, first, st)
	if !switched {
		// The staged symlink was swept away: made again, then the record.
		if err := r.Store.SwitchCurrent(ctx, r.SHA); err != nil {
			r.st = st
			return err
		}
		_, committed = r.endSequence(bg, nil, st)
	}
	if !committed {
		r.Store.Discard(bg, st)
		if err := r.Store.SetResult(bg, r.SHA, release.Deployed, true); err != nil {
			r.note(StepAudit, LevelWarn, err.Error())
		}
	}
	return nil
}

// endSequence sends first (the switch), then the record's steps and the unlock's;
// switched says whether first succeeded, committed whether st was put in place.
func (r *Runner) endSequence(ctx context.Context, first []release.Step, st *release.Staged) (switched, committed bool) {
	var then []release.Step
	if st != nil {
		then = append(then, r.Store.CommitStep(st))
	}
	auditAt := -1
	if audit, err := r.Store.AuditStep(r.auditEntry(ResultDeployed, r.SHA, nil)); err != nil {
		r.note(StepAudit, LevelWarn, err.Error())
	} else {
		auditAt = len(then)
		then = append(then, audit)
	}
	then = append(then, r.Store.LeftoverSteps(r.SHA)...)
	unlockAt := len(then)
	var unlocked func([]error)
	if r.Unlocking != nil && st != nil {
		// Without a staged result, release.json is written after the sequence, and
		// the caller's unlock waits for that.
		steps, done := r.Unlocking(ctx)
		if len(steps) > 0 {
			then, unlocked = append(then, steps...), done
		}
	}
	ferrs, terrs := release.Sequence(ctx, r.Store.FS, first, func(errs []error) bool {
		if err := errors.Join(errs...); err != nil {
			return false
		}
		r.note(StepSwitch, LevelInfo, fmt.Sprintf("%s -> %s", r.Store.Layout.Current(), release.CurrentLink(r.SHA)))
		if r.Switched != nil {
			r.Switched(ctx)
		}
		if unlocked == nil && r.Ending != nil {
			r.Ending(ctx)
		}
		return true
	}, then)
	if unlocked != nil {
		unlocked(terrs[unlockAt:])
	}
	if errors.Join(ferrs...) != nil {
		return false, false
	}
	if auditAt >= 0 && terrs[auditAt] != nil {
		r.note(StepAudit, LevelWarn, fmt.Sprintf("append to %s: %v", r.Store.Layout.Audit(), terrs[auditAt]))
	}
	return true, st != nil && terrs[0] == nil
}
