package sshhost

import (
	"context"
	"fmt"
	"io/fs"
	"path"

	"github.com/pkg/sftp"

	"github.com/shipdeploy/ship/pkg/sshx"
)

// Fewer round trips for the release store, the lock and the deploy's first look:
// requests sent together, in order (sshx.InOrder), where they would wait for one
// answer after another, and one lstat where a listing takes four requests.

// Lstat describes name (a symlink itself, not its target): one request.
func (h *host) Lstat(ctx context.Context, name string) (fs.FileInfo, error) {
	sc, err := h.sftp(ctx)
	if err != nil {
		return nil, err
	}
	fi, err := sc.Lstat(name)
	return fi, pathErr("lstat", name, err)
}

// MoveAway renames the folder from to to (posix-rename@openssh.com), then removes
// the files named inside it and it: the requests go out together, in order, and are
// answered in about one round trip. It returns the rename's error; what the removal
// leaves is for the caller's next sweep.
func (h *host) MoveAway(ctx context.Context, from, to string, files ...string) error {
	sc, err := h.sftp(ctx)
	if err != nil {
		return err
	}
	if _, ok := sc.HasExtension("posix-rename@openssh.com"); !ok {
		return fmt.Errorf("rename %s: the host's SFTP server lacks posix-rename@openssh.com, which an atomic switch needs", from)
	}
	steps := []sshx.Step{{Op: sshx.OpRename, Path: from, Do: func() error { return sc.PosixRename(from, to) }}}
	errs, err := h.c.InOrder(append(steps, removeSteps(sc, to, files)...)...)
	if err != nil {
		return err
	}
	return pathErr("rename", from, errs[0])
}

// RemoveIn removes the files named in dir, then dir: the requests go out together,
// in order, answered in about one round trip. It returns dir's removal's error: a
// file not named is still there, and the caller removes the rest (RemoveAll).
func (h *host) RemoveIn(ctx context.Context, dir string, files ...string) error {
	sc, err := h.sftp(ctx)
	if err != nil {
		return err
	}
	errs, err := h.c.InOrder(removeSteps(sc, dir, files)...)
	if err != nil {
		return err
	}
	return pathErr("rmdir", dir, errs[len(errs)-1])
}

// removeSteps remove the files named in dir, then dir.
func removeSteps(sc *sftp.Client, dir string, files []string) []sshx.Step {
	var steps []sshx.Step
	for _, f := range files {
		p := path.Join(dir, f)
		steps = append(steps, sshx.Step{Op: sshx.OpRemove, Path: p, Do: func() error { return sc.Remove(p) }})
	}
	return append(steps, sshx.Step{Op: sshx.OpRmdir, Path: dir, Do: func() error { return sc.RemoveDirectory(dir) }})
}
