package sshx

import (
	"encoding/binary"
	"io"
	"sync"
)

// SFTP request types whose sending InOrder can wait for: those that name a path.
const (
	fxpRemove   = 13
	fxpRmdir    = 15
	fxpRename   = 18
	fxpExtended = 200
)

// Op is a request InOrder waits to see sent before it starts the next step.
type Op int

const (
	// OpRemove is a file's removal (sftp.Client.Remove's first request).
	OpRemove Op = iota + 1
	// OpRmdir is a folder's removal (sftp.Client.RemoveDirectory).
	OpRmdir
	// OpRename is a rename, plain or posix-rename@openssh.com, keyed by the old name.
	OpRename
)

// Step is one request of an InOrder batch: Do makes it (one sftp.Client call whose
// first request is Op on Path); the next step starts once that request is sent.
type Step struct {
	Op   Op
	Path string
	Do   func() error
}

type sentKey struct {
	op   Op
	path string
}

// wire is the SFTP session's stream to the server, watched: which path requests
// have gone out, so that requests that depend on each other still go out together,
// in order, without waiting for the answers in between (the server answers them in
// the order they came).
type wire struct {
	io.WriteCloser

	mu      sync.Mutex
	sent    map[sentKey]int
	changed chan struct{} // closed at each request seen, then made again
	head    []byte        // the part of a packet's start read so far
	skip    int           // bytes of the current packet past its start, to pass by
}

func newWire(w io.WriteCloser) *wire {
	return &wire{WriteCloser: w, sent: map[sentKey]int{}, changed: make(chan struct{})}
}

// headMax is how much of a packet's start is looked at: its type, id and two paths.
const headMax = 8 << 10

// Write passes p on, then notes the requests it completed. pkg/sftp writes a
// packet's start (length, type, id, names) in one call, under its own lock.
func (w *wire) Write(p []byte) (int, error) {
	n, err := w.WriteCloser.Write(p)
	w.mu.Lock()
	defer w.mu.Unlock()
	for b := p[:n]; len(b) > 0; {
		if w.skip > 0 {
			k := min(w.skip, len(b))
			w.skip -= k
			b = b[k:]
			continue
		}
		need := 4
		if len(w.head) >= 4 {
			need = 4 + min(int(binary.BigEndian.Uint32(w.head)), headMax)
		}
		k := min(need-len(w.head), len(b))
		w.head = append(w.head, b[:k]...)
		b = b[k:]
		if len(w.head) < 4 {
			continue
		}
		length := int(binary.BigEndian.Uint32(w.head))
		if need = 4 + min(length, headMax); len(w.head) < need {
			continue
		}
		w.note(w.head[4:need])
		w.skip = length - (need - 4)
		w.head = w.head[:0]
	}
	return n, err
}

// note records a request: a packet's start, from its type on.
func (w *wire) note(b []byte) {
	if len(b) < 5 {
		return
	}
	typ, rest := b[0], b[5:]
	var op Op
	switch typ {
	case fxpRemove:
		op = OpRemove
	case fxpRmdir:
		op = OpRmdir
	case fxpRename:
		op = OpRename
	case fxpExtended:
		name, r, ok := sftpString(rest)
		if !ok || name != "posix-rename@openssh.com" {
			return
		}
		op, rest = OpRename, r
	default:
		return
	}
	p, _, ok := sftpString(rest)
	if !ok {
		return
	}
	w.sent[sentKey{op, p}]++
	close(w.changed)
	w.changed = make(chan struct{})
}

// count is how many requests of op on p were sent, and a channel closed at the next.
func (w *wire) count(op Op, p string) (int, <-chan struct{}) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.sent[sentKey{op, p}], w.changed
}

// sftpString reads an SFTP string (a uint32 length, then the bytes) off b.
func sftpString(b []byte) (string, []byte, bool) {
	if len(b) < 4 {
		return "", nil, false
	}
	n := int(binary.BigEndian.Uint32(b))
	if len(b)-4 < n {
		return "", nil, false
	}
	return string(b[4 : 4+n]), b[4+n:], true
}

// InOrder runs steps on the connection's SFTP session so that their requests reach
// the server in the order given, without waiting for an answer in between: all
// are answered in about one round trip. A step starts once the one before it has
// sent its request (or ended without sending it). It returns each step's error.
// Steps should name paths no other request names at the same time.
func (c *Client) InOrder(steps ...Step) ([]error, error) {
	if _, err := c.SFTP(); err != nil {
		return nil, err
	}
	c.mu.Lock()
	w := c.wire
	c.mu.Unlock()
	errs := make([]error, len(steps))
	var wg sync.WaitGroup
	for i, s := range steps {
		before, _ := w.count(s.Op, s.Path)
		done := make(chan struct{})
		wg.Go(func() {
			defer close(done)
			errs[i] = s.Do()
		})
	wait:
		for {
			n, changed := w.count(s.Op, s.Path)
			if n > before {
				break
			}
			select {
			case <-changed:
			case <-done:
				break wait
			}
		}
	}
	wg.Wait()
	return errs, nil
}
