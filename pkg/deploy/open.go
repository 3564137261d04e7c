package deploy

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
)

// RegistryCheck says whether a registry answers and takes the credentials shipctl
// has for it (a GET /v2/, as docker login does).
type RegistryCheck interface {
	Ping(ctx context.Context, host string) error
}

// OpenOptions say which hosts to open and lock, and what to check first.
type OpenOptions struct {
	Target
	// Check, with Registries, is asked first: each registry must answer and take the
	// credentials. nil checks none.
	Check      RegistryCheck
	Registries []string
	// SHA is the version about to be deployed, written in the lock's holder.
	SHA string
	// LockWait is how long to wait for a lock held by someone else; 0 fails at once.
	// LockPoll is how often to try it again; 0 is DefaultLockPoll.
	LockWait, LockPoll time.Duration
	// command names the command in the lock's holder: "deploy" when "".
	command string
}

// Conn is an environment's hosts, connected, checked and locked for one deploy, from
// the preflight to the end of the deploy: everything slow or interactive (a build,
// the tests, the question, the countdown) comes after the checks, and the deploy uses
// the preflight's connections (Options.Conn). Close releases the locks of a deploy
// that never started, and the connections.
type Conn struct {
	s  *session
	me Holder
	// fresh says, per host, that the app's folder did not exist before the lock made
	// it: a deploy that never starts leaves no folder behind.
	fresh   []bool
	mu      sync.Mutex
	started bool
	closed  bool
}

// Open checks, before anything slow or interactive: every registry of o.Registries
// answers with the credentials, every host answers over SSH with SFTP and its Docker
// engine; then it takes the lock on every host, one after the other. The lock is held
// (its heartbeat kept) until the deploy ends or Close. A host locked by someone else
// fails it with an error that matches ErrLocked.
func Open(ctx context.Context, o OpenOptions) (*Conn, error) {
	em := newEmitter(o.Progress, o.Redactor)
	c, _, err := openConn(ctx, o, em, true)
	return c, err
}

// openConn is Open with the hosts' results so far (locked, skipped) for a Summary.
// agent says whether to ask shipd already (agent environments): Run, whose preflight
// asks it next, does not.
func openConn(ctx context.Context, o OpenOptions, em *emitter, agent bool) (*Conn, []HostResult, error) {
	if o.Check != nil {
		for _, reg := range o.Registries {
			em.info("", StepPreflight, "checking the registry "+reg)
			if err := o.Check.Ping(ctx, reg); err != nil {
				return nil, nil, o.Redactor.Error(fmt.Errorf("preflight: registry %s: %w", reg, err))
			}
		}
	}
	if o.Env != nil {
		em.info("", StepPreflight, fmt.Sprintf("connecting to %d host(s)", len(o.Env.Hosts)))
	}
	s, err := open(ctx, o.Target, em)
	if err != nil {
		return nil, nil, fmt.Errorf("preflight: %w", err)
	}
	command := o.command
	if command == "" {
		command = "deploy"
	}
	c := &Conn{s: s, me: o.holder(command, o.SHA), fresh: make([]bool, len(s.hosts))}
	refresh := o.lockRefresh()
	results, err := c.reachAll(ctx, agent, refresh)
	if err != nil {
		c.abandon(ctx)
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
		return nil, nil, o.Redactor.Error(fmt.Errorf("preflight: %w", err))
	}
	if err := s.lockAll(ctx, c.me, o.LockWait, o.LockPoll, refresh, results); err != nil {
		bg := context.WithoutCancel(ctx)
		c.removeFresh(bg, false)
		// What each host runs, for the summary: read only now, as a deploy that goes
		// on reads it under its lock.
		s.each(bg, 0, func(ctx context.Context, i int, h *hostConn) {
			if !c.fresh[i] {
				results[i].Current, _ = s.store(h).Current(ctx)
			}
		})
		s.close()
		return nil, results, o.Redactor.Error(err)
	}
	// The locks are the run's once their holder.json is written: Open returns then,
	// before anything slow or interactive follows. Run waits for them after its
	// preflight, whose requests go out with the writes (heldAll).
	if agent {
		if err := c.heldAll(o); err != nil {
			return nil, results, err
		}
	}
	// From now on the connections outlive a cancelled context: the locks must be
	// released over them.
	s.hold()
	return c, results, nil
}

// reachAll checks every host at once (reach), the first host's lock tried with its
// checks (lockAll takes the others after it, in order). The error names every host
// that failed.
func (c *Conn) reachAll(ctx context.Context, agent bool, refresh time.Duration) ([]HostResult, error) {
	s := c.s
	results := make([]HostResult, len(s.hosts))
	errs := make([]error, len(s.hosts))
	var g errgroup.Group
	for i, h := range s.hosts {
		g.Go(func() error {
			var lock *Holder
			if i == 0 {
				// The first host's lock is tried with the checks (lockAll takes the
				// others after it, in order).
				lock = new(lockHolder(c.me, refresh))
			}
			fresh, version, err := reach(ctx, s, h, agent, lock)
			results[i] = HostResult{Host: h.name, Result: ResultSkipped}
			c.fresh[i] = fresh
			if err != nil {
				errs[i] = fmt.Errorf("%s: %w", h.name, err)
				return nil
			}
			h.version = version
			s.em.info(h.name, StepPreflight, "reachable: SFTP, Docker engine "+version)
			return nil
		})
	}
	_ = g.Wait()
	return results, errors.Join(errs...)
}

// abandon undoes what reachAll did when a host failed its checks: a lock taken with
// them is released, a folder it made removed, and the connections closed.
func (c *Conn) abandon(ctx context.Context) {
	s := c.s
	bg := context.WithoutCancel(ctx)
	s.each(bg, 0, func(ctx context.Context, i int, h *hostConn) {
		if h.holder != nil {
			if err := h.unlock(ctx, s.l, c.me, s.em); err != nil {
				s.em.warn(h.name, StepLock, err.Error()+"; release it with shipctl unlock")
			}
		}
	})
	c.removeFresh(bg, false)
	s.close()
}

// reach checks that the host answers over SFTP (is the app's folder there: fresh
// when not), pings its engine and, with agent in agent environments, asks shipd its
// status. With lock, the SFTP check is the try of the host's lock for that holder
// (tryLock: fresh when it had to make the folder): taken, it is the host's
// (hostConn.holder); held by someone else, lockAll tries again. The lock's mkdir then
// costs no round trip of its own.
func reach(ctx context.Context, s *session, h *hostConn, agent bool, lock *Holder) (fresh bool, version string, err error) {
	// The folder's look (or the lock) and the engine's ping at once: the SFTP session
	// and the engine's socket are opened together, their round trips overlap.
	var pingErr error
	pinged := make(chan struct{})
	go func() {
		defer close(pinged)
		version, pingErr = h.Ping(ctx)
	}()
	if lock != nil {
		// Its "locked" is said when lockAll takes it, after the hosts' checks.
		h.holder, fresh, err = tryLock(ctx, h, s.l, h.name, *lock, s.em, false)
		if errors.Is(err, fs.ErrExist) {
			err = nil
		}
	} else if st, ok := h.Host.(interface {
		Lstat(ctx context.Context, name string) (fs.FileInfo, error)
	}); ok {
		// One request (pkg/sshhost's) where a listing takes four.
		_, err = st.Lstat(ctx, string(s.l))
	} else {
		_, err = h.ReadDir(ctx, string(s.l))
	}
	<-pinged
	if errors.Is(err, fs.ErrNotExist) {
		fresh = true
	} else if err != nil {
		return fresh, "", err
	}
	if pingErr != nil {
		return fresh, "", pingErr
	}
	if agent && s.t.Env.Agent {
		// shipd must answer too: a deploy through it cannot go on without it.
		if _, err := agentPreflight(ctx, s, h); err != nil {
			return fresh, "", err
		}
	}
	return fresh, version, nil
}

// start hands the locks to the deploy's hosts, which release them as they finish.
func (c *Conn) start() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return errors.New("deploy: the hosts' connections are closed")
	}
	if c.started {
		return errors.New("deploy: these connections have deployed once already")
	}
	c.started = true
	return nil
}

// Close releases the locks when no deploy started on them, and closes the
// connections. It may be called more than once.
func (c *Conn) Close() {
	if c == nil {
		return
	}
	c.mu.Lock()
	closed, started := c.closed, c.started
	c.closed = true
	c.mu.Unlock()
	if closed {
		return
	}
	if !started {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		c.removeFresh(ctx, true)
		cancel()
	}
	c.s.close()
}

// removeFresh releases the locks (when locked) and removes the app's folder from the
// hosts where the lock made it and it holds nothing else.
func (c *Conn) removeFresh(ctx context.Context, locked bool) {
	s := c.s
	s.each(ctx, 0, func(ctx context.Context, i int, h *hostConn) {
		// The upload's stage, made by the preflight's look, goes with the lock.
		if stage := h.look.Stage(); stage != "" {
			done := make(chan struct{})
			go func() {
				defer close(done)
				_ = h.RemoveAll(ctx, stage)
			}()
			defer func() { <-done }()
		}
		h.look = nil
		if locked {
			if err := h.unlock(ctx, s.l, c.me, s.em); err != nil {
				s.em.warn(h.name, StepLock, err.Error()+"; release it with shipctl unlock")
				return
			}
		}
		if !c.fresh[i] {
			return
		}
		entries, err := h.ReadDir(ctx, string(s.l))
		if err != nil {
			return
		}
		for _, e := range entries {
			if e.Name() != ".tmp" {
				return
			}
		}
		_ = h.RemoveAll(ctx, string(s.l))
	})
}

// heldAll waits until every host's holder.json is written. When one failed, the
// locks are released and the connections closed.
func (c *Conn) heldAll(o OpenOptions) error {
	for _, h := range c.s.hosts {
		if err := h.held(); err != nil {
			c.s.hold()
			c.Close() // releases the locks taken
			return o.Redactor.Error(fmt.Errorf("%s: %w", h.name, err))
		}
	}
	return nil
}
