package deploy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"sync"

	"github.com/compose-spec/compose-go/v2/types"
	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/client"
	"github.com/moby/moby/client/pkg/jsonmessage"
	"github.com/pkg/sftp"

	"github.com/shipdeploy/ship/pkg/agentapi"
	"github.com/shipdeploy/ship/pkg/engine"
	"github.com/shipdeploy/ship/pkg/sshx"
)

// SSHOptions say how SSH reaches hosts.
type SSHOptions struct {
	SSH sshx.Options
	// DockerSocket is the engine's socket on the hosts; default /var/run/docker.sock.
	DockerSocket string
	// RegistryAuth returns the X-Registry-Auth value for pulling ref ("" anonymous).
	RegistryAuth func(ref string) (string, error)
	// AgentSocket is shipd's API socket on the hosts; default agentapi.DefaultSocket.
	AgentSocket string
}

// SSH is the real Dialer: one SSH connection per host that carries SFTP for the
// files, the engine's socket (direct-streamlocal) for the Docker API and shipd's socket
// for its API.
func SSH(o SSHOptions) Dialer {
	if o.AgentSocket == "" {
		o.AgentSocket = agentapi.DefaultSocket
	}
	return func(ctx context.Context, dest string) (Host, error) {
		c, err := sshx.Dial(ctx, dest, o.SSH)
		if err != nil {
			return nil, err
		}
		h := &sshHost{c: c, socket: o.DockerSocket, auth: o.RegistryAuth}
		h.shipd = agentapi.NewClient(func(ctx context.Context) (net.Conn, error) {
			return c.DialUnix(ctx, o.AgentSocket)
		})
		return h, nil
	}
}

// sshHost is a Host over one sshx.Client. The SFTP session and the Docker client are
// started on first use: lock and history need no engine.
type sshHost struct {
	c      *sshx.Client
	socket string
	auth   func(string) (string, error)

	shipd *agentapi.Client

	mu  sync.Mutex
	api *client.Client
	eng *engine.Engine
}

func (h *sshHost) Close() error {
	h.shipd.Close()
	return h.c.Close()
}

// Shipd is shipd's API on the host, through this connection.
func (h *sshHost) Shipd() Shipd { return h.shipd }

// Run runs a command on the host (agent install: uname and systemctl only).
func (h *sshHost) Run(ctx context.Context, cmd string) ([]byte, []byte, error) {
	return h.c.Run(ctx, cmd)
}

// LoginUser is the user the connection logged in as.
func (h *sshHost) LoginUser() string { return h.c.SSH().User() }

func (h *sshHost) sftp(ctx context.Context) (*sftp.Client, error) {
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

func (h *sshHost) MkdirAll(ctx context.Context, dir string) error {
	sc, err := h.sftp(ctx)
	if err != nil {
		return err
	}
	return pathErr("mkdir", dir, sc.MkdirAll(dir))
}

// Mkdir makes dir. OpenSSH's SFTP server answers a plain failure for a folder that is
// there (protocol version 3 has no "exists" status), so a failure is looked into.
func (h *sshHost) Mkdir(ctx context.Context, dir string) error {
	sc, err := h.sftp(ctx)
	if err != nil {
		return err
	}
	if err := sc.Mkdir(dir); err != nil {
		if _, serr := sc.Lstat(dir); serr == nil {
			return &fs.PathError{Op: "mkdir", Path: dir, Err: fs.ErrExist}
		}
		return pathErr("mkdir", dir, err)
	}
	return nil
}

func (h *sshHost) WriteFile(ctx context.Context, name string, data []byte, mode fs.FileMode) (err error) {
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
	// Before any data, so that a secret is never readable by others.
	if err := f.Chmod(mode.Perm()); err != nil {
		return pathErr("chmod", name, err)
	}
	const chunk = 1 << 20
	for off := 0; off < len(data); off += chunk {
		if err := ctx.Err(); err != nil {
			return err
		}
		if _, err := f.Write(data[off:min(off+chunk, len(data))]); err != nil {
			return pathErr("write", name, err)
		}
	}
	if _, ok := sc.HasExtension("fsync@openssh.com"); ok {
		if err := f.Sync(); err != nil {
			return pathErr("fsync", name, err)
		}
	}
	return pathErr("close", name, f.Close())
}

func (h *sshHost) ReadFile(ctx context.Context, name string) ([]byte, error) {
	sc, err := h.sftp(ctx)
	if err != nil {
		return nil, err
	}
	f, err := sc.Open(name)
	if err != nil {
		return nil, pathErr("open", name, err)
	}
	defer f.Close()
	data, err := io.ReadAll(f)
	return data, pathErr("read", name, err)
}

func (h *sshHost) Rename(ctx context.Context, from, to string) error {
	sc, err := h.sftp(ctx)
	if err != nil {
		return err
	}
	if _, ok := sc.HasExtension("posix-rename@openssh.com"); !ok {
		return fmt.Errorf("rename %s: the host's SFTP server lacks posix-rename@openssh.com, which an atomic switch needs", from)
	}
	return pathErr("rename", from, sc.PosixRename(from, to))
}

func (h *sshHost) Symlink(ctx context.Context, target, name string) error {
	sc, err := h.sftp(ctx)
	if err != nil {
		return err
	}
	return pathErr("symlink", name, sc.Symlink(target, name))
}

func (h *sshHost) Readlink(ctx context.Context, name string) (string, error) {
	sc, err := h.sftp(ctx)
	if err != nil {
		return "", err
	}
	target, err := sc.ReadLink(name)
	return target, pathErr("readlink", name, err)
}

func (h *sshHost) ReadDir(ctx context.Context, dir string) ([]fs.FileInfo, error) {
	sc, err := h.sftp(ctx)
	if err != nil {
		return nil, err
	}
	infos, err := sc.ReadDirContext(ctx, dir)
	return infos, pathErr("readdir", dir, err)
}

func (h *sshHost) RemoveAll(ctx context.Context, p string) error {
	sc, err := h.sftp(ctx)
	if err != nil {
		return err
	}
	if err := sc.RemoveAll(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return pathErr("remove", p, err)
	}
	return nil
}

func (h *sshHost) Append(ctx context.Context, name string, data []byte) error {
	sc, err := h.sftp(ctx)
	if err != nil {
		return err
	}
	f, err := sc.OpenFile(name, os.O_WRONLY|os.O_APPEND|os.O_CREATE)
	if err != nil {
		return pathErr("open", name, err)
	}
	// One write: the server appends it whole (O_APPEND), whoever else writes.
	if _, err := f.Write(data); err != nil {
		f.Close()
		return pathErr("append", name, err)
	}
	return pathErr("close", name, f.Close())
}

// docker is the host's engine, connected on first use.
func (h *sshHost) docker(ctx context.Context) (*engine.Engine, *client.Client, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.eng != nil {
		return h.eng, h.api, nil
	}
	api, err := h.c.Docker(ctx, h.socket)
	if err != nil {
		return nil, nil, err
	}
	e := engine.New(api)
	e.RegistryAuth = h.auth
	h.api, h.eng = api, e
	return e, api, nil
}

func (h *sshHost) Ping(ctx context.Context) (string, error) {
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

func (h *sshHost) Check(ctx context.Context, p *types.Project, services []string) error {
	e, _, err := h.docker(ctx)
	if err != nil {
		return err
	}
	return e.Check(ctx, p, services)
}

func (h *sshHost) HasImage(ctx context.Context, ref string) (bool, error) {
	_, api, err := h.docker(ctx)
	if err != nil {
		return false, err
	}
	if _, err := api.ImageInspect(ctx, ref); err != nil {
		if cerrdefs.IsNotFound(err) {
			return false, nil
		}
		return false, fmt.Errorf("inspect image %s: %w", ref, err)
	}
	return true, nil
}

// Pull pulls ref through the host's engine, with the registry's credentials sent
// with the request, and reads the engine's progress to its end.
func (h *sshHost) Pull(ctx context.Context, ref string) error {
	_, api, err := h.docker(ctx)
	if err != nil {
		return err
	}
	var opts client.ImagePullOptions
	if h.auth != nil {
		if opts.RegistryAuth, err = h.auth(ref); err != nil {
			return fmt.Errorf("registry credentials: %w", err)
		}
	}
	rc, err := api.ImagePull(ctx, ref, opts)
	if err != nil {
		return err
	}
	defer rc.Close()
	return jsonmessage.DisplayJSONMessagesStream(rc, io.Discard, 0, false, nil)
}

func (h *sshHost) RemoveImage(ctx context.Context, ref string) error {
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

func (h *sshHost) Up(ctx context.Context, p *types.Project, o engine.UpOptions) error {
	e, _, err := h.docker(ctx)
	if err != nil {
		return err
	}
	return e.Up(ctx, p, o)
}

func (h *sshHost) Down(ctx context.Context, project string, o engine.DownOptions) error {
	e, _, err := h.docker(ctx)
	if err != nil {
		return err
	}
	return e.Down(ctx, project, o)
}

func (h *sshHost) Containers(ctx context.Context, project string) ([]engine.Container, error) {
	e, _, err := h.docker(ctx)
	if err != nil {
		return nil, err
	}
	return e.Containers(ctx, project)
}

func (h *sshHost) Wait(ctx context.Context, project, service string) (int, error) {
	e, _, err := h.docker(ctx)
	if err != nil {
		return 0, err
	}
	return e.Wait(ctx, project, service)
}

func (h *sshHost) Logs(ctx context.Context, project string, o engine.LogOptions, fn func(engine.LogLine)) error {
	e, _, err := h.docker(ctx)
	if err != nil {
		return err
	}
	return e.Logs(ctx, project, o, fn)
}
