package deploy

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/shipdeploy/ship/pkg/config"
	"github.com/shipdeploy/ship/pkg/redact"
	"github.com/shipdeploy/ship/pkg/release"
)

// Target is what every command needs: the app, its environment and how to reach the
// environment's hosts.
type Target struct {
	App string
	Env *config.Environment
	// Dial connects to one host (SSH makes the real one).
	Dial Dialer
	// Who is the local user@hostname; default Who().
	Who string
	// Progress receives the command's events, one at a time; may be nil.
	Progress func(Event)
	// Redactor scrubs secrets from events, errors, audit lines and notifications;
	// may be nil.
	Redactor *redact.Redactor
	// RegistryAuth returns the X-Registry-Auth value for pulling ref ("" anonymous):
	// sent to shipd with a deploy or rollback (agent environments), which pulls with it
	// and never keeps it. The agentless path pulls with SSHOptions.RegistryAuth.
	RegistryAuth func(ref string) (string, error)
	// LockRefresh is how often a deploy or rollback refreshes its lock's heartbeat;
	// 0 is DefaultLockRefresh. The lock is stale StaleAfter intervals after the last.
	LockRefresh time.Duration
	// LockMachine and LockPID, when set, replace the hostname and the pid written in
	// the lock's holder.json. A test seam (shipctl's SHIP_LOCK_AS): two processes
	// that look like one machine, as CI jobs in --network host containers do.
	LockMachine string
	LockPID     int
}

// Project is the environment's compose project name on the hosts (<app>-<env>
// unless ship.yaml says otherwise): the engine's project and shipd's app.
func (t Target) Project() string {
	if t.Env == nil {
		return t.App
	}
	return t.Env.ProjectName(t.App)
}

func (t Target) lockRefresh() time.Duration {
	if t.LockRefresh > 0 {
		return t.LockRefresh
	}
	return DefaultLockRefresh
}

func (t Target) who() string {
	if t.Who != "" {
		return t.Who
	}
	return Who()
}

// hostConn is one open host of a session.
type hostConn struct {
	name string
	Host
	// shipdLast is when the app's last deploy through shipd ended, as shipd said in
	// the preflight (agent environments).
	shipdLast time.Time
	// lease keeps the lock's heartbeat while the run holds the lock; nil: none.
	lease *lease
	// version is the engine's version as Open's ping found it ("" not pinged yet).
	version string
	// holder is the write of the lock's holder.json, under way while the run goes on
	// (lockAll); nil: none.
	holder *pendingHolder
	// ahead is the lock's holder.json read ahead of the unlock; nil: none.
	ahead *holderRead
	// look is what the preflight saw of the app's folder, for the upload; nil: none.
	look *release.Look
	// unlocked says that the run's last sequence released the lock (unlockSteps).
	unlocked bool
	// mu guards Host for the heartbeat, which reads it from its own goroutine.
	mu sync.Mutex
}

// conn is the host's connection now (reconnect may replace it).
func (h *hostConn) conn() release.FS {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.Host
}

// unlock stops the lock's heartbeat and releases the lock if me still holds it.
func (h *hostConn) unlock(ctx context.Context, l release.Layout, me Holder, em *emitter) error {
	h.lease.stop()
	h.lease = nil
	if h.held() != nil || h.unlocked {
		// The failed write of holder.json removed the lock, or the run's last
		// sequence did.
		return nil
	}
	if r := h.ahead; r != nil {
		h.ahead = nil
		return releaseRead(ctx, h, l, h.name, me, em, r.wait)
	}
	return releaseLock(ctx, h, l, h.name, me, em)
}

// errNoBatch says that the host has no batch removal (hostConn.RemoveIn).
var errNoBatch = errors.New("the host removes files one request at a time")

// RemoveIn is the host's removal of files in dir and then dir in one batch
// (pkg/sshhost's), for prune: release.Store looks for it on its FS, which is the
// hostConn. A host without it answers errNoBatch, and the Store goes the long way.
func (h *hostConn) RemoveIn(ctx context.Context, dir string, files ...string) error {
	if r, ok := h.conn().(interface {
		RemoveIn(ctx context.Context, dir string, files ...string) error
	}); ok {
		return r.RemoveIn(ctx, dir, files...)
	}
	return errNoBatch
}

// Sequence is the host's ordered sequence of requests (pkg/sshhost's: two round
// trips), for the run's end: release.Sequence looks for it on its FS, which is the
// hostConn. ok false: the host has none, and the steps go one by one.
func (h *hostConn) Sequence(ctx context.Context, first []release.Step, proceed func([]error) bool, then []release.Step) ([]error, []error, bool) {
	if s, ok := h.conn().(release.Sequencer); ok {
		return s.Sequence(ctx, first, proceed, then)
	}
	return nil, nil, false
}

// readAhead stops the lock's heartbeat and reads its holder.json in the background,
// for the unlock that follows (holderRead). Only the host's own goroutine calls it.
func (h *hostConn) readAhead(ctx context.Context, l release.Layout) {
	if h.ahead != nil {
		return
	}
	ls, holder := h.lease, h.holder
	r := &holderRead{done: make(chan struct{})}
	h.ahead = r
	go func() {
		defer close(r.done)
		ls.stop()
		if holder.wait() != nil {
			return // unlock does not read: the lock was removed
		}
		r.h, _, r.held, r.err = readHolder(ctx, h, l)
	}()
}

// unlockSteps are the lock's release as steps of a sequence (release.Sequence):
// .lock renamed away under .tmp/ in one step, then its holder.json and it removed
// (as removeLock does). They are given only when the lock's heartbeat knows the lock
// is the run's own (lease.ours): its holder.json was written by the run, and each
// refresh since, the last no longer than a refresh interval ago, found it the run's
// and rewrote it. No other deploy can have taken the lock since, as that takes a
// heartbeat StaleAfter intervals old; only a person's forced unlock could have, a
// case the holder.json read just before the move narrowed, and never closed, as
// well. nil: the lock is released the long way (the holder read, then the move).
func (h *hostConn) unlockSteps(l release.Layout) []release.Step {
	if h.holder != nil {
		select {
		case <-h.holder.done:
		default:
			return nil
		}
	}
	if h.held() != nil || !h.lease.ours() {
		return nil
	}
	moved := path.Join(l.Tmp(), "unlocked-"+release.TempSuffix())
	return []release.Step{
		release.RenameStep(l.Lock(), moved),
		release.RemoveStep(path.Join(moved, path.Base(l.Holder()))),
		release.RmdirStep(moved),
	}
}

// held waits until the lock's holder.json is written: the lock is the run's then. Its
// error means the lock could not be taken after all (and was removed).
func (h *hostConn) held() error { return h.holder.wait() }

// session holds one connection per host for the length of a command.
type session struct {
	t     Target
	em    *emitter
	l     release.Layout
	hosts []*hostConn
	// dialErrs are why hosts could not be reached (openEach only).
	dialErrs []error

	// The connections live until close; until detach, cancelling the command's
	// context closes them too (nothing has been changed yet, so nothing needs them).
	life     context.Context
	stopLife func()
	detach   func() bool
}

// open connects to every host at once. The error names each host that failed.
func open(ctx context.Context, t Target, em *emitter) (*session, error) {
	if t.Env == nil || len(t.Env.Hosts) == 0 {
		return nil, fmt.Errorf("%w: the environment has no hosts", config.ErrInvalid)
	}
	if t.Dial == nil {
		return nil, errors.New("no way to reach the hosts (Dial is nil)")
	}
	life, stop := context.WithCancel(context.WithoutCancel(ctx))
	s := &session{t: t, em: em, l: release.Layout(t.Env.Path), life: life, stopLife: stop}
	s.detach = context.AfterFunc(ctx, stop)

	s.hosts = make([]*hostConn, len(t.Env.Hosts))
	errs := make([]error, len(t.Env.Hosts))
	var g errgroup.Group
	for i, h := range t.Env.Hosts {
		name := h.String()
		g.Go(func() error {
			c, err := t.Dial(life, name)
			if err != nil {
				errs[i] = fmt.Errorf("%s: %w", name, err)
				return nil
			}
			s.hosts[i] = &hostConn{name: name, Host: c}
			return nil
		})
	}
	_ = g.Wait()
	if err := errors.Join(errs...); err != nil {
		s.close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, t.Redactor.Error(err)
	}
	return s, nil
}

// reconnect makes sure h's connection still works, and replaces it with a new one
// when it broke: what follows a failure (putting the previous release back,
// audit.log, the lock) needs the host. Only the host's own goroutine uses h then.
func (s *session) reconnect(ctx context.Context, h *hostConn) error {
	_, err := h.Readlink(ctx, s.l.Current())
	if err == nil || errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	s.em.warn(h.name, StepRestore, fmt.Sprintf("the connection broke (%v); connecting again to put things in order", err))
	c, err := s.t.Dial(s.life, h.name)
	if err != nil {
		return fmt.Errorf("connect again: %w", err)
	}
	h.mu.Lock()
	old := h.Host
	h.Host = c
	h.mu.Unlock()
	_ = old.Close()
	return nil
}

// store is h's app folder. It goes through h, so that a connection made again is the
// one it uses.
func (s *session) store(h *hostConn) *release.Store {
	return &release.Store{FS: h, Layout: s.l}
}

// hold keeps the connections open when the command's context is cancelled from now
// on: a change has begun, and putting things back needs them.
func (s *session) hold() { s.detach() }

func (s *session) close() {
	s.detach()
	for _, h := range s.hosts {
		if h != nil {
			h.lease.stop()
		}
	}
	var wg sync.WaitGroup
	for _, h := range s.hosts {
		if h != nil {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_ = h.Close()
			}()
		}
	}
	wg.Wait()
	s.stopLife()
}

// each runs fn on every host, at most limit at once (0: all), and waits for all.
func (s *session) each(ctx context.Context, limit int, fn func(ctx context.Context, i int, h *hostConn)) {
	var g errgroup.Group
	if limit > 0 {
		g.SetLimit(limit)
	}
	for i, h := range s.hosts {
		g.Go(func() error {
			fn(ctx, i, h)
			return nil
		})
	}
	_ = g.Wait()
}
