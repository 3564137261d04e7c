// Package sshhost is the real deploy.Host: one SSH connection to a host (pkg/sshx)
// that carries SFTP for the files (release.FS), the engine's socket
// (direct-streamlocal) for the Docker API (deploy.Engine, through pkg/engine) and
// shipd's socket for its API.
package sshhost

import (
	"context"
	"fmt"
	"net"
	"sync"

	"github.com/compose-spec/compose-go/v2/types"
	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/client"

	"github.com/shipdeploy/ship/pkg/agentapi"
	"github.com/shipdeploy/ship/pkg/deploy"
	"github.com/shipdeploy/ship/pkg/engine"
	"github.com/shipdeploy/ship/pkg/sshx"
)

// Options say how SSH reaches hosts.
type Options struct {
	SSH sshx.Options
	// DockerSocket is the engine's socket on the hosts; default /var/run/docker.sock.
	DockerSocket string
	// RegistryAuth returns the X-Registry-Auth value for pulling ref ("" anonymous).
	RegistryAuth func(ref string) (string, error)
	// AgentSocket is shipd's API socket on the hosts; default agentapi.DefaultSocket.
	AgentSocket string
}

// Dialer is the real deploy.Dialer: one SSH connection per host that carries SFTP for
// the files, the engine's socket (direct-streamlocal) for the Docker API and shipd's
// socket for its API.
func Dialer(o Options) deploy.Dialer {
	if o.AgentSocket == "" {
		o.AgentSocket = agentapi.DefaultSocket
	}
	return func(ctx context.Context, dest string) (deploy.Host, error) {
		c, err := sshx.Dial(ctx, dest, o.SSH)
		if err != nil {
			return nil, err
		}
		h := &host{c: c, socket: o.DockerSocket, auth: o.RegistryAuth}
		h.shipd = agentapi.NewClient(func(ctx context.Context) (net.Conn, error) {
			return c.DialUnix(ctx, o.AgentSocket)
		})
		return h, nil
	}
}

var _ deploy.Host = (*host)(nil)

// host is a deploy.Host over one sshx.Client. The SFTP session and the Docker client are
// started on first use: lock and history need no engine.
type host struct {
	c      *sshx.Client
	socket string
	auth   func(string) (string, error)

	shipd *agentapi.Client

	mu  sync.Mutex
	api *client.Client
	eng *engine.Engine
}

func (h *host) Close() error {
	h.shipd.Close()
	return h.c.Close()
}

// Shipd is shipd's API on the host, through this connection.
func (h *host) Shipd() deploy.Shipd { return h.shipd }

// Run runs a command on the host (agent install: uname and systemctl only).
func (h *host) Run(ctx context.Context, cmd string) ([]byte, []byte, error) {
	return h.c.Run(ctx, cmd)
}

// LoginUser is the user the connection logged in as.
func (h *host) LoginUser() string { return h.c.SSH().User() }

// docker is the host's engine, connected on first use.
func (h *host) docker(ctx context.Context) (*engine.Engine, *client.Client, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.eng != nil {
		return h.eng, h.api, nil
	}
	api, err := h.c.Docker(ctx, h.socket)
	if err != nil {
		return nil, nil, err
	}
	// sshx's Docker pinged the engine and negotiated the version: Check and Up do not
	// ping again.
	e := engine.Negotiated(api)
	e.RegistryAuth = h.auth
	// HTTP health checks reach the containers from the host, over this connection.
	e.Dial = h.c.SSH().DialContext
	h.api, h.eng = api, e
	return e, api, nil
}

func (h *host) Ping(ctx context.Context) (string, error) {
	_, api, err := h.docker(ctx)
	if err != nil {
		return "", err
	}
	v, err := api.ServerVersion(ctx, client.ServerVersionOptions{})
	if err != nil {
		return "", fmt.Errorf("ask the Docker engine its version: %w", err)
	}
	return fmt.Sprintf("%s (API %s)", v.Version, api.ClientVersion()), nil
}

func (h *host) Check(ctx context.Context, p *types.Project, services []string) error {
	e, _, err := h.docker(ctx)
	if err != nil {
		return err
	}
	return e.Check(ctx, p, services)
}

// PullImages pulls the images of services (nil: all) by their pull_policy through
// the host's engine, with the registry's credentials sent with each pull.
func (h *host) PullImages(ctx context.Context, p *types.Project, services []string, progress func(engine.Event)) error {
	e, _, err := h.docker(ctx)
	if err != nil {
		return err
	}
	return e.PullImages(ctx, p, services, progress)
}

// RunJob runs a job service to its end (engine.RunJob).
func (h *host) RunJob(ctx context.Context, p *types.Project, service string, o engine.JobOptions) error {
	e, _, err := h.docker(ctx)
	if err != nil {
		return err
	}
	return e.RunJob(ctx, p, service, o)
}

func (h *host) RemoveImage(ctx context.Context, ref string) error {
	_, api, err := h.docker(ctx)
	if err != nil {
		return err
	}
	_, err = api.ImageRemove(ctx, ref, client.ImageRemoveOptions{PruneChildren: true})
	if err != nil && !cerrdefs.IsNotFound(err) && !cerrdefs.IsConflict(err) {
		return err
	}
	return nil
}

func (h *host) Up(ctx context.Context, p *types.Project, o engine.UpOptions) error {
	e, _, err := h.docker(ctx)
	if err != nil {
		return err
	}
	return e.Up(ctx, p, o)
}

func (h *host) Down(ctx context.Context, project string, o engine.DownOptions) error {
	e, _, err := h.docker(ctx)
	if err != nil {
		return err
	}
	return e.Down(ctx, project, o)
}

func (h *host) Containers(ctx context.Context, project string) ([]engine.Container, error) {
	e, _, err := h.docker(ctx)
	if err != nil {
		return nil, err
	}
	return e.Containers(ctx, project)
}

func (h *host) Logs(ctx context.Context, project string, o engine.LogOptions, fn func(engine.LogLine)) error {
	e, _, err := h.docker(ctx)
	if err != nil {
		return err
	}
	return e.Logs(ctx, project, o, fn)
}
