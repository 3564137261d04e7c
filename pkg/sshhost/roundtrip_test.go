package sshhost

import (
	"context"
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/shipdeploy/ship/pkg/deploy"
	"github.com/shipdeploy/ship/pkg/release"
	"github.com/shipdeploy/ship/pkg/sshx"
	"github.com/shipdeploy/ship/test/testenv"
)

// turnRelay forwards TCP to an address and counts the client's round trips: the
// times it sends after it has received something since its last send (as
// test/cmd/latency does, without the delay).
type turnRelay struct {
	mu       sync.Mutex
	turns    int
	received bool
}

func (r *turnRelay) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.turns
}

func (r *turnRelay) serve(t *testing.T, to string) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", to)
			if err != nil {
				c.Close()
				return
			}
			t.Cleanup(func() { c.Close(); s.Close() })
			go r.pump(c, s, true)
			go r.pump(s, c, false)
		}
	}()
	return ln.Addr().String()
}

// pump forwards src to dst, each chunk relayDelay after it was read, so that
// requests sent together arrive together, as over a network, and their answers too.
func (r *turnRelay) pump(src, dst net.Conn, up bool) {
	type chunk struct {
		data []byte
		due  time.Time
	}
	q := make(chan chunk, 1024)
	go func() {
		defer close(q)
		for {
			buf := make([]byte, 32<<10)
			n, err := src.Read(buf)
			if n > 0 {
				if up {
					r.mu.Lock()
					if r.received {
						r.turns++
					}
					r.received = false
					r.mu.Unlock()
				}
				q <- chunk{buf[:n], time.Now().Add(relayDelay)}
			}
			if err != nil {
				return
			}
		}
	}()
	for c := range q {
		time.Sleep(time.Until(c.due))
		if !up {
			// Noted before the write: the client may answer before Write returns.
			r.mu.Lock()
			r.received = true
			r.mu.Unlock()
		}
		if _, err := dst.Write(c.data); err != nil {
			src.Close()
			continue
		}
	}
	if tc, ok := dst.(*net.TCPConn); ok {
		tc.CloseWrite()
	}
}

// relayDelay is the relay's delay each way.
const relayDelay = 40 * time.Millisecond // long beside a busy machine's scheduling delays

// dialRelayed connects to a real sshd through a turnRelay.
func dialRelayed(t *testing.T) (deploy.Host, *turnRelay) {
	t.Helper()
	srv := testenv.SSHD(t)
	r := &turnRelay{}
	addr := r.serve(t, srv.Addr)
	known := filepath.Join(t.TempDir(), "known_hosts")
	if err := os.WriteFile(known, []byte(knownhosts.Line([]string{knownhosts.Normalize(addr)}, srv.HostKey)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	dial := Dialer(Options{SSH: sshx.Options{
		KnownHostsFiles: []string{known}, IdentityFiles: []string{srv.UserKeyFile},
		HomeDir: t.TempDir(), ConfigFile: "none", AgentSocket: "none",
	}})
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	h, err := dial(ctx, srv.User+"@"+addr)
	if err != nil {
		t.Fatalf("dial through the relay: %v", err)
	}
	t.Cleanup(func() { h.Close() })
	return h, r
}

// The release store's steps over SFTP wait for few round trips: the requests that do
// not depend on each other go out together. The bounds have room, as requests in
// flight together can still count as more than one turn. Before (sequential
// requests, io.ReadAll's reads, RemoveAll's walk) this test counted: upload 21-25 (39
// for a release the host had), switch 3, result 11, audit 3, list of 5 releases 24,
// prune 51; with pkg/sftp's client and requests in flight together: 7-8 (13 for
// the first, 9-11), 1 (the upload staged the symlink), 5, 3, 7-8, 9; with pkg/sftpc
// (a file's write or read in two round trips, the staged write's rename with them):
// 5-7, 5, 1, 2, 2, 4, 5.
func TestStoreRoundTrips(t *testing.T) {
	h, relay := dialRelayed(t)
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "srv", "app")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	st := release.NewStore(h, dir)
	// The SFTP session is started once per connection, before the steps measured.
	if _, err := st.Current(ctx); err != nil {
		t.Fatal(err)
	}
	step := func(name string, max int, fn func() error) {
		t.Helper()
		before := relay.count()
		if err := fn(); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		n := relay.count() - before
		t.Logf("%s: %d round trips", name, n)
		if n > max {
			t.Errorf("%s took %d round trips, want at most %d", name, n, max)
		}
	}
	shas := []string{"aaaaaaa", "bbbbbbb", "ccccccc", "ddddddd", "eeeeeee"}
	for i, sha := range shas {
		info := release.Info{SHA: sha, Time: time.Date(2026, 1, 1, i, 0, 0, 0, time.UTC), Result: release.Uploaded}
		limit := 7 // 21-25 when each request waited for the one before
		if i == 0 {
			limit = 9 // the first also makes releases/ and .tmp/
		}
		step("upload of a new release", limit, func() error { return st.Upload(ctx, info, []byte("services: {}\n")) })
	}
	last := shas[len(shas)-1]
	step("upload of a release the host has", 6, func() error {
		return st.Upload(ctx, release.Info{SHA: last, Time: time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC)}, []byte("services: {}\n"))
	})
	step("switch current", 2, func() error { return st.SwitchCurrent(ctx, last) })
	step("release.json's result after the upload", 3, func() error { return st.SetResult(ctx, last, release.Deployed, true) })
	step("audit.log line", 2, func() error { return st.AppendAudit(ctx, release.AuditEntry{App: "app", SHA: last}) })
	var releases []release.Info
	step("list of 5 releases", 5, func() (err error) { releases, err = st.Releases(ctx); return err })
	if len(releases) != len(shas) || releases[0].SHA != last || releases[0].Result != release.Deployed {
		t.Errorf("releases = %+v, want %d, %s first and deployed", releases, len(shas), last)
	}
	var pruned release.Pruned
	step("prune of 3 of 5 releases", 6, func() (err error) { pruned, err = st.Prune(ctx, 2, last); return err })
	if len(pruned.Releases) != 3 {
		t.Errorf("pruned %v, want 3 releases", pruned.Releases)
	}
	entries, err := os.ReadDir(filepath.Join(dir, "releases"))
	if err != nil || len(entries) != 2 {
		t.Errorf("releases/ after prune: %d entries, %v; want 2", len(entries), err)
	}
	if data, err := os.ReadFile(filepath.Join(dir, "releases", last, "docker-compose.yml")); err != nil || string(data) != "services: {}\n" {
		t.Errorf("the kept release's compose file: %q, %v", data, err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "releases", last, "docker-compose.yml")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("the compose file's mode: %v, %v; want 0600", fi.Mode(), err)
	}
}

// A lock's release: the folder renamed away, its file and it removed, all sent
// together in order (sftpc.Batch), is one round trip (three, waited one by one,
// before).
func TestMoveAwayRoundTrips(t *testing.T) {
	h, relay := dialRelayed(t)
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "app")
	lock, tmp := filepath.Join(dir, ".lock"), filepath.Join(dir, ".tmp")
	for _, d := range []string{lock, tmp} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(lock, "holder.json"), []byte("{}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	m, ok := h.(interface {
		MoveAway(ctx context.Context, from, to string, files ...string) error
	})
	if !ok {
		t.Fatal("the SSH host has no MoveAway")
	}
	// The SFTP session is started before the step measured.
	if _, err := h.ReadDir(ctx, dir); err != nil {
		t.Fatal(err)
	}
	moved := filepath.Join(tmp, "unlocked-x")
	before := relay.count()
	if err := m.MoveAway(ctx, lock, moved, "holder.json"); err != nil {
		t.Fatalf("MoveAway: %v", err)
	}
	n := relay.count() - before
	t.Logf("move away and remove: %d round trips", n)
	if n > 2 {
		t.Errorf("move away and remove took %d round trips, want at most 2", n)
	}
	for _, p := range []string{lock, moved} {
		if _, err := os.Lstat(p); !os.IsNotExist(err) {
			t.Errorf("%s is still there (%v)", p, err)
		}
	}
	// A lock that is not there: the rename's error says so, and nothing else happens.
	if err := m.MoveAway(ctx, lock, moved, "holder.json"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("MoveAway of a missing folder: %v, want fs.ErrNotExist", err)
	}
}

// A connection's first look (the deploy's reach): the engine's ping and an lstat at
// once, right after the dial. The SFTP start (the session, the subsystem, then INIT
// with the lstat) and the engine's (the socket, its ping, its version) go on side
// by side, three round trips each; before, the SFTP start held the connection's lock
// and the engine's socket waited for it: 6.
func TestFirstLookRoundTrips(t *testing.T) {
	testenv.Docker(t)
	h, relay := dialRelayed(t)
	ctx := context.Background()
	before := relay.count()
	var pingErr error
	pinged := make(chan struct{})
	go func() {
		defer close(pinged)
		_, pingErr = h.Ping(ctx)
	}()
	_, err := h.(interface {
		Lstat(ctx context.Context, name string) (fs.FileInfo, error)
	}).Lstat(ctx, t.TempDir())
	<-pinged
	if err != nil || pingErr != nil {
		t.Fatalf("lstat: %v; ping: %v", err, pingErr)
	}
	n := relay.count() - before
	t.Logf("first look: %d round trips", n)
	if n > 4 {
		t.Errorf("the first look took %d round trips, want at most 4", n)
	}
}

// A deploy's end (deploy's Runner.end): the switch, then release.json renamed into
// place, the audit line and the lock's release, carried out in order, is two round
// trips: the audit file's open goes out with the switch, the rest once it is
// answered (four, with the lock's holder read, before). A switch that fails sends
// nothing after it.
func TestSequenceRoundTrips(t *testing.T) {
	h, relay := dialRelayed(t)
	ctx := context.Background()
	l := release.Layout(filepath.Join(t.TempDir(), "app"))
	for _, d := range []string{l.Tmp(), l.Lock(), l.Release("new"), l.Release("old")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	link, staged := filepath.Join(l.Tmp(), "current-x"), filepath.Join(l.Tmp(), "release.json-x")
	if err := os.Symlink(release.CurrentLink("old"), l.Current()); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(release.CurrentLink("new"), link); err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string]string{staged: "deployed\n", l.Holder(): "{}\n", l.Audit(): "one\n"} {
		if err := os.WriteFile(name, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if _, ok := h.(release.Sequencer); !ok {
		t.Fatal("the SSH host is no release.Sequencer")
	}
	// The SFTP session is started before the step measured.
	if _, err := h.ReadDir(ctx, string(l)); err != nil {
		t.Fatal(err)
	}
	moved := filepath.Join(l.Tmp(), "unlocked-x")
	then := []release.Step{
		release.RenameStep(staged, l.Info("new")),
		release.AppendStep(l.Audit(), []byte("two\n")),
		release.RenameStep(l.Lock(), moved),
		release.RemoveStep(filepath.Join(moved, "holder.json")),
		release.RmdirStep(moved),
	}
	proceed := func(errs []error) bool { return errors.Join(errs...) == nil }
	before := relay.count()
	ferrs, terrs := release.Sequence(ctx, h, []release.Step{release.RenameStep(link, l.Current())}, proceed, then)
	n := relay.count() - before
	t.Logf("switch, release.json, audit line, unlock: %d round trips", n)
	if err := errors.Join(append(ferrs, terrs...)...); err != nil {
		t.Fatalf("sequence: %v", err)
	}
	if n > 2 {
		t.Errorf("the end's sequence took %d round trips, want at most 2", n)
	}
	if target, _ := os.Readlink(l.Current()); target != release.CurrentLink("new") {
		t.Errorf("current -> %q", target)
	}
	if data, _ := os.ReadFile(l.Info("new")); string(data) != "deployed\n" {
		t.Errorf("release.json: %q", data)
	}
	if data, _ := os.ReadFile(l.Audit()); string(data) != "one\ntwo\n" {
		t.Errorf("audit.log: %q", data)
	}
	for _, p := range []string{l.Lock(), moved, link, staged} {
		if _, err := os.Lstat(p); !os.IsNotExist(err) {
			t.Errorf("%s is still there (%v)", p, err)
		}
	}

	// The switch's symlink is gone now: its rename fails, and nothing of then is
	// carried out (the audit file opened with it is closed unwritten).
	ferrs, terrs = release.Sequence(ctx, h, []release.Step{release.RenameStep(link, l.Current())}, proceed,
		[]release.Step{release.AppendStep(l.Audit(), []byte("three\n")), release.RmdirStep(l.Release("old"))})
	if !errors.Is(ferrs[0], fs.ErrNotExist) || !errors.Is(terrs[0], release.ErrNotSent) || !errors.Is(terrs[1], release.ErrNotSent) {
		t.Errorf("errors %v, %v; want the rename's (not there), then ErrNotSent", ferrs, terrs)
	}
	if data, _ := os.ReadFile(l.Audit()); string(data) != "one\ntwo\n" {
		t.Errorf("audit.log after a failed switch: %q", data)
	}
	if _, err := os.Stat(l.Release("old")); err != nil {
		t.Errorf("a step after a failed switch was carried out: %v", err)
	}
}
