package release

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
)

// FS is what the Store does to a host's file system: SFTP from shipctl (pkg/sshhost),
// the local file system from shipd (OS). Paths are absolute, in the host's
// (slash-separated) form. Errors for a path that is not there match fs.ErrNotExist;
// Mkdir of a path that is there matches fs.ErrExist. Its methods may be called from
// several goroutines at once: the Store issues requests that do not depend on each
// other together, so that over SFTP they cost one round trip rather than one each.
type FS interface {
	// MkdirAll makes dir and its missing parents (mode 0755).
	MkdirAll(ctx context.Context, dir string) error
	// Mkdir makes dir, failing with fs.ErrExist when it is there: the lock.
	Mkdir(ctx context.Context, dir string) error
	// WriteFile creates name, which must not exist yet, with mode set before any data
	// is written; the data is synced to disk where the host can. Used only on temporary
	// names that Rename then moves into place.
	WriteFile(ctx context.Context, name string, data []byte, mode fs.FileMode) error
	// ReadFile reads the whole file.
	ReadFile(ctx context.Context, name string) ([]byte, error)
	// Rename moves from to to in one step, replacing a file or symlink at to
	// (posix-rename).
	Rename(ctx context.Context, from, to string) error
	// Symlink makes name a symbolic link holding target, as written.
	Symlink(ctx context.Context, target, name string) error
	// Readlink is what the symbolic link name holds.
	Readlink(ctx context.Context, name string) (string, error)
	// ReadDir lists dir's entries (without following symlinks).
	ReadDir(ctx context.Context, dir string) ([]fs.FileInfo, error)
	// RemoveAll removes path and what it holds; a path that is not there is no error.
	RemoveAll(ctx context.Context, path string) error
	// Append adds data at the end of name (O_APPEND), creating it with mode 0644.
	Append(ctx context.Context, name string, data []byte) error
}

// StageFS is the part of an FS that WriteStaged uses.
type StageFS interface {
	WriteFile(ctx context.Context, name string, data []byte, mode fs.FileMode) error
	Rename(ctx context.Context, from, to string) error
	RemoveAll(ctx context.Context, path string) error
}

// StagedWriter is an FS that does WriteStaged's write and rename itself, in fewer
// round trips than the two one after the other (pkg/sshhost: the rename goes out
// with the write, over SFTP). It keeps WriteStaged's rules: tmp is written with mode
// set before any data, synced, renamed over name; on any failure tmp is removed.
type StagedWriter interface {
	WriteStaged(ctx context.Context, tmp, name string, data []byte, mode fs.FileMode) error
}

// WriteStaged writes data to the temporary file tmp and renames it over name, so that
// a reader sees the old file or the new one, never a part: the one staging rule of
// every write that replaces a file on a host (the Store's, and agent install's).
// tmp must be on name's file system and not exist; a failed write removes it. An FS
// that is a StagedWriter does it itself.
func WriteStaged(ctx context.Context, f StageFS, tmp, name string, data []byte, mode fs.FileMode) error {
	if sw, ok := f.(StagedWriter); ok {
		return sw.WriteStaged(ctx, tmp, name, data, mode)
	}
	err := f.WriteFile(ctx, tmp, data, mode)
	if err == nil {
		err = f.Rename(ctx, tmp, name)
	}
	if err != nil {
		_ = f.RemoveAll(context.WithoutCancel(ctx), tmp)
	}
	return err
}

// TempSuffix is a random suffix that makes a temporary file's name its writer's own.
func TempSuffix() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// OS is the local file system as an FS: shipd's, on the host itself.
type OS struct{}

var _ FS = OS{}

// MkdirAll makes dir and its missing parents (mode 0755).
func (OS) MkdirAll(ctx context.Context, dir string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return os.MkdirAll(dir, 0o755)
}

// Mkdir makes dir (mode 0755); fs.ErrExist when it is there.
func (OS) Mkdir(ctx context.Context, dir string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return os.Mkdir(dir, 0o755)
}

// WriteFile creates name (O_EXCL) with no permissions, sets mode before any data (the
// umask plays no part, and a secret is never readable by others), writes and fsyncs.
// A file that fails half-way is removed.
func (OS) WriteFile(ctx context.Context, name string, data []byte, mode fs.FileMode) (err error) {
	if err := ctx.Err(); err != nil {
		return err
	}
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(name)
		}
	}()
	if err := f.Chmod(mode.Perm()); err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	return f.Close()
}

// ReadFile reads the whole file.
func (OS) ReadFile(ctx context.Context, name string) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return os.ReadFile(name)
}

// Rename is rename(2): one step, replacing what is at to.
func (OS) Rename(ctx context.Context, from, to string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return os.Rename(from, to)
}

// Symlink makes name a symbolic link holding target.
func (OS) Symlink(ctx context.Context, target, name string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return os.Symlink(target, name)
}

// Readlink is what the symbolic link name holds.
func (OS) Readlink(ctx context.Context, name string) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	return os.Readlink(name)
}

// ReadDir lists dir's entries, as lstat sees them.
func (OS) ReadDir(ctx context.Context, dir string) ([]fs.FileInfo, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	out := make([]fs.FileInfo, 0, len(entries))
	for _, e := range entries {
		info, err := e.Info()
		if errors.Is(err, fs.ErrNotExist) {
			continue // removed since the listing
		}
		if err != nil {
			return nil, err
		}
		out = append(out, info)
	}
	return out, nil
}

// RemoveAll removes path and what it holds.
func (OS) RemoveAll(ctx context.Context, path string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return os.RemoveAll(path)
}

// Append writes data at the end of name in one write (O_APPEND: concurrent writers
// never interleave within it), creating it with mode 0644.
func (OS) Append(ctx context.Context, name string, data []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("append to %s: %w", name, err)
	}
	return f.Close()
}
