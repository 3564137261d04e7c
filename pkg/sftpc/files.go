package sftpc

import (
	"context"
	"errors"
	"io"
	"io/fs"
)

const (
	// chunk is the data of one READ or WRITE request: well under OpenSSH's 256 KiB
	// packet limit.
	chunk = 64 << 10
	// flushAt is how much of a flight is built up before it is written: the
	// context is checked between such writes.
	flushAt = 1 << 20
	// firstReads is how much of a file whose size is not known the first flight of
	// reads asks for.
	firstReads = 4
	// maxReads bounds the reads of one flight (32 MiB); a longer file takes more.
	maxReads = 512
	// maxPrealloc bounds the buffer allocated from a size the server said.
	maxPrealloc = 16 << 20
)

// open opens name and returns its handle: one round trip, waited for whatever
// ctx does, so that no handle is left open unseen.
func (c *Client) open(name string, flags uint32, perm fs.FileMode) (string, error) {
	f := c.flight()
	f.add(fxpOpen, func(e enc) enc {
		e = e.str(name).u32(flags)
		if flags&flagCreat != 0 {
			return e.perms(perm)
		}
		return e.u32(0)
	})
	if err := f.flush(); err != nil {
		return "", err
	}
	r, err := f.wait(nil, 0)
	if err != nil {
		return "", err
	}
	return r.handle()
}

// Append opens name for appending (creating it with mode 0644), writes data and
// closes it: two round trips. Data of up to 64 KiB goes in one write, which the
// server appends whole (O_APPEND), whoever else writes.
func (c *Client) Append(ctx context.Context, name string, data []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	h, err := c.open(name, flagWrite|flagAppend|flagCreat, 0o644)
	if err != nil {
		return &fs.PathError{Op: "open", Path: name, Err: err}
	}
	f := c.flight()
	for off := 0; off < len(data); off += chunk {
		part := data[off:min(off+chunk, len(data))]
		f.add(fxpWrite, func(e enc) enc { return e.str(h).u64(uint64(off)).bytes(part) })
	}
	n := len(f.replies)
	f.add(fxpClose, func(e enc) enc { return e.str(h) })
	if err := f.flush(); err != nil {
		return &fs.PathError{Op: "write", Path: name, Err: err}
	}
	errs, err := f.statuses(0, n+1)
	if err != nil {
		return &fs.PathError{Op: "write", Path: name, Err: err}
	}
	for i, e := range errs {
		if e != nil {
			op := "write"
			if i == n {
				op = "close"
			}
			return &fs.PathError{Op: op, Path: name, Err: e}
		}
	}
	return nil
}

// ReadFile reads the whole file: its open and a look at its size, then reads
// covering that size and the close, two round trips in all. A file that grew
// meanwhile is read on from where that ended.
func (c *Client) ReadFile(ctx context.Context, name string) ([]byte, error) {
	var buf []byte
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		more, err := c.readFrom(name, &buf)
		if err != nil {
			return nil, &fs.PathError{Op: "read", Path: name, Err: err}
		}
		if !more {
			return buf, nil
		}
	}
}

// readFrom opens name, reads it from len(*buf) on, appends what it read and
// closes it; more is true when it stopped before the file's end.
func (c *Client) readFrom(name string, buf *[]byte) (more bool, err error) {
	f := c.flight()
	f.add(fxpOpen, func(e enc) enc { return e.str(name).u32(flagRead).u32(0) })
	f.add(fxpStat, func(e enc) enc { return e.str(name) })
	if err := f.flush(); err != nil {
		return false, err
	}
	r, err := f.wait(nil, 0)
	if err != nil {
		return false, err
	}
	h, openErr := r.handle()
	if r, err = f.wait(nil, 1); err != nil {
		return false, err
	}
	if openErr != nil {
		return false, openErr
	}
	from := len(*buf)
	reads := firstReads
	if a, err := r.attrs(); err == nil && a.Flags&attrSize != 0 {
		if *buf == nil {
			*buf = make([]byte, 0, min(a.Size, maxPrealloc))
		}
		// One more than the size needs: its EOF says the file ends there.
		left := min(a.Size-min(a.Size, uint64(from)), maxReads*chunk)
		reads = int((left+chunk-1)/chunk) + 1
	}
	f = c.flight()
	for i := range reads {
		off := uint64(from + i*chunk)
		f.add(fxpRead, func(e enc) enc { return e.str(h).u64(off).u32(chunk) })
	}
	f.add(fxpClose, func(e enc) enc { return e.str(h) })
	if err := f.flush(); err != nil {
		return false, err
	}
	more, done := true, false
	var firstErr error
	for i := range reads + 1 {
		r, err := f.wait(nil, i)
		if err != nil {
			return false, err
		}
		if i == reads || done {
			continue // the close: nothing waits for a read-only file's
		}
		data, err := r.data()
		switch {
		case errors.Is(err, io.EOF):
			more, done = false, true
		case err != nil:
			firstErr, done = err, true
		case len(*buf) != from+i*chunk:
			// A short read before this one (a server that reads less than asked):
			// the next flight asks again from where the data ends.
			done = true
		default:
			*buf = append(*buf, data...)
		}
	}
	return more, firstErr
}

// ReadDir lists dir (without "." and ".."), describing each entry as lstat does.
// An open and a flight of four reads of the listing and the close: two round trips
// for up to 400 entries with OpenSSH; a longer folder is listed again with more.
func (c *Client) ReadDir(ctx context.Context, dir string) ([]fs.FileInfo, error) {
	for reads := 4; ; reads *= 4 {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		infos, complete, err := c.readDir(dir, reads)
		if err != nil {
			return nil, &fs.PathError{Op: "readdir", Path: dir, Err: err}
		}
		if complete {
			return infos, nil
		}
		if reads >= maxReads {
			return nil, &fs.PathError{Op: "readdir", Path: dir, Err: errors.New("too many entries")}
		}
	}
}

// readDir lists dir in up to reads requests; complete says whether it got to the end.
func (c *Client) readDir(dir string, reads int) (infos []fs.FileInfo, complete bool, err error) {
	f := c.flight()
	f.add(fxpOpendir, func(e enc) enc { return e.str(dir) })
	if err := f.flush(); err != nil {
		return nil, false, err
	}
	r, err := f.wait(nil, 0)
	if err != nil {
		return nil, false, err
	}
	h, err := r.handle()
	if err != nil {
		return nil, false, err
	}
	f = c.flight()
	for range reads {
		f.add(fxpReaddir, func(e enc) enc { return e.str(h) })
	}
	f.add(fxpClose, func(e enc) enc { return e.str(h) })
	if err := f.flush(); err != nil {
		return nil, false, err
	}
	var firstErr error
	for i := range reads + 1 {
		r, err := f.wait(nil, i)
		if err != nil {
			return nil, false, err
		}
		if i == reads || complete || firstErr != nil {
			continue
		}
		names, err := r.names()
		switch {
		case errors.Is(err, io.EOF):
			complete = true
		case err != nil:
			firstErr = err
		}
		for _, n := range names {
			if n.name != "." && n.name != ".." {
				infos = append(infos, &fileInfo{name: n.name, a: n.attrs})
			}
		}
	}
	return infos, complete, firstErr
}
