package sshhost

import (
	"context"
	"errors"
	"io/fs"
	"path"

	"github.com/shipdeploy/ship/pkg/release"
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

// Sequence is release.Sequence over SFTP (sftpc.Client.Sequence): first's requests
// go out together with the opens of then's appends, and then's requests (an
// append's write and close among them) in one flight once proceed says yes: two
// round trips for all, carried out by the server in the order sent. ok is false,
// with nothing sent, when the server lacks posix-rename@openssh.com (a rename that
// replaces) or the session cannot be started.
func (h *host) Sequence(ctx context.Context, first []release.Step, proceed func(errs []error) bool, then []release.Step) (firstErrs, thenErrs []error, ok bool) {
	sc, err := h.sftp(ctx)
	if err != nil || !sc.HasExtension("posix-rename@openssh.com") {
		return nil, nil, false
	}
	ops := make([]sftpc.Op, len(first))
	for i, s := range first {
		if ops[i], ok = stepOp(s); !ok {
			return nil, nil, false
		}
	}
	steps := make([]any, len(then))
	for i, s := range then {
		if s.Op == "append" {
			steps[i] = sftpc.Appending{Name: s.Path, Data: s.Data}
			continue
		}
		if steps[i], ok = stepOp(s); !ok {
			return nil, nil, false
		}
	}
	firstErrs = make([]error, len(first))
	thenErrs = make([]error, len(then))
	fres, tres, err := sc.Sequence(ctx, ops, func(res []sftpc.Result) bool {
		for i, r := range res {
			firstErrs[i] = r.Err
		}
		return proceed(firstErrs)
	}, steps)
	for i := range thenErrs {
		switch {
		case err != nil && (tres == nil || tres[i].Err == nil):
			thenErrs[i] = pathErr(then[i].Op, then[i].Path, err)
		case errors.Is(tres[i].Err, sftpc.ErrNotSent):
			thenErrs[i] = release.ErrNotSent
		case tres[i].Err != nil && then[i].Op == "append":
			thenErrs[i] = h.writeErr("append", then[i].Path, tres[i].Err)
		default:
			thenErrs[i] = tres[i].Err
		}
	}
	if fres == nil {
		for i := range firstErrs {
			firstErrs[i] = pathErr(first[i].Op, first[i].Path, err)
		}
	}
	return firstErrs, thenErrs, true
}

// stepOp is a release.Step other than an append as an sftpc.Op.
func stepOp(s release.Step) (sftpc.Op, bool) {
	switch s.Op {
	case "symlink":
		return sftpc.OpSymlink(s.To, s.Path), true
	case "rename":
		return sftpc.OpRename(s.Path, s.To), true
	case "remove":
		return sftpc.OpRemove(s.Path), true
	case "rmdir":
		return sftpc.OpRmdir(s.Path), true
	}
	return sftpc.Op{}, false
}
