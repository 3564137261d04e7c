package deploy

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/shipdeploy/ship/pkg/release"
)

// The end releases the lock without reading holder.json first only while the
// heartbeat knows the lock is the run's (hostConn.unlockSteps): once a refresh found
// it another's, the end goes the long way, which leaves that lock.
func TestLeaseKnowsALockLost(t *testing.T) {
	h := newFakeHost("web1")
	l := release.Layout(root)
	lost := make(chan struct{}, 1)
	em := newEmitter(func(e Event) {
		if strings.Contains(e.Msg, errLost.Error()) {
			select {
			case lost <- struct{}{}:
			default:
			}
		}
	}, nil)
	me := Me("deploy", shaA)
	me.Refresh = "10ms"
	p, err := startAcquire(context.Background(), h, l, "web1", me, 0, 0, em)
	if err != nil {
		t.Fatal(err)
	}
	hc := &hostConn{name: "web1", Host: &fakeConn{fakeHost: h}, holder: p}
	hc.lease = heartbeatAfter(context.Background(), p, hc.conn, l, "web1", me, 1<<62, em)
	if err := hc.held(); err != nil {
		t.Fatal(err)
	}
	// Until its first refresh, the lease knows the lock as written.
	if steps := hc.unlockSteps(l); len(steps) != 3 || steps[0].Path != l.Lock() {
		t.Fatalf("unlock steps of a lock the lease knows: %+v", steps)
	}
	// A process asleep for longer than two intervals (the wall clock went on, the
	// monotonic one did not) may have lost the lock meanwhile: the lease does not know.
	hc.lease.known.Store(time.Now().Add(-3 * time.Hour).UnixNano())
	hc.lease.refresh = time.Hour
	if hc.lease.ours() {
		t.Fatal("the lease knows the lock as its holder's after three intervals without a refresh")
	}
	hc.lease.stop()

	// Another holder's lock, found by the next refresh.
	other := Me("deploy", shaB)
	data, _ := json.Marshal(other)
	h.put(l.Holder(), data)
	hc.lease = heartbeatAfter(context.Background(), nil, hc.conn, l, "web1", me, 10e6, em)
	<-lost
	hc.lease.stop()
	if hc.lease.ours() {
		t.Fatal("the lease still knows the lock as its holder's after a refresh found it another's")
	}
	if steps := hc.unlockSteps(l); steps != nil {
		t.Fatalf("unlock steps of a lock held by another: %+v", steps)
	}
	if err := hc.unlock(context.Background(), l, me, em); err != nil {
		t.Fatal(err)
	}
	if got, _ := h.file(l.Holder()); got != string(data) {
		t.Errorf("the other holder's lock was touched: %q", got)
	}
}
