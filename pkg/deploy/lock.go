package deploy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"strings"
	"syscall"
	"time"

	"github.com/shipdeploy/ship/pkg/release"
)

// ErrLocked means another deploy (or a `shipctl lock`) holds a host's lock.
var ErrLocked = errors.New("locked by another deploy")

// DefaultLockPoll is how often a deploy that waits for a lock tries it again.
const DefaultLockPoll = time.Second

// Holder is who holds a host's lock: .lock/holder.json.
type Holder struct {
	Who     string    `json:"who"`     // user@hostname
	Machine string    `json:"machine"` // the hostname of the machine that took it
	PID     int       `json:"pid"`
	Command string    `json:"command"` // deploy, rollback or lock
	SHA     string    `json:"sha,omitempty"`
	Reason  string    `json:"reason,omitempty"`
	Time    time.Time `json:"time"`
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
	return Holder{Who: Who(), Machine: machine, PID: os.Getpid(), Command: command, SHA: sha, Time: time.Now().UTC()}
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

// readHolder reads the lock's holder; ok is false when there is no lock.
func readHolder(ctx context.Context, f release.FS, l release.Layout) (Holder, bool, error) {
	data, err := f.ReadFile(ctx, l.Holder())
	if errors.Is(err, fs.ErrNotExist) {
		// The lock folder without its file: being taken right now, or left by a
		// deploy cut off between the two.
		if _, err := f.ReadDir(ctx, l.Lock()); errors.Is(err, fs.ErrNotExist) {
			return Holder{}, false, nil
		} else if err != nil {
			return Holder{}, false, fmt.Errorf("read the lock: %w", err)
		}
		return Holder{}, true, nil
	}
	if err != nil {
		return Holder{}, false, fmt.Errorf("read the lock: %w", err)
	}
	var h Holder
	if err := json.Unmarshal(data, &h); err != nil {
		return Holder{}, true, nil
	}
	return h, true, nil
}

// stale reports whether h was left by a deploy or rollback of this machine whose
// process is gone (cut off from the host, killed): such a lock is taken over. A lock
// of `shipctl lock` is never stale, nor one taken on another machine.
func (h Holder) stale(me Holder) bool {
	if h.Command == "lock" || h.Machine == "" || h.Machine != me.Machine || h.PID <= 0 || h.PID == me.PID {
		return false
	}
	return !processAlive(h.PID)
}

func processAlive(pid int) bool {
	p, err := os.FindProcess(pid)
	if err != nil {
		return false
	}
	err = p.Signal(syscall.Signal(0))
	return err == nil || errors.Is(err, syscall.EPERM)
}

// acquire takes a host's lock for me: an atomic mkdir of .lock, then holder.json
// inside. With wait, it tries again every poll (0: DefaultLockPoll) until wait has
// passed.
func acquire(ctx context.Context, f release.FS, l release.Layout, host string, me Holder, wait, poll time.Duration, em *emitter) error {
	if poll <= 0 {
		poll = DefaultLockPoll
	}
	if err := f.MkdirAll(ctx, string(l)); err != nil {
		return fmt.Errorf("create %s: %w", string(l), err)
	}
	start := time.Now()
	announced := false
	for {
		err := f.Mkdir(ctx, l.Lock())
		if err == nil {
			data, _ := json.MarshalIndent(me, "", "  ")
			if err := f.WriteFile(ctx, l.Holder(), append(data, '\n'), 0o644); err != nil {
				_ = f.RemoveAll(context.WithoutCancel(ctx), l.Lock())
				return fmt.Errorf("write %s: %w", l.Holder(), err)
			}
			em.info(host, StepLock, "locked "+l.Lock())
			return nil
		}
		if !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("lock %s: %w", l.Lock(), err)
		}
		h, held, err := readHolder(ctx, f, l)
		if err != nil {
			return err
		}
		if !held {
			continue // released between our mkdir and the look
		}
		if h.stale(me) {
			em.warn(host, StepLock, fmt.Sprintf("taking over the lock left by %s: that process is gone", h))
			if err := f.RemoveAll(ctx, l.Lock()); err != nil {
				return fmt.Errorf("remove the stale lock %s: %w", l.Lock(), err)
			}
			continue
		}
		waited := time.Since(start)
		if waited >= wait {
			le := &LockedError{Host: host, Holder: h}
			if wait > 0 {
				le.Waited = waited
			}
			return le
		}
		if !announced {
			em.info(host, StepLock, fmt.Sprintf("waiting up to %s for the lock held by %s", wait.Round(time.Second), h))
			announced = true
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(min(poll, wait-waited)):
		}
	}
}

// release removes the lock if me still holds it (someone may have forced it open and
// taken it since).
func releaseLock(ctx context.Context, f release.FS, l release.Layout, host string, me Holder, em *emitter) error {
	h, held, err := readHolder(ctx, f, l)
	if err != nil {
		return err
	}
	if !held {
		em.warn(host, StepLock, "the lock was already gone (released with shipctl unlock?)")
		return nil
	}
	if h.PID != me.PID || h.Machine != me.Machine {
		em.warn(host, StepLock, fmt.Sprintf("the lock is now held by %s; leaving it", h))
		return nil
	}
	if err := f.RemoveAll(ctx, l.Lock()); err != nil {
		return fmt.Errorf("unlock %s: %w", l.Lock(), err)
	}
	em.info(host, StepLock, "unlocked")
	return nil
}
