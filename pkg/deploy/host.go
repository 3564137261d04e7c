package deploy

import (
	"context"
	"io/fs"

	"github.com/compose-spec/compose-go/v2/types"

	"github.com/shipdeploy/ship/pkg/engine"
)

// Files is what a command does to a host's file system. Paths are absolute, in the
// host's (slash-separated) form. Errors for a path that is not there match
// fs.ErrNotExist; Mkdir of a path that is there matches fs.ErrExist.
type Files interface {
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

// Engine is the Docker engine on a host, as the deploy uses it: pkg/engine's core
// for compose projects, and a few image operations.
type Engine interface {
	// Ping checks that the engine answers and returns its version.
	Ping(ctx context.Context) (string, error)
	// Check refuses what Up could not run of services (nil: all), changing nothing.
	Check(ctx context.Context, p *types.Project, services []string) error
	// HasImage reports whether the engine has the image ref.
	HasImage(ctx context.Context, ref string) (bool, error)
	// Pull pulls ref, with the registry's credentials.
	Pull(ctx context.Context, ref string) error
	// RemoveImage removes the tag ref; an image in use or not there is no error.
	RemoveImage(ctx context.Context, ref string) error

	Up(ctx context.Context, p *types.Project, o engine.UpOptions) error
	Down(ctx context.Context, project string, o engine.DownOptions) error
	Containers(ctx context.Context, project string) ([]engine.Container, error)
	Wait(ctx context.Context, project, service string) (int, error)
	Logs(ctx context.Context, project string, o engine.LogOptions, fn func(engine.LogLine)) error
}

// Host is one connection to a host: its files and its engine. Close ends it.
type Host interface {
	Files
	Engine
	Close() error
}

// Dialer connects to dest, a host as written in ship.yaml. ctx is the connection's
// lifetime: when it ends, the connection closes.
type Dialer func(ctx context.Context, dest string) (Host, error)
