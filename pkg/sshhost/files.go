package sshhost

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"sync"

	"github.com/shipdeploy/ship/pkg/sftpc"
)

// The host's files over SFTP (pkg/sftpc): release.FS. A file's write or read waits
// for two round trips, a simple request for one.

func (h *host) sftp(ctx context.Context) (*sftpc.Client, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return h.c.SFTP()
}

// pathErr keeps errors.Is(err, fs.ErrNotExist) and says which file.
func pathErr(op, name string, err error) error {
	if err == nil {
		return nil
	}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return err
	}
	return &fs.PathError{Op: op, Path: name, Err: err}
}

// writeErr is pathErr for a write, a sync or a close of name. SFTP version 3 has no
// status for a full disk: OpenSSH's server answers a plain "Failure" for ENOSPC (and
// EDQUOT), so that answer to a write says what it most likely means, and where.
func (h *host) writeErr(op, name string, err error) error {
	var se *sftpc.StatusError
	if err == nil || !errors.As(err, &se) || se.Code != sftpc.StatusFailure {
		return pathErr(op, name, err)
	}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		op, name, err = pe.Op, pe.Path, pe.Err
	}
	return &fs.PathError{Op: op, Path: name, Err: fmt.Errorf(
		"%w: the disk of %s may be full (or its quota used up); see with df -h %s on the host",
		err, h.c.Host(), path.Dir(name))}
}

// MkdirAll makes dir and its missing parents: a mkdir and a stat together (one
// round trip for a folder there or made), then the parents when it had none.
func (h *host) MkdirAll(ctx context.Context, dir string) error {
	sc, err := h.sftp(ctx)
	if err != nil {
		return err
	}
	return pathErr("mkdir", dir, mkdirAll(ctx, sc, dir))
}

func mkdirAll(ctx context.Context, sc *sftpc.Client, dir string) error {
	res, err := sc.Batch(ctx, sftpc.OpMkdir(dir, 0o755), sftpc.OpStat(dir))
	switch {
	case err != nil:
		return err
	case res[0].Err == nil:
		return nil
	case res[1].Err == nil && res[1].Info.IsDir():
		return nil
	case res[1].Err == nil:
		return &fs.PathError{Op: "mkdir", Path: dir, Err: errors.New("a file is in the way")}
	case !errors.Is(res[0].Err, fs.ErrNotExist) || path.Dir(dir) == dir:
		return res[0].Err
	}
	if err := mkdirAll(ctx, sc, path.Dir(dir)); err != nil {
		return err
	}
	if err := sc.Mkdir(ctx, dir); err != nil {
		if fi, serr := sc.Stat(ctx, dir); serr == nil && fi.IsDir() {
			return nil // made meanwhile
		}
		return err
	}
	return nil
}

// Mkdir makes dir. OpenSSH's SFTP server answers a plain failure for a folder that is
// there (protocol version 3 has no "exists" status), so the mkdir goes with an lstat,
// in one round trip: a failure with dir there is fs.ErrExist; dir gone by the time it
// was looked at (a lock released between the two requests) is made again.
func (h *host) Mkdir(ctx context.Context, dir string) error {
	sc, err := h.sftp(ctx)
	if err != nil {
		return err
	}
	for try := 0; ; try++ {
		res, err := sc.Batch(ctx, sftpc.OpMkdir(dir, 0o755), sftpc.OpLstat(dir))
		if err != nil {
			return pathErr("mkdir", dir, err)
		}
		err, serr := res[0].Err, res[1].Err
		if err == nil || errors.Is(err, fs.ErrNotExist) { // no parent: said as such
			return pathErr("mkdir", dir, err)
		}
		switch {
		case serr == nil:
			return &fs.PathError{Op: "mkdir", Path: dir, Err: fs.ErrExist}
		case try < 3 && errors.Is(serr, fs.ErrNotExist) && ctx.Err() == nil:
			continue
		}
		return pathErr("mkdir", dir, err)
	}
}

// WriteFile creates name (which must not be there) with mode set before any data,
// writes, syncs and closes it: two round trips. A file that fails half-way is
// removed; one there already is fs.ErrExist.
func (h *host) WriteFile(ctx context.Context, name string, data []byte, mode fs.FileMode) error {
	sc, err := h.sftp(ctx)
	if err != nil {
		return err
	}
	return h.written(ctx, sc, name, sc.WriteFile(ctx, name, data, mode))
}

// WriteStaged writes data to tmp and renames it over name in the same two round
// trips (release.StagedWriter). On any failure tmp is removed.
func (h *host) WriteStaged(ctx context.Context, tmp, name string, data []byte, mode fs.FileMode) error {
	sc, err := h.sftp(ctx)
	if err != nil {
		return err
	}
	if !sc.HasExtension("posix-rename@openssh.com") {
		return errNoPosixRename(tmp)
	}
	return h.written(ctx, sc, tmp, sc.WriteStaged(ctx, tmp, name, data, mode))
}

// written is the error of a write of name: fs.ErrExist for a creation refused
// because the file is there (OpenSSH says no more than "Failure"), a full disk
// said as such.
func (h *host) written(ctx context.Context, sc *sftpc.Client, name string, err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) && pe.Op == "create" {
		if _, serr := sc.Lstat(ctx, name); serr == nil {
			return &fs.PathError{Op: "create", Path: name, Err: fs.ErrExist}
		}
		return err
	}
	return h.writeErr("write", name, err)
}

func errNoPosixRename(from string) error {
	return fmt.Errorf("rename %s: the host's SFTP server lacks posix-rename@openssh.com, which an atomic switch needs", from)
}

// ReadFile reads the whole file: two round trips.
func (h *host) ReadFile(ctx context.Context, name string) ([]byte, error) {
	sc, err := h.sftp(ctx)
	if err != nil {
		return nil, err
	}
	data, err := sc.ReadFile(ctx, name)
	return data, pathErr("read", name, err)
}

func (h *host) Rename(ctx context.Context, from, to string) error {
	sc, err := h.sftp(ctx)
	if err != nil {
		return err
	}
	if !sc.HasExtension("posix-rename@openssh.com") {
		return errNoPosixRename(from)
	}
	return pathErr("rename", from, sc.Rename(ctx, from, to))
}

func (h *host) Symlink(ctx context.Context, target, name string) error {
	sc, err := h.sftp(ctx)
	if err != nil {
		return err
	}
	return pathErr("symlink", name, sc.Symlink(ctx, target, name))
}

func (h *host) Readlink(ctx context.Context, name string) (string, error) {
	sc, err := h.sftp(ctx)
	if err != nil {
		return "", err
	}
	target, err := sc.Readlink(ctx, name)
	return target, pathErr("readlink", name, err)
}

func (h *host) ReadDir(ctx context.Context, dir string) ([]fs.FileInfo, error) {
	sc, err := h.sftp(ctx)
	if err != nil {
		return nil, err
	}
	infos, err := sc.ReadDir(ctx, dir)
	return infos, pathErr("readdir", dir, err)
}

func (h *host) RemoveAll(ctx context.Context, p string) error {
	sc, err := h.sftp(ctx)
	if err != nil {
		return err
	}
	return pathErr("remove", p, removeAll(ctx, sc, p))
}

// removeAll removes p and what it holds in as few round trips as it can: an rmdir
// and an lstat together (an empty folder, or nothing there: one round trip); then the
// file, or the folder's entries all at once and the folder.
func removeAll(ctx context.Context, sc *sftpc.Client, p string) error {
	res, err := sc.Batch(ctx, sftpc.OpRmdir(p), sftpc.OpLstat(p))
	if err != nil {
		return err
	}
	if res[0].Err == nil {
		return nil
	}
	// OpenSSH answers "no such file" to an rmdir of a file (ENOTDIR): the lstat says
	// what is there.
	fi, serr := res[1].Info, res[1].Err
	switch {
	case errors.Is(serr, fs.ErrNotExist):
		return nil
	case serr != nil:
		return serr
	case !fi.IsDir():
		if err := sc.Remove(ctx, p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		return nil
	}
	entries, err := sc.ReadDir(ctx, p)
	if err != nil {
		return err
	}
	// The files and symlinks, as the listing says, go in one batch with no look
	// first; folders, and what could not be removed as a file, are walked at once.
	var files, rest []string
	for _, e := range entries {
		if e.IsDir() {
			rest = append(rest, path.Join(p, e.Name()))
		} else {
			files = append(files, path.Join(p, e.Name()))
		}
	}
	if len(files) > 0 {
		ops := make([]sftpc.Op, len(files))
		for i, f := range files {
			ops[i] = sftpc.OpRemove(f)
		}
		res, err := sc.Batch(ctx, ops...)
		if err != nil {
			return err
		}
		for i, r := range res {
			if r.Err != nil && !errors.Is(r.Err, fs.ErrNotExist) {
				rest = append(rest, files[i])
			}
		}
	}
	errs := make([]error, len(rest))
	var wg sync.WaitGroup
	for i, sub := range rest {
		wg.Go(func() { errs[i] = removeAll(ctx, sc, sub) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if err := sc.Rmdir(ctx, p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// Append adds data at the end of name (creating it, mode 0644) in one write, which
// the server appends whole (O_APPEND), whoever else writes: two round trips.
func (h *host) Append(ctx context.Context, name string, data []byte) error {
	sc, err := h.sftp(ctx)
	if err != nil {
		return err
	}
	err = sc.Append(ctx, name, data)
	var pe *fs.PathError
	if errors.As(err, &pe) && pe.Op == "write" {
		err = &fs.PathError{Op: "append", Path: name, Err: pe.Err}
	}
	return h.writeErr("append", name, err)
}
