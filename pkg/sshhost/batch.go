package sshhost

import (
	"context"
	"io/fs"
	"path"

	"github.com/shipdeploy/ship/pkg/sftpc"
)

// Fewer round trips for the release store, the lock and the deploy's first look:
// requests sent together, in order (sftpc.Batch), where they would wait for one
// answer after another, and one lstat where a listing takes two round trips.

// Lstat describes name (a symlink itself, not its target): one request.
func (h *host) Lstat(ctx context.Context, name string) (fs.FileInfo, error) {
	sc, err := h.sftp(ctx)
	if err != nil {
		return nil, err
	}
	fi, err := sc.Lstat(ctx, name)
	return fi, pathErr("lstat", name, err)
}

// MoveAway renames the folder from to to (posix-rename@openssh.com), then removes
// the files named inside it and it: the requests go out together, in order, and are
// answered in one round trip. It returns the rename's error; what the removal
// leaves is for the caller's next sweep.
func (h *host) MoveAway(ctx context.Context, from, to string, files ...string) error {
	sc, err := h.sftp(ctx)
	if err != nil {
		return err
	}
	if !sc.HasExtension("posix-rename@openssh.com") {
		return errNoPosixRename(from)
	}
	res, err := sc.Batch(ctx, append([]sftpc.Op{sftpc.OpRename(from, to)}, removeOps(to, files)...)...)
	if err != nil {
		return pathErr("rename", from, err)
	}
	return pathErr("rename", from, res[0].Err)
}

// RemoveIn removes the files named in dir, then dir: the requests go out together,
// in order, answered in one round trip. It returns dir's removal's error: a file
// not named is still there, and the caller removes the rest (RemoveAll).
func (h *host) RemoveIn(ctx context.Context, dir string, files ...string) error {
	sc, err := h.sftp(ctx)
	if err != nil {
		return err
	}
	res, err := sc.Batch(ctx, removeOps(dir, files)...)
	if err != nil {
		return pathErr("rmdir", dir, err)
	}
	return pathErr("rmdir", dir, res[len(res)-1].Err)
}

// removeOps remove the files named in dir, then dir.
func removeOps(dir string, files []string) []sftpc.Op {
	var ops []sftpc.Op
	for _, f := range files {
		ops = append(ops, sftpc.OpRemove(path.Join(dir, f)))
	}
	return append(ops, sftpc.OpRmdir(dir))
}
