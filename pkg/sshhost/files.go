package sshhost

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"sync"

	"github.com/pkg/sftp"
)

// The host's files over SFTP: release.FS.

func (h *host) sftp(ctx context.Context) (*sftp.Client, error) {
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
	var se *sftp.StatusError
	if err == nil || !errors.As(err, &se) || se.FxCode() != sftp.ErrSSHFxFailure {
		return pathErr(op, name, err)
	}
	return &fs.PathError{Op: op, Path: name, Err: fmt.Errorf(
		"%w: the disk of %s may be full (or its quota used up); see with df -h %s on the host",
		err, h.c.Host(), path.Dir(name))}
}

func (h *host) MkdirAll(ctx context.Context, dir string) error {
	sc, err := h.sftp(ctx)
	if err != nil {
		return err
	}
	return pathErr("mkdir", dir, sc.MkdirAll(dir))
}

// Mkdir makes dir. OpenSSH's SFTP server answers a plain failure for a folder that is
// there (protocol version 3 has no "exists" status), so a failure is looked into: a
// folder there is fs.ErrExist; one gone by the time it is looked at (a lock released
// between the two requests) is made again.
func (h *host) Mkdir(ctx context.Context, dir string) error {
	sc, err := h.sftp(ctx)
	if err != nil {
		return err
	}
	for try := 0; ; try++ {
		err := sc.Mkdir(dir)
		if err == nil || errors.Is(err, fs.ErrNotExist) { // no parent: said as such
			return pathErr("mkdir", dir, err)
		}
		_, serr := sc.Lstat(dir)
		switch {
		case serr == nil:
			return &fs.PathError{Op: "mkdir", Path: dir, Err: fs.ErrExist}
		case try < 3 && errors.Is(serr, fs.ErrNotExist) && ctx.Err() == nil:
			continue
		}
		return pathErr("mkdir", dir, err)
	}
}

func (h *host) WriteFile(ctx context.Context, name string, data []byte, mode fs.FileMode) (err error) {
	sc, err := h.sftp(ctx)
	if err != nil {
		return err
	}
	f, err := sc.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL)
	if err != nil {
		if _, serr := sc.Lstat(name); serr == nil {
			return &fs.PathError{Op: "create", Path: name, Err: fs.ErrExist}
		}
		return pathErr("create", name, err)
	}
	defer func() {
		if err != nil {
			f.Close()
			_ = sc.Remove(name)
		}
	}()
	const chunk = 1 << 20
	if mode.Perm()&0o044 != 0 && len(data) <= chunk {
		// Not a secret: the mode and the data go out together, one round trip.
		errs := make(chan error, 1)
		go func() { errs <- f.Chmod(mode.Perm()) }()
		_, werr := f.WriteAt(data, 0)
		if cerr := <-errs; cerr != nil {
			return pathErr("chmod", name, cerr)
		}
		if werr != nil {
			return h.writeErr("write", name, werr)
		}
		return h.syncClose(sc, f, name)
	}
	// Before any data, so that a secret is never readable by others.
	if err := f.Chmod(mode.Perm()); err != nil {
		return pathErr("chmod", name, err)
	}
	for off := 0; off < len(data); off += chunk {
		if err := ctx.Err(); err != nil {
			return err
		}
		if _, err := f.Write(data[off:min(off+chunk, len(data))]); err != nil {
			return h.writeErr("write", name, err)
		}
	}
	return h.syncClose(sc, f, name)
}

// syncClose syncs a written file to disk where the server can, and closes it. Once
// the server has answered the fsync, the data is on disk: nothing waits for the
// close, which the server answers while the next request is under way (a round
// trip saved per file). Without fsync, the close's answer is what says the data
// was written, and it is waited for.
func (h *host) syncClose(sc *sftp.Client, f *sftp.File, name string) error {
	if _, ok := sc.HasExtension("fsync@openssh.com"); ok {
		if err := f.Sync(); err != nil {
			return h.writeErr("fsync", name, err)
		}
		go f.Close()
		return nil
	}
	return h.writeErr("close", name, f.Close())
}

func (h *host) ReadFile(ctx context.Context, name string) ([]byte, error) {
	sc, err := h.sftp(ctx)
	if err != nil {
		return nil, err
	}
	f, err := sc.Open(name)
	if err != nil {
		return nil, pathErr("open", name, err)
	}
	// Nothing waits for the close of a file that was only read: the server answers
	// it while the next request is under way.
	defer func() { go f.Close() }()
	data, err := readAll(f)
	return data, pathErr("read", name, err)
}

// readChunk is the first read of a file: more than one SFTP packet (32 KiB), so that
// pkg/sftp asks for its parts at once and takes a short part as the end of the file
// (a regular file's reads are short only there). A file smaller than a packet is read
// in one round trip, where io.ReadAll's growing buffer takes three or more.
const readChunk = 64 << 10

// readAll reads f to its end.
func readAll(f io.Reader) ([]byte, error) {
	buf := make([]byte, 0, readChunk)
	for {
		n, err := f.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		switch {
		case errors.Is(err, io.EOF):
			return buf, nil
		case err != nil:
			return buf, err
		case len(buf) < cap(buf):
			continue
		}
		buf = append(buf, make([]byte, cap(buf))...)[:len(buf)]
	}
}

func (h *host) Rename(ctx context.Context, from, to string) error {
	sc, err := h.sftp(ctx)
	if err != nil {
		return err
	}
	if _, ok := sc.HasExtension("posix-rename@openssh.com"); !ok {
		return fmt.Errorf("rename %s: the host's SFTP server lacks posix-rename@openssh.com, which an atomic switch needs", from)
	}
	return pathErr("rename", from, sc.PosixRename(from, to))
}

func (h *host) Symlink(ctx context.Context, target, name string) error {
	sc, err := h.sftp(ctx)
	if err != nil {
		return err
	}
	return pathErr("symlink", name, sc.Symlink(target, name))
}

func (h *host) Readlink(ctx context.Context, name string) (string, error) {
	sc, err := h.sftp(ctx)
	if err != nil {
		return "", err
	}
	target, err := sc.ReadLink(name)
	return target, pathErr("readlink", name, err)
}

func (h *host) ReadDir(ctx context.Context, dir string) ([]fs.FileInfo, error) {
	sc, err := h.sftp(ctx)
	if err != nil {
		return nil, err
	}
	infos, err := sc.ReadDirContext(ctx, dir)
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
func removeAll(ctx context.Context, sc *sftp.Client, p string) error {
	var err, serr error
	var fi fs.FileInfo
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		fi, serr = sc.Lstat(p)
	}()
	err = sc.RemoveDirectory(p)
	wg.Wait()
	if err == nil {
		return nil
	}
	// OpenSSH answers "no such file" to an rmdir of a file (ENOTDIR): the lstat says
	// what is there.
	switch {
	case errors.Is(serr, fs.ErrNotExist):
		return nil
	case serr != nil:
		return serr
	case !fi.IsDir():
		if err := sc.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		return nil
	}
	entries, err := sc.ReadDirContext(ctx, p)
	if err != nil {
		return err
	}
	errs := make([]error, len(entries))
	for i, e := range entries {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := path.Join(p, e.Name())
			if !e.IsDir() {
				// A file or a symlink, as the listing says: one removal, no look first.
				if err := sc.Remove(name); err == nil || errors.Is(err, fs.ErrNotExist) {
					return
				}
			}
			errs[i] = removeAll(ctx, sc, name)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if err := sc.RemoveDirectory(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

func (h *host) Append(ctx context.Context, name string, data []byte) error {
	sc, err := h.sftp(ctx)
	if err != nil {
		return err
	}
	f, err := sc.OpenFile(name, os.O_WRONLY|os.O_APPEND|os.O_CREATE)
	if err != nil {
		return pathErr("open", name, err)
	}
	// One write: the server appends it whole (O_APPEND), whoever else writes. Once
	// it is answered the line is in the file: nothing waits for the close.
	if _, err := f.Write(data); err != nil {
		f.Close()
		return h.writeErr("append", name, err)
	}
	go f.Close()
	return nil
}
