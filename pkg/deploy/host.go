package deploy

import (
	"context"

	"github.com/compose-spec/compose-go/v2/types"

	"github.com/shipdeploy/ship/pkg/engine"
	"github.com/shipdeploy/ship/pkg/release"
)

// Engine is the Docker engine on a host, as the commands use it: pkg/engine's core
// for compose projects (pull and jobs included), and removing an image.
type Engine interface {
	// Ping checks that the engine answers and returns its version.
	Ping(ctx context.Context) (string, error)
	// Check refuses what Up could not run of services (nil: all), changing nothing.
	Check(ctx context.Context, p *types.Project, services []string) error
	// RemoveImage removes the tag ref; an image in use or not there is no error.
	RemoveImage(ctx context.Context, ref string) error

	JobEngine
	Up(ctx context.Context, p *types.Project, o engine.UpOptions) error
	Down(ctx context.Context, project string, o engine.DownOptions) error
	Containers(ctx context.Context, project string) ([]engine.Container, error)
	Logs(ctx context.Context, project string, o engine.LogOptions, fn func(engine.LogLine)) error
}

// Host is one connection to a host: its files (release.FS) and its engine. Close
// ends it. pkg/sshhost's is the real one.
type Host interface {
	release.FS
	Engine
	Close() error
}

// Dialer connects to dest, a host as written in ship.yaml. ctx is the connection's
// lifetime: when it ends, the connection closes.
type Dialer func(ctx context.Context, dest string) (Host, error)
