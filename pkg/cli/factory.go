package cli

import (
	"os"
	"path/filepath"

	"github.com/moby/moby/client"

	"github.com/shipdeploy/ship/pkg/deploy"
	"github.com/shipdeploy/ship/pkg/engine"
	"github.com/shipdeploy/ship/pkg/image"
	"github.com/shipdeploy/ship/pkg/sshhost"
)

// Factory hands every command its dependencies, as gh's cmdutil.Factory does: the IO
// streams, and how to reach the outside world (the local Docker engine, the hosts,
// the registry, shipctl's own executable). A command's run function gets them from
// here, never directly, so that a test can give it fakes.
type Factory struct {
	IO *IOStreams
	// Engine connects to the local Docker engine (build, test, push).
	Engine func() (*client.Client, error)
	// SSH is how an environment's hosts are reached.
	SSH func(sshhost.Options) deploy.Dialer
	// Registry tells a deploy whether the registry holds an image, before it touches
	// a host, and ship whether the registry answers, before it builds; kc has the
	// credentials.
	Registry func(kc *image.Keychain) Registry
	// Executable is shipctl's own executable, symlinks resolved (agent install looks
	// for shipd beside it).
	Executable func() (string, error)
}

// Registry is what the commands ask a registry: whether it answers with the
// credentials, whether it holds an image.
type Registry interface {
	deploy.Registry
	deploy.RegistryCheck
}

// NewFactory returns the real dependencies on io's streams.
func NewFactory(io *IOStreams) *Factory {
	return &Factory{
		IO:       io,
		Engine:   engine.Local,
		SSH:      sshhost.Dialer,
		Registry: func(kc *image.Keychain) Registry { return &image.Registries{Keychain: kc} },
		Executable: func() (string, error) {
			exe, err := os.Executable()
			if err != nil {
				return "", err
			}
			if real, err := filepath.EvalSymlinks(exe); err == nil {
				exe = real
			}
			return exe, nil
		},
	}
}
