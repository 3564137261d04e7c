package sftpc

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
)

// ErrNotSent is the error of a Sequence's request that was never sent: proceed
// said no.
var ErrNotSent = errors.New("sftp: not sent, as a request before it failed")

// Appending is a Sequence's append of data to a file (OpAppend).
type Appending struct {
	Name string
	Data []byte
}

// Sequence sends first's requests in one flight, in order, together with the
// opens of then's appends (opening writes nothing); once they are answered,
// proceed is given first's results. When it says yes, then goes out in a second
// flight, in order: the requests before an append, its write and close, the ones
// after it. The server carries the requests out in the order sent, so what comes
// later in then happens after an append's data is written: two round trips for
// all. When proceed says no, the opened files are closed and then's results are
// ErrNotSent. An append's data (at most 64 KiB) is one write, appended whole.
//
// then's items are Ops or Appendings. The error is the session's.
func (c *Client) Sequence(ctx context.Context, first []Op, proceed func([]Result) bool, then []any) (firstRes, thenRes []Result, err error) {
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	for _, s := range then {
		switch s := s.(type) {
		case Op:
		case Appending:
			if len(s.Data) > chunk {
				return nil, nil, fmt.Errorf("sftp: append of %d bytes to %s in a sequence: at most %d", len(s.Data), s.Name, chunk)
			}
		default:
			return nil, nil, fmt.Errorf("sftp: a sequence's step of type %T", s)
		}
	}
	f := c.flight()
	for _, op := range first {
		op.build(c, f)
	}
	opens := map[int]int{} // then's index -> the open's in f
	for i, s := range then {
		if a, ok := s.(Appending); ok {
			opens[i] = f.add(fxpOpen, func(e enc) enc {
				return e.str(a.Name).u32(flagWrite | flagAppend | flagCreat).perms(0o644)
			})
		}
	}
	if err := f.flush(); err != nil {
		return nil, nil, err
	}
	firstRes = make([]Result, len(first))
	for i, op := range first {
		r, err := f.wait(ctx, i)
		if err != nil {
			return nil, nil, err
		}
		firstRes[i] = op.result(r)
	}
	handles := map[int]string{}
	thenRes = make([]Result, len(then))
	for i, at := range opens {
		// Waited for whatever ctx does, so that no handle is left open unseen.
		r, err := f.wait(nil, at)
		if err != nil {
			return firstRes, nil, err
		}
		h, herr := r.handle()
		if herr != nil {
			thenRes[i].Err = &fs.PathError{Op: "open", Path: then[i].(Appending).Name, Err: herr}
			continue
		}
		handles[i] = h
	}
	if !proceed(firstRes) {
		g := c.flight()
		for _, h := range handles {
			g.add(fxpClose, func(e enc) enc { return e.str(h) })
		}
		if err := g.flush(); err != nil {
			return firstRes, nil, err
		}
		if _, err := g.statuses(0, len(handles)); err != nil {
			return firstRes, nil, err
		}
		for i := range thenRes {
			if thenRes[i].Err == nil {
				thenRes[i].Err = ErrNotSent
			}
		}
		return firstRes, thenRes, nil
	}
	if err := c.sendThen(ctx, then, handles, thenRes); err != nil {
		return firstRes, nil, err
	}
	return firstRes, thenRes, nil
}

// sendThen is Sequence's second flight: then in order, each append its write and
// close (an append whose open failed sends nothing); it fills res.
func (c *Client) sendThen(ctx context.Context, then []any, handles map[int]string, res []Result) error {
	f := c.flight()
	at := make([]int, len(then)) // the last request of each step in f; -1 none
	for i, s := range then {
		at[i] = -1
		switch s := s.(type) {
		case Op:
			s.build(c, f)
			at[i] = len(f.replies) - 1
		case Appending:
			h, ok := handles[i]
			if !ok {
				continue
			}
			f.add(fxpWrite, func(e enc) enc { return e.str(h).u64(0).bytes(s.Data) })
			at[i] = f.add(fxpClose, func(e enc) enc { return e.str(h) })
		}
	}
	if err := f.flush(); err != nil {
		return err
	}
	for i, s := range then {
		if at[i] < 0 {
			continue
		}
		switch s := s.(type) {
		case Op:
			r, err := f.wait(ctx, at[i])
			if err != nil {
				return err
			}
			res[i] = s.result(r)
		case Appending:
			errs, err := f.statuses(at[i]-1, at[i]+1)
			if err != nil {
				return err
			}
			if e := errors.Join(errs...); e != nil {
				res[i].Err = &fs.PathError{Op: "append", Path: s.Name, Err: e}
			}
		}
	}
	return nil
}
