// Package sshhost is the real deploy.Host: one SSH connection to a host (pkg/sshx)
// that carries SFTP for the files (release.FS), the engine's socket
// (direct-streamlocal) for the Docker API (deploy.Engine, through pkg/engine) and
// shipd's socket for its API.
package sshhost

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path"
	"sync"

	"github.com/compose-spec/compose-go/v2/types"
	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/client"
	"github.com/pkg/sftp"

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
// there (protocol version 3 has no "exists" status), so a failure is looked into.
func (h *host) Mkdir(ctx context.Context, dir string) error {
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
