package sftpc

import (
	"context"
	"fmt"
	"io/fs"
	"path"
)

const (
	extFsync   = "fsync@openssh.com"
	extStatvfs = "statvfs@openssh.com"
	// roomMargin is the free space a staged write wants beyond its data (the
	// file system's own blocks) before it sends the rename with the data.
	roomMargin = 256 << 10
)

// WriteFile creates name, which must not exist, with the permission bits of mode
// set before any data (and again once it is open, so that the server's umask
// plays no part), writes data, syncs it to disk where the server can
// (fsync@openssh.com) and closes it: two round trips. A file that fails half-way
// is removed. Cancelling ctx stops the write between megabytes. OpenSSH answers a
// plain failure (StatusFailure) to the creation of a file that is there.
func (c *Client) WriteFile(ctx context.Context, name string, data []byte, mode fs.FileMode) error {
	return c.write(ctx, name, "", data, mode)
}

// WriteStaged is WriteFile of tmp, then tmp renamed over name (posix-rename when
// offered), so that name holds its old content or all of data, never a part. On
// any failure tmp is removed.
//
// The rename goes out with the data, before the write's answers are back: two
// round trips in all. The server runs it even when a write before it failed, so
// it is sent with the data only when the folder's file system has room for it
// (statvfs@openssh.com, asked with the open); otherwise, or without that
// extension, it waits for the write's answers (a third round trip). A quota
// (EDQUOT) or an I/O error can still fail a write whose rename went out: then
// name holds a part of data, and the error says so.
func (c *Client) WriteStaged(ctx context.Context, tmp, name string, data []byte, mode fs.FileMode) error {
	return c.write(ctx, tmp, name, data, mode)
}

// write is WriteFile of file, renamed to renameTo unless that is "".
func (c *Client) write(ctx context.Context, file, renameTo string, data []byte, mode fs.FileMode) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	h, room, err := c.create(file, mode, renameTo != "", len(data))
	if err != nil {
		return &fs.PathError{Op: "create", Path: file, Err: err}
	}
	w := &writing{c: c, f: c.flight(), file: file, h: h}
	cancelled, err := w.send(ctx, data, mode)
	if err != nil {
		return &fs.PathError{Op: "write", Path: file, Err: err}
	}
	renamed := false
	if cancelled {
		OpRemove(file).build(c, w.f)
		w.steps = append(w.steps, "remove")
	} else if renameTo != "" && room {
		c.rename(w.f, file, renameTo)
		w.steps = append(w.steps, "rename")
		renamed = true
	}
	if err := w.f.flush(); err != nil {
		return &fs.PathError{Op: "write", Path: file, Err: err}
	}
	errs, err := w.f.statuses(0, len(w.steps))
	if err != nil {
		return &fs.PathError{Op: "write", Path: file, Err: err}
	}
	if cancelled {
		return ctx.Err()
	}
	for i, e := range errs {
		switch {
		case e == nil:
			continue
		case w.steps[i] == "rename":
			c.removeQuietly(file)
			return &fs.PathError{Op: "rename", Path: file, Err: fmt.Errorf("to %s: %w", renameTo, e)}
		case renamed && errs[len(errs)-1] == nil:
			return &fs.PathError{Op: w.steps[i], Path: file, Err: fmt.Errorf(
				"%w (and %s was renamed over %s all the same: it may hold a part of the data)", e, file, renameTo)}
		}
		c.removeQuietly(file)
		return &fs.PathError{Op: w.steps[i], Path: file, Err: e}
	}
	if renameTo != "" && !renamed {
		if err := c.Rename(ctx, file, renameTo); err != nil {
			c.removeQuietly(file)
			return err
		}
	}
	return nil
}

// create opens file for writing, which must not exist, with the permission bits of
// mode; with staged, the same flight asks statvfs@openssh.com whether the folder
// has room for size bytes (true when it cannot be asked).
func (c *Client) create(file string, mode fs.FileMode, staged bool, size int) (h string, room bool, err error) {
	f := c.flight()
	f.add(fxpOpen, func(e enc) enc { return e.str(file).u32(flagWrite | flagCreat | flagExcl).perms(mode) })
	vfs := staged && c.HasExtension(extStatvfs)
	if vfs {
		f.ext(extStatvfs, func(e enc) enc { return e.str(path.Dir(file)) })
	}
	if err := f.flush(); err != nil {
		return "", false, err
	}
	r, err := f.wait(nil, 0)
	if err != nil {
		return "", false, err
	}
	if h, err = r.handle(); err != nil || !vfs {
		return h, true, err
	}
	if r, err = f.wait(nil, 1); err != nil {
		return "", false, err
	}
	free, ok := r.statvfsFree()
	return h, !ok || free >= uint64(size)+roomMargin, nil
}

// statvfsFree is the space free for unprivileged users from a statvfs@openssh.com
// answer.
func (r reply) statvfsFree() (uint64, bool) {
	d, err := r.expect(fxpExtendedReply)
	if err != nil {
		return 0, false
	}
	bsize, frsize := d.u64(), d.u64()
	d.u64() // blocks
	d.u64() // bfree
	bavail := d.u64()
	if frsize == 0 {
		frsize = bsize
	}
	if !d.ok || frsize > 1<<30 || bavail > 1<<50 {
		return 0, false
	}
	return bavail * frsize, true
}

// writing is a write's second flight under way: its requests' names, for errors.
type writing struct {
	c     *Client
	f     *flight
	file  string
	h     string
	steps []string
}

// send adds the mode, the data, the fsync (when offered) and the close to the
// flight, writing it out each megabyte; cancelled says ctx ended between two, and
// the data was cut short (the close is there all the same).
func (w *writing) send(ctx context.Context, data []byte, mode fs.FileMode) (cancelled bool, err error) {
	h := w.h
	w.f.add(fxpFsetstat, func(e enc) enc { return e.str(h).perms(mode) })
	w.steps = append(w.steps, "chmod")
	for off := 0; off < len(data); off += chunk {
		if len(w.f.buf) >= flushAt {
			if err := w.f.flush(); err != nil {
				return false, err
			}
			if ctx.Err() != nil {
				cancelled = true
				break
			}
		}
		part := data[off:min(off+chunk, len(data))]
		w.f.add(fxpWrite, func(e enc) enc { return e.str(h).u64(uint64(off)).bytes(part) })
		w.steps = append(w.steps, "write")
	}
	if !cancelled && w.c.HasExtension(extFsync) {
		w.f.ext(extFsync, func(e enc) enc { return e.str(h) })
		w.steps = append(w.steps, "fsync")
	}
	w.f.add(fxpClose, func(e enc) enc { return e.str(h) })
	w.steps = append(w.steps, "close")
	return cancelled, nil
}

// removeQuietly removes a file left by a failed write; the failure has been said.
func (c *Client) removeQuietly(file string) {
	_, _ = c.Batch(context.Background(), OpRemove(file))
}
