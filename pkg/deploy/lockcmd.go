package deploy

import (
	"context"
	"errors"
	"fmt"

	"github.com/shipdeploy/ship/pkg/event"
	"github.com/shipdeploy/ship/pkg/release"
)

// HostLock is who holds one host's lock.
type HostLock struct {
	Host   string
	Holder Holder
}

// Lock takes the lock on every host for a person (shipctl lock), with reason: deploys
// and rollbacks are refused with ErrLocked (or wait, with --lock-wait) until Unlock.
// A host locked by someone else fails it, and the locks it took are released.
func Lock(ctx context.Context, t Target, reason string) error {
	em := newEmitter(t.Progress, t.Redactor)
	s, err := open(ctx, t, em)
	if err != nil {
		return err
	}
	defer s.close()
	me := t.holder("lock", "")
	me.Reason = reason
	results := make([]HostResult, len(s.hosts))
	// A person's lock has no heartbeat: it is never stale.
	if err := s.lockAll(ctx, me, 0, 0, 0, results); err != nil {
		return t.Redactor.Error(err)
	}
	for _, h := range s.hosts {
		e := release.AuditEntry{Event: release.AuditLock, App: t.App, Env: t.Env.Name, Host: h.name, Who: me.Who, Result: event.ResultOK, Reason: reason}
		if err := appendAudit(context.WithoutCancel(ctx), h, s.l, e, t.Redactor); err != nil {
			em.warn(h.name, StepAudit, err.Error())
		}
	}
	return nil
}

// UnlockOptions say how Unlock treats locks held by someone else.
type UnlockOptions struct {
	// Force removes locks held by others without asking.
	Force bool
	// Confirm is asked, without Force, before removing locks held by others (another
	// user@hostname); an error keeps every lock. Nil refuses with ErrLocked.
	Confirm func(ctx context.Context, others []HostLock) error
}

// Unlock removes the lock of every host that has one and returns what it removed. A
// lock of someone else is removed only with Force or Confirm's consent: its deploy may
// still be running.
func Unlock(ctx context.Context, t Target, o UnlockOptions) ([]HostLock, error) {
	em := newEmitter(t.Progress, t.Redactor)
	s, err := open(ctx, t, em)
	if err != nil {
		return nil, err
	}
	defer s.close()
	holders := make([]*Holder, len(s.hosts))
	errs := make([]error, len(s.hosts))
	s.each(ctx, 0, func(ctx context.Context, i int, h *hostConn) {
		holder, _, held, err := readHolder(ctx, h, s.l)
		if err != nil {
			errs[i] = fmt.Errorf("%s: %w", h.name, err)
			return
		}
		if held {
			holders[i] = &holder
		}
	})
	if err := errors.Join(errs...); err != nil {
		return nil, t.Redactor.Error(err)
	}
	who := t.who()
	var others []HostLock
	for i, h := range holders {
		if h != nil && h.Who != who {
			others = append(others, HostLock{Host: s.hosts[i].name, Holder: *h})
		}
	}
	if len(others) > 0 && !o.Force {
		if o.Confirm == nil {
			return nil, &LockedError{Host: others[0].Host, Holder: others[0].Holder}
		}
		if err := o.Confirm(ctx, others); err != nil {
			return nil, err
		}
	}
	var removed []HostLock
	for i, h := range holders {
		if h == nil {
			continue
		}
		hc := s.hosts[i]
		if err := removeLock(ctx, hc, s.l); err != nil {
			errs[i] = fmt.Errorf("%s: unlock: %w", hc.name, err)
			continue
		}
		removed = append(removed, HostLock{Host: hc.name, Holder: *h})
		em.info(hc.name, StepLock, "unlocked (was held by "+h.String()+")")
		e := release.AuditEntry{Event: release.AuditUnlock, App: t.App, Env: t.Env.Name, Host: hc.name, Who: who, Result: event.ResultOK, Reason: "was held by " + h.String()}
		if err := appendAudit(context.WithoutCancel(ctx), hc, s.l, e, t.Redactor); err != nil {
			em.warn(hc.name, StepAudit, err.Error())
		}
	}
	return removed, t.Redactor.Error(errors.Join(errs...))
}
