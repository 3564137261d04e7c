package deploy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"sync/atomic"
	"time"

	"github.com/shipdeploy/ship/pkg/release"
)

// errLost means that a lock this run held is no longer its own.
var errLost = errors.New("the lock is no longer held by this run")

// lease keeps a held lock's heartbeat fresh until stop: the proof that its holder
// still runs, without which the next deploy takes the lock over (Holder.stale).
type lease struct {
	cancel context.CancelFunc
	done   chan struct{}
	// written is the write of holder.json the heartbeat began after; nil: written
	// before.
	written *pendingHolder
	// beat is how the last refresh went: 0 none yet, beatOK, beatFailed.
	beat atomic.Int32
	// known is when the lock was last known the holder's, by the wall clock (Unix
	// nanoseconds): the lease's start, then each refresh that found it so.
	known atomic.Int64
	// refresh is the heartbeat's interval.
	refresh time.Duration
}

// How a lease's last refresh went.
const (
	beatOK     = 1
	beatFailed = 2
)

// ours reports whether the heartbeat knows the lock is its holder's: its last
// refresh found the lock its holder's and rewrote it, or, before the first,
// holder.json was written; and that was at most two intervals ago by the wall
// clock. A process stopped for longer (a laptop asleep mid-deploy: the monotonic
// clock stands still then, the wall clock and the other machines' do not) may have
// lost the lock to a deploy that found its heartbeat stale, so then it does not know.
// A nil lease knows nothing.
func (ls *lease) ours() bool {
	if ls == nil {
		return false
	}
	// time.Unix has no monotonic reading, so the difference is the wall clock's.
	if d := time.Now().Sub(time.Unix(0, ls.known.Load())); d > ls.refresh && d-ls.refresh > ls.refresh {
		return false
	}
	switch ls.beat.Load() {
	case beatOK:
		return true
	case beatFailed:
		return false
	}
	if ls.written == nil {
		return true
	}
	select {
	case <-ls.written.done:
		return ls.written.err == nil
	default:
		return false
	}
}

// stop ends the heartbeat and waits for a refresh under way; a nil lease is none.
func (ls *lease) stop() {
	if ls == nil {
		return
	}
	ls.cancel()
	<-ls.done
}

// heartbeat refreshes me's lock every refresh until the lease is stopped. conn is the
// host's connection at each refresh (a broken one is made again by the run). A refresh
// that fails is told once, until one succeeds; a lock found taken over is told, and
// the heartbeat ends.
func heartbeat(ctx context.Context, conn func() release.FS, l release.Layout, host string, me Holder, refresh time.Duration, em *emitter) *lease {
	return heartbeatAfter(ctx, nil, conn, l, host, me, refresh, em)
}

// heartbeatAfter is heartbeat from when written has written holder.json.
func heartbeatAfter(ctx context.Context, written *pendingHolder, conn func() release.FS, l release.Layout, host string, me Holder, refresh time.Duration, em *emitter) *lease {
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	ls := &lease{cancel: cancel, done: make(chan struct{}), written: written, refresh: refresh}
	ls.known.Store(time.Now().UnixNano())
	go func() {
		defer close(ls.done)
		// The first refresh is of holder.json as written.
		if written != nil {
			select {
			case <-ctx.Done():
				return
			case <-written.done:
			}
			if written.err != nil {
				return
			}
		}
		tick := time.NewTicker(refresh)
		defer tick.Stop()
		failing := false
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			err := beat(ctx, conn(), l, me)
			if err == nil {
				ls.known.Store(time.Now().UnixNano())
				ls.beat.Store(beatOK)
			} else {
				ls.beat.Store(beatFailed)
			}
			switch {
			case ctx.Err() != nil:
				return
			case errors.Is(err, errLost):
				em.warn(host, StepLock, err.Error()+": its heartbeat was late by more than the bound, and another deploy may run on this host now")
				return
			case err != nil && !failing:
				em.warn(host, StepLock, "refresh the lock's heartbeat: "+err.Error())
				failing = true
			case err == nil:
				failing = false
			}
		}
	}()
	return ls
}

// beat rewrites me's holder.json with a new heartbeat, staged inside .lock/ and renamed
// over it, once it has checked that the lock is still me's.
func beat(ctx context.Context, f release.FS, l release.Layout, me Holder) error {
	h, _, held, err := readHolder(ctx, f, l)
	switch {
	case err != nil:
		return err
	case !held:
		return fmt.Errorf("%w (removed)", errLost)
	case !h.mine(me):
		return fmt.Errorf("%w (now held by %s)", errLost, h)
	}
	h.Heartbeat = time.Now().UTC()
	data, err := json.MarshalIndent(h, "", "  ")
	if err != nil {
		return err
	}
	tmp := path.Join(l.Lock(), ".holder-"+release.TempSuffix())
	return release.WriteStaged(ctx, f, tmp, l.Holder(), append(data, '\n'), 0o644)
}
