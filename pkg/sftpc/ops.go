package sftpc

import (
	"context"
	"fmt"
	"io/fs"
)

// Op is one simple request of a Batch: a request on paths, answered by a status,
// attributes or a name.
type Op struct {
	what  string // for errors: "remove", "rename", ...
	path  string
	build func(c *Client, f *flight) int
	kind  byte // the answer: fxpStatus, fxpAttrs or fxpName
}

// Result is an Op's answer: Err, and for Lstat and Stat the file's description,
// for Readlink and RealPath the name.
type Result struct {
	Err  error
	Info fs.FileInfo
	Name string
}

func pathOp(what string, typ byte, p string, kind byte) Op {
	return Op{what: what, path: p, kind: kind, build: func(_ *Client, f *flight) int {
		return f.add(typ, func(e enc) enc { return e.str(p) })
	}}
}

// OpRemove removes the file p.
func OpRemove(p string) Op { return pathOp("remove", fxpRemove, p, fxpStatus) }

// OpRmdir removes the empty folder p.
func OpRmdir(p string) Op { return pathOp("rmdir", fxpRmdir, p, fxpStatus) }

// OpLstat describes p, a symbolic link itself rather than its target.
func OpLstat(p string) Op { return pathOp("lstat", fxpLstat, p, fxpAttrs) }

// OpStat describes p, following symbolic links.
func OpStat(p string) Op { return pathOp("stat", fxpStat, p, fxpAttrs) }

// OpReadlink reads the symbolic link p.
func OpReadlink(p string) Op { return pathOp("readlink", fxpReadlink, p, fxpName) }

// OpRealPath is p made absolute and clean by the server.
func OpRealPath(p string) Op { return pathOp("realpath", fxpRealpath, p, fxpName) }

// OpMkdir makes the folder p with the permission bits perm (less the server's
// umask). OpenSSH answers a plain failure for a folder that is there.
func OpMkdir(p string, perm fs.FileMode) Op {
	return Op{what: "mkdir", path: p, kind: fxpStatus, build: func(_ *Client, f *flight) int {
		return f.add(fxpMkdir, func(e enc) enc { return e.str(p).perms(perm) })
	}}
}

// OpRename renames from to to: with posix-rename@openssh.com when the server
// offers it (replacing what is at to, in one step), else a plain rename, which
// refuses to replace a file.
func OpRename(from, to string) Op {
	return Op{what: "rename", path: from, kind: fxpStatus, build: func(c *Client, f *flight) int {
		return c.rename(f, from, to)
	}}
}

// OpSymlink makes name a symbolic link holding target. OpenSSH's server takes the
// two the other way round from the draft: target first.
func OpSymlink(target, name string) Op {
	return Op{what: "symlink", path: name, kind: fxpStatus, build: func(_ *Client, f *flight) int {
		return f.add(fxpSymlink, func(e enc) enc { return e.str(target).str(name) })
	}}
}

const extPosixRename = "posix-rename@openssh.com"

func (c *Client) rename(f *flight, from, to string) int {
	if c.HasExtension(extPosixRename) {
		return f.ext(extPosixRename, func(e enc) enc { return e.str(from).str(to) })
	}
	return f.add(fxpRename, func(e enc) enc { return e.str(from).str(to) })
}

// Batch sends ops in one go, in the order given, and waits for all their answers:
// about one round trip for all. A request that fails does not stop the ones after
// it (the server runs each). The error is the session's (each op's is in its
// Result); cancelling ctx stops the wait, not the requests.
func (c *Client) Batch(ctx context.Context, ops ...Op) ([]Result, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	f := c.flight()
	for _, op := range ops {
		op.build(c, f)
	}
	if err := f.flush(); err != nil {
		return nil, err
	}
	res := make([]Result, len(ops))
	for i, op := range ops {
		r, err := f.wait(ctx, i)
		if err != nil {
			return nil, err
		}
		res[i] = op.result(r)
	}
	return res, nil
}

// result is op's answer r as its Result.
func (op Op) result(r reply) Result {
	var res Result
	switch op.kind {
	case fxpStatus:
		res.Err = r.status()
	case fxpAttrs:
		var a Attrs
		if a, res.Err = r.attrs(); res.Err == nil {
			res.Info = newInfo(op.path, a)
		}
	case fxpName:
		var names []nameEntry
		if names, res.Err = r.names(); res.Err == nil && len(names) != 1 {
			res.Err = fmt.Errorf("%w: %d names where one was due", errBadPacket, len(names))
		}
		if res.Err == nil {
			res.Name = names[0].name
		}
	}
	if res.Err != nil {
		res.Err = &fs.PathError{Op: op.what, Path: op.path, Err: res.Err}
	}
	return res
}

// one runs a single op.
func (c *Client) one(ctx context.Context, op Op) (Result, error) {
	res, err := c.Batch(ctx, op)
	if err != nil {
		return Result{}, &fs.PathError{Op: op.what, Path: op.path, Err: err}
	}
	return res[0], res[0].Err
}

// Mkdir makes the folder p (mode 0755 less the server's umask).
func (c *Client) Mkdir(ctx context.Context, p string) error {
	_, err := c.one(ctx, OpMkdir(p, 0o755))
	return err
}

// Rmdir removes the empty folder p.
func (c *Client) Rmdir(ctx context.Context, p string) error {
	_, err := c.one(ctx, OpRmdir(p))
	return err
}

// Remove removes the file p.
func (c *Client) Remove(ctx context.Context, p string) error {
	_, err := c.one(ctx, OpRemove(p))
	return err
}

// Rename renames from to to (OpRename).
func (c *Client) Rename(ctx context.Context, from, to string) error {
	_, err := c.one(ctx, OpRename(from, to))
	return err
}

// Symlink makes name a symbolic link holding target.
func (c *Client) Symlink(ctx context.Context, target, name string) error {
	_, err := c.one(ctx, OpSymlink(target, name))
	return err
}

// Readlink is what the symbolic link p holds.
func (c *Client) Readlink(ctx context.Context, p string) (string, error) {
	r, err := c.one(ctx, OpReadlink(p))
	return r.Name, err
}

// RealPath is p made absolute by the server ("." is the login folder).
func (c *Client) RealPath(ctx context.Context, p string) (string, error) {
	r, err := c.one(ctx, OpRealPath(p))
	return r.Name, err
}

// Lstat describes p, a symbolic link itself.
func (c *Client) Lstat(ctx context.Context, p string) (fs.FileInfo, error) {
	r, err := c.one(ctx, OpLstat(p))
	return r.Info, err
}

// Stat describes p, following symbolic links.
func (c *Client) Stat(ctx context.Context, p string) (fs.FileInfo, error) {
	r, err := c.one(ctx, OpStat(p))
	return r.Info, err
}
