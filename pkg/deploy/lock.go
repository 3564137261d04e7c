package deploy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path"
	"strings"
	"time"

	"github.com/shipdeploy/ship/pkg/release"
)

// ErrLocked means another deploy (or a `shipctl lock`) holds a host's lock.
var ErrLocked = errors.New("locked by another deploy")

// DefaultLockPoll is how often a deploy that waits for a lock tries it again.
const DefaultLockPoll = time.Second

// DefaultLockRefresh is how often a deploy or rollback refreshes its lock's heartbeat
// (Target.LockRefresh). A lock whose heartbeat is older than StaleAfter times its
// holder's refresh interval is stale: its holder ended without releasing it (killed,
// cut off), and the next deploy takes it over. The times are the two machines'
// clocks: machines that deploy to one host must agree on the time within that bound.
const DefaultLockRefresh = 10 * time.Second

// StaleAfter is how many of its holder's refresh intervals a lock's heartbeat may be
// old before the lock is stale.
const StaleAfter = 3

// Holder is who holds a host's lock: .lock/holder.json.
type Holder struct {
	Who     string    `json:"who"`     // user@hostname
	Machine string    `json:"machine"` // the hostname of the machine that took it
	PID     int       `json:"pid"`
	Command string    `json:"command"` // deploy, rollback or lock
	SHA     string    `json:"sha,omitempty"`
	Reason  string    `json:"reason,omitempty"`
	Time    time.Time `json:"time"`
	// Token is the holder's own random name: two processes with one hostname and pid
	// (containers) are still two holders.
	Token string `json:"token,omitempty"`
	// Heartbeat is when the holder last said it runs; Refresh how often it does
	// ("10s"). A lock without them (shipctl lock, older versions) is never stale.
	Heartbeat time.Time `json:"heartbeat,omitzero"`
	Refresh   string    `json:"refresh,omitempty"`
}

// String says who holds the lock, for a person.
func (h Holder) String() string {
	if h.Who == "" {
		return "someone (the lock has no holder.json)"
	}
	var b strings.Builder
	b.WriteString(h.Who)
	switch {
	case h.Command == "lock":
		b.WriteString(" (shipctl lock")
		if h.Reason != "" {
			fmt.Fprintf(&b, ": %q", h.Reason)
		}
	case h.SHA != "":
		fmt.Fprintf(&b, " (%s of %s", h.Command, release.Short(h.SHA))
	default:
		fmt.Fprintf(&b, " (%s", h.Command)
	}
	if !h.Time.IsZero() {
		fmt.Fprintf(&b, ", since %s", h.Time.Local().Format("2006-01-02 15:04:05"))
	}
	fmt.Fprintf(&b, ", pid %d)", h.PID)
	return b.String()
}

// LockedError says which host is locked and by whom. It matches ErrLocked.
type LockedError struct {
	Host   string
	Holder Holder
	Waited time.Duration
}

func (e *LockedError) Error() string {
	msg := fmt.Sprintf("%s is locked by %s", e.Host, e.Holder)
	if e.Waited > 0 {
		msg += fmt.Sprintf("; gave up after waiting %s", e.Waited.Round(time.Second))
	}
	return msg + "; wait with --lock-wait DURATION, or release it with shipctl unlock"
}

// Is makes errors.Is(err, ErrLocked) true.
func (e *LockedError) Is(target error) bool { return target == ErrLocked }

// Me is the Holder for this process running command.
func Me(command, sha string) Holder {
	machine, _ := os.Hostname()
	return Holder{Who: Who(), Machine: machine, PID: os.Getpid(), Command: command, SHA: sha, Time: time.Now().UTC(), Token: release.TempSuffix()}
}

// holder is Me with the target's overrides: who, and the test seam of LockMachine and
// LockPID.
func (t Target) holder(command, sha string) Holder {
	me := Me(command, sha)
	me.Who = t.who()
	if t.LockMachine != "" {
		me.Machine = t.LockMachine
	}
	if t.LockPID > 0 {
		me.PID = t.LockPID
	}
	return me
}

// mine reports whether h is the holder me (the same run, not only the same pid).
func (h Holder) mine(me Holder) bool {
	if me.Token != "" || h.Token != "" {
		return h.Token == me.Token
	}
	return h.PID == me.PID && h.Machine == me.Machine
}

// Who is the local user@hostname, for release.json, locks and audit.log.
func Who() string {
	name := os.Getenv("USER")
	if u, err := user.Current(); err == nil && u.Username != "" {
		name = u.Username
	}
	if name == "" {
		name = "unknown"
	}
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "unknown"
	}
	return name + "@" + host
}

// readHolder reads the lock's holder; held is false when there is no lock. data is
// holder.json as read (nil when the folder has none).
func readHolder(ctx context.Context, f release.FS, l release.Layout) (h Holder, data []byte, held bool, err error) {
	data, err = f.ReadFile(ctx, l.Holder())
	if errors.Is(err, fs.ErrNotExist) {
		// The lock folder without its file: being taken right now, or left by a
		// deploy cut off between the two.
		if _, err := f.ReadDir(ctx, l.Lock()); errors.Is(err, fs.ErrNotExist) {
			return Holder{}, nil, false, nil
		} else if err != nil {
			return Holder{}, nil, false, fmt.Errorf("read the lock: %w", err)
		}
		return Holder{}, nil, true, nil
	}
	if err != nil {
		return Holder{}, nil, false, fmt.Errorf("read the lock: %w", err)
	}
	if err := json.Unmarshal(data, &h); err != nil {
		return Holder{}, data, true, nil
	}
	return h, data, true, nil
}

// stale reports whether h's holder has ended without releasing the lock: its
// heartbeat is older than StaleAfter of its refresh intervals at now. A lock without a
// heartbeat (shipctl lock's, an older version's) is never stale, whoever took it: the
// hostname and pid say nothing across PID namespaces.
func (h Holder) stale(now time.Time) (time.Duration, bool) {
	refresh, err := time.ParseDuration(h.Refresh)
	if h.Command == "lock" || h.Heartbeat.IsZero() || err != nil || refresh <= 0 {
		return 0, false
	}
	age := now.Sub(h.Heartbeat)
	return age, age > StaleAfter*refresh
}

// acquire takes a host's lock for me: an atomic mkdir of .lock, then holder.json
// inside. With wait, it tries again every poll (0: DefaultLockPoll) until wait has
// passed. A lock found stale is taken over.
func acquire(ctx context.Context, f release.FS, l release.Layout, host string, me Holder, wait, poll time.Duration, em *emitter) error {
	p, err := startAcquire(ctx, f, l, host, me, wait, poll, em)
	if err != nil {
		return err
	}
	return p.wait()
}

// pendingHolder is the write of holder.json into a lock just taken: the lock is the
// mkdir, holder.json says whose it is, and its write goes on while the deploy goes on
// (its requests with the upload's). A failed write removes the lock.
type pendingHolder struct {
	done chan struct{}
	err  error
}

// wait waits for holder.json; a nil pendingHolder is none.
func (p *pendingHolder) wait() error {
	if p == nil {
		return nil
	}
	<-p.done
	return p.err
}

// startAcquire is acquire that returns once the lock is taken (the mkdir), with the
// write of holder.json under way.
func startAcquire(ctx context.Context, f release.FS, l release.Layout, host string, me Holder, wait, poll time.Duration, em *emitter) (*pendingHolder, error) {
	if poll <= 0 {
		poll = DefaultLockPoll
	}
	start := time.Now()
	announced := false
	for {
		p, _, err := tryLock(ctx, f, l, host, me, em, true)
		if err == nil {
			return p, nil
		}
		if !errors.Is(err, fs.ErrExist) {
			return nil, err
		}
		h, data, held, err := readHolder(ctx, f, l)
		if err != nil {
			return nil, err
		}
		if !held {
			continue // released between our mkdir and the look
		}
		if age, stale := h.stale(time.Now()); stale {
			if err := takeOver(ctx, f, l, host, h, data, age, em); err != nil {
				return nil, err
			}
			continue
		}
		waited := time.Since(start)
		if waited >= wait {
			le := &LockedError{Host: host, Holder: h}
			if wait > 0 {
				le.Waited = waited
			}
			return nil, le
		}
		if !announced {
			em.info(host, StepLock, fmt.Sprintf("waiting up to %s for the lock held by %s", wait.Round(time.Second), h))
			announced = true
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(min(poll, wait-waited)):
		}
	}
}

// tryLock takes the lock once: the mkdir of .lock (and of the app's folder first, on
// a host's first deploy: fresh), then the write of holder.json started, which says
// "locked" once done when announce (else pendingHolder.announce does). The error
// matches fs.ErrExist when the lock is held.
func tryLock(ctx context.Context, f release.FS, l release.Layout, host string, me Holder, em *emitter, announce bool) (p *pendingHolder, fresh bool, err error) {
	err = f.Mkdir(ctx, l.Lock())
	if errors.Is(err, fs.ErrNotExist) {
		// A host's first deploy: the app's folder is made, once.
		if err := f.MkdirAll(ctx, string(l)); err != nil {
			return nil, false, fmt.Errorf("create %s: %w", string(l), err)
		}
		fresh = true
		err = f.Mkdir(ctx, l.Lock())
	}
	if err != nil {
		return nil, fresh, fmt.Errorf("lock %s: %w", l.Lock(), err)
	}
	me.Heartbeat = time.Now().UTC()
	data, _ := json.MarshalIndent(me, "", "  ")
	p = &pendingHolder{done: make(chan struct{})}
	go func() {
		defer close(p.done)
		if err := f.WriteFile(context.WithoutCancel(ctx), l.Holder(), append(data, '\n'), 0o644); err != nil {
			_ = f.RemoveAll(context.WithoutCancel(ctx), l.Lock())
			p.err = fmt.Errorf("take the lock: %w", err)
			return
		}
		if announce {
			em.info(host, StepLock, "locked "+l.Lock())
		}
	}()
	return p, fresh, nil
}

// announce says "locked" once holder.json is written: at once when it is.
func (p *pendingHolder) announce(host string, l release.Layout, em *emitter) {
	say := func() {
		if p.wait() == nil {
			em.info(host, StepLock, "locked "+l.Lock())
		}
	}
	select {
	case <-p.done:
		say()
	default:
		go say()
	}
}

// takeOver removes the stale lock of h, whose holder.json read data. The lock is first
// renamed away in one step, so that of two deploys taking it over at once one moves it
// and the other finds it gone; and what was moved is checked to be the lock judged
// stale (not one taken since, nor one whose heartbeat came in meanwhile), else it is
// put back.
func takeOver(ctx context.Context, f release.FS, l release.Layout, host string, h Holder, data []byte, age time.Duration, em *emitter) error {
	if err := f.MkdirAll(ctx, l.Tmp()); err != nil {
		return fmt.Errorf("create %s: %w", l.Tmp(), err)
	}
	moved := path.Join(l.Tmp(), "stale-lock-"+release.TempSuffix())
	if err := f.Rename(ctx, l.Lock(), moved); errors.Is(err, fs.ErrNotExist) {
		return nil // taken over by someone else
	} else if err != nil {
		return fmt.Errorf("move the stale lock %s aside: %w", l.Lock(), err)
	}
	now, _ := f.ReadFile(ctx, path.Join(moved, path.Base(l.Holder())))
	if !bytes.Equal(now, data) {
		if err := f.Rename(context.WithoutCancel(ctx), moved, l.Lock()); err != nil {
			return fmt.Errorf("a lock taken while the stale one was being removed could not be put back (%w); its holder is told at its next heartbeat", err)
		}
		return nil
	}
	em.warn(host, StepLock, fmt.Sprintf("took over the lock left by %s: its heartbeat stopped %s ago", h, age.Round(time.Second)))
	if err := f.RemoveAll(ctx, moved); err != nil {
		em.warn(host, StepLock, fmt.Sprintf("remove the stale lock moved to %s: %v", moved, err))
	}
	return nil
}

// releaseLock removes the lock if me still holds it (someone may have forced it open
// and taken it since).
func releaseLock(ctx context.Context, f release.FS, l release.Layout, host string, me Holder, em *emitter) error {
	return releaseRead(ctx, f, l, host, me, em, func() (Holder, bool, error) {
		h, _, held, err := readHolder(ctx, f, l)
		return h, held, err
	})
}

// releaseRead is releaseLock with the holder as read tells it: read now, or read
// ahead while the run recorded its result (holderRead).
func releaseRead(ctx context.Context, f release.FS, l release.Layout, host string, me Holder, em *emitter, read func() (Holder, bool, error)) error {
	h, held, err := read()
	if err != nil {
		return err
	}
	if !held {
		em.warn(host, StepLock, "the lock was already gone (released with shipctl unlock?)")
		return nil
	}
	if !h.mine(me) {
		em.warn(host, StepLock, fmt.Sprintf("the lock is now held by %s; leaving it", h))
		return nil
	}
	if err := removeLock(ctx, f, l); err != nil {
		return fmt.Errorf("unlock %s: %w", l.Lock(), err)
	}
	em.info(host, StepLock, "unlocked")
	return nil
}

// holderRead is the lock's holder.json read ahead of the unlock
// (hostConn.readAhead), once the heartbeat has stopped: the read goes out with the
// run's record, and the unlock that follows is the move alone. The check stays as
// safe as a read just before the move: the move follows the read's answer at once,
// and no heartbeat rewrites holder.json in between.
type holderRead struct {
	done chan struct{}
	h    Holder
	held bool
	err  error
}

// wait is the holder as read.
func (r *holderRead) wait() (Holder, bool, error) {
	<-r.done
	return r.h, r.held, r.err
}

// removeLock removes .lock: renamed aside under .tmp/ in one step first, so that a
// heartbeat or a deploy taking the lock at the same moment never meets a half-removed
// folder (a plain failure over SFTP); then the moved folder is removed.
func removeLock(ctx context.Context, f release.FS, l release.Layout) error {
	moved := path.Join(l.Tmp(), "unlocked-"+release.TempSuffix())
	if m, ok := moverOf(f); ok {
		// The move and the removal sent together: one round trip, not three.
		err := m.MoveAway(ctx, l.Lock(), moved, path.Base(l.Holder()))
		if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	err := f.Rename(ctx, l.Lock(), moved)
	if errors.Is(err, fs.ErrNotExist) {
		// The lock is gone, or .tmp/ is not there yet: made, and the move tried again.
		if err := f.MkdirAll(ctx, l.Tmp()); err != nil {
			return fmt.Errorf("create %s: %w", l.Tmp(), err)
		}
		err = f.Rename(ctx, l.Lock(), moved)
	}
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	} else if err != nil {
		return err
	}
	// The lock is released once moved; what the removal leaves under .tmp/ goes with
	// the next ClearTmp. holder.json first: the folder is then empty, one request.
	_ = f.RemoveAll(ctx, path.Join(moved, path.Base(l.Holder())))
	_ = f.RemoveAll(ctx, moved)
	return nil
}

// mover is a release.FS that renames a folder away and removes it (with the files
// named inside) in one batch of requests (pkg/sshhost's).
type mover interface {
	MoveAway(ctx context.Context, from, to string, files ...string) error
}

// moverOf is f as a mover, when it (or the host behind a hostConn) is one.
func moverOf(f release.FS) (mover, bool) {
	if h, ok := f.(*hostConn); ok {
		f = h.Host
	}
	m, ok := f.(mover)
	return m, ok
}
