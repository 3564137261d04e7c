// Package sftpc is ship's SFTP client (protocol version 3, as OpenSSH speaks it):
// one job, sending requests at once and matching the answers by id, so that a
// file's write or read waits for two round trips rather than one per request.
//
// The server answers requests in the order it gets them, so a request may follow
// one it depends on before that one's answer is back, as long as it needs no value
// from it: only OPEN's handle is such a value. WriteFile, WriteStaged, ReadFile,
// Append and ReadDir send OPEN, then everything after it in one go (one flight),
// and wait for all the answers. Batch sends simple requests together, in order.
//
// One goroutine reads the answers and hands each to its request; writes hold a
// mutex only while they write, never across a round trip, so calls from several
// goroutines overlap. Every length the server sends is bounded: bad data is an
// error, never a panic or a huge allocation.
package sftpc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
)

// ErrClosed is the error of calls on a Client whose connection has ended.
var ErrClosed = errors.New("sftp: connection closed")

// Client is an SFTP session over a server's output (r) and input (w). Its methods
// are safe for concurrent use.
type Client struct {
	w   io.WriteCloser
	wmu sync.Mutex // held while a flight's bytes are written

	mu      sync.Mutex
	nextID  uint32
	pending map[uint32]chan reply
	err     error // why the reader stopped

	done  chan struct{}     // closed when the reader stops
	ready chan struct{}     // closed once the server's VERSION is read
	exts  map[string]string // what VERSION offered; set before ready is closed
}

// New starts an SFTP session: it sends INIT and starts reading answers. It does
// not wait for the server's VERSION: the first requests go out right behind INIT,
// which the server handles first (OpenSSH's refuses nothing before it), and only
// what needs the server's extensions (HasExtension) waits for it. A VERSION that
// is not SFTP 3 ends the session, with the error the calls get. Close ends it.
func New(r io.Reader, w io.WriteCloser) (*Client, error) {
	c := &Client{w: w, pending: map[uint32]chan reply{}, done: make(chan struct{}), ready: make(chan struct{})}
	c.wmu.Lock()
	_, err := w.Write(enc(nil).u32(5).u8(fxpInit).u32(3))
	c.wmu.Unlock()
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("sftp: send init: %w", err)
	}
	go c.read(r)
	return c, nil
}

// version reads the server's VERSION, the first packet it sends.
func (c *Client) version(r io.Reader) error {
	typ, body, err := readPacket(r, nil)
	if err != nil {
		return err
	}
	if typ != fxpVersion {
		return fmt.Errorf("%w: packet of type %d where the version was due", errBadPacket, typ)
	}
	if c.exts, err = parseVersion(body); err != nil {
		return err
	}
	close(c.ready)
	return nil
}

// parseVersion reads VERSION's fields: the version (3 or more; the client speaks
// 3) and the extensions offered.
func parseVersion(body []byte) (map[string]string, error) {
	d := newDec(body)
	if v := d.u32(); !d.ok || v < 3 {
		return nil, fmt.Errorf("%w: the server speaks SFTP version %d, not 3", errBadPacket, v)
	}
	exts := map[string]string{}
	for len(d.b) > 0 {
		name, data := d.str(), d.str()
		if !d.ok || len(exts) >= maxExtension {
			return nil, fmt.Errorf("%w: bad extensions in the version", errBadPacket)
		}
		exts[name] = data
	}
	return exts, nil
}

// HasExtension says whether the server offered the extension name (e.g.
// "posix-rename@openssh.com").
// It waits for the server's VERSION; false when the session ended before it.
func (c *Client) HasExtension(name string) bool {
	select {
	case <-c.ready:
	case <-c.done:
		select {
		case <-c.ready:
		default:
			return false
		}
	}
	_, ok := c.exts[name]
	return ok
}

// read hands each answer to its request, until the stream ends or is bad.
func (c *Client) read(r io.Reader) {
	if err := c.version(r); err != nil {
		if errors.Is(err, io.EOF) {
			err = ErrClosed
		}
		c.stop(fmt.Errorf("sftp: start: %w", err))
		return
	}
	var buf []byte
	for {
		typ, body, err := readPacket(r, buf)
		if err == nil && len(body) < 4 {
			err = fmt.Errorf("%w: a reply without its id", errBadPacket)
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = ErrClosed
			}
			c.stop(err)
			return
		}
		id := uint32(body[0])<<24 | uint32(body[1])<<16 | uint32(body[2])<<8 | uint32(body[3])
		c.mu.Lock()
		ch, ok := c.pending[id]
		delete(c.pending, id)
		c.mu.Unlock()
		if !ok {
			c.stop(fmt.Errorf("%w: an answer to no request (id %d)", errBadPacket, id))
			return
		}
		// The body is the waiter's: the next packet gets a buffer of its own.
		ch <- reply{typ, body[4:]}
		buf = nil
	}
}

// stop ends the session with err: calls waiting for answers get it.
func (c *Client) stop(err error) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	c.err = err
	close(c.done)
	c.mu.Unlock()
	// Outside the lock: a close that waits on the stream holds up no answer.
	c.w.Close()
}

// Close ends the session: the server's input is closed, and calls under way fail.
func (c *Client) Close() error {
	c.stop(ErrClosed)
	return nil
}

// Wait waits for the session to end, and returns why (ErrClosed after Close or
// when the server went away).
func (c *Client) Wait() error {
	<-c.done
	return c.err
}

// closedErr is why the session ended.
func (c *Client) closedErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// flight is requests sent together: their bytes are built up, then written in one
// go; each has a channel for its answer.
type flight struct {
	c       *Client
	buf     enc
	replies []chan reply
}

func (c *Client) flight() *flight { return &flight{c: c} }

// add appends a request of type typ, whose fields fields writes; it returns the
// request's index in the flight.
func (f *flight) add(typ byte, fields func(enc) enc) int {
	ch := make(chan reply, 1)
	f.c.mu.Lock()
	f.c.nextID++
	id := f.c.nextID
	f.c.pending[id] = ch
	f.c.mu.Unlock()
	b, start := f.buf.begin(typ, id)
	f.buf = fields(b).end(start)
	f.replies = append(f.replies, ch)
	return len(f.replies) - 1
}

// ext appends an extended request (name@openssh.com).
func (f *flight) ext(name string, fields func(enc) enc) int {
	return f.add(fxpExtended, func(e enc) enc { return fields(e.str(name)) })
}

// flush writes what was added since the last flush.
func (f *flight) flush() error {
	if len(f.buf) == 0 {
		return nil
	}
	f.c.wmu.Lock()
	_, err := f.c.w.Write(f.buf)
	f.c.wmu.Unlock()
	f.buf = f.buf[:0]
	if err != nil {
		if cerr := f.c.closedErr(); cerr != nil {
			return cerr
		}
		return fmt.Errorf("sftp: send: %w", err)
	}
	return nil
}

// wait is the answer to request i. With ctx nil it waits until the answer comes
// or the session ends.
func (f *flight) wait(ctx context.Context, i int) (reply, error) {
	var cancel <-chan struct{}
	if ctx != nil {
		cancel = ctx.Done()
	}
	select {
	case r := <-f.replies[i]:
		return r, nil
	case <-f.c.done:
		select {
		case r := <-f.replies[i]:
			return r, nil
		default:
			return reply{}, f.c.closedErr()
		}
	case <-cancel:
		return reply{}, ctx.Err()
	}
}

// statuses waits for the answers of requests from..to-1, all STATUS replies, and
// returns each one's error.
func (f *flight) statuses(from, to int) ([]error, error) {
	errs := make([]error, to-from)
	for i := from; i < to; i++ {
		r, err := f.wait(nil, i)
		if err != nil {
			return errs, err
		}
		errs[i-from] = r.status()
	}
	return errs, nil
}
