package sshx

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"

	"github.com/shipdeploy/ship/pkg/sftpc"
)

// SFTP is the connection's SFTP client (pkg/sftpc), started on first use. It
// belongs to the Client, which closes it: do not Close it yourself. Its start
// holds none of the Client's other locks: the engine's socket and commands go on
// meanwhile.
func (c *Client) SFTP() (*sftpc.Client, error) {
	c.sftpMu.Lock()
	defer c.sftpMu.Unlock()
	c.mu.Lock()
	sc, closed := c.sftp, c.closed
	c.mu.Unlock()
	if closed {
		return nil, fmt.Errorf("ssh %s: sftp: %w", c.host, errClosed)
	}
	if sc != nil {
		return sc, nil
	}
	sc, err := c.startSFTP()
	if err != nil {
		return nil, c.opErr("start sftp", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		sc.Close()
		return nil, fmt.Errorf("ssh %s: sftp: %w", c.host, errClosed)
	}
	c.sftp = sc
	return sc, nil
}

// startSFTP starts the SFTP subsystem on a session of its own: two round trips
// (the session's opening, the subsystem's start); INIT goes out with the first
// request (sftpc.New), whose answer comes after VERSION's.
//
// INIT is sent once the subsystem's start is answered, not with it. sshd handles a
// session's messages in order, so INIT sent right after the request would reach
// sftp-server; but the SSH library writes a request that wants an answer and waits
// for it in one call, and a request that wants none leaves a missing subsystem
// unseen (sshd drops the data of a session that runs nothing, and the wait for
// VERSION would never end).
func (c *Client) startSFTP() (*sftpc.Client, error) {
	s, err := c.ssh.NewSession()
	if err != nil {
		return nil, err
	}
	s.Stderr = io.Discard
	in, err := s.StdinPipe()
	if err != nil {
		s.Close()
		return nil, err
	}
	out, err := s.StdoutPipe()
	if err != nil {
		s.Close()
		return nil, err
	}
	if err := s.RequestSubsystem("sftp"); err != nil {
		s.Close()
		return nil, err
	}
	sc, err := sftpc.New(out, sessionCloser{in, s})
	if err != nil {
		s.Close()
		return nil, err
	}
	return sc, nil
}

// sessionCloser is the SFTP session's input; closing it closes the session
// (sftp-server's input with it), not the input alone: the SSH library's end of
// input must not race a write under way.
type sessionCloser struct {
	io.Writer
	s interface{ Close() error }
}

func (w sessionCloser) Close() error { return w.s.Close() }

// WriteFileAtomic writes data to the remote file with the given permission bits,
// so that file holds either what it held before or all of data, never a part:
// data goes to a temporary file in the same folder, which is given mode before
// any data, written, synced to disk where the server can (fsync@openssh.com),
// and renamed over file (posix-rename@openssh.com; without it, file is removed
// first, and is briefly absent), all in two round trips (sftpc.WriteStaged). On
// failure the temporary file is removed when the connection still allows it.
// Cancelling ctx stops the write.
func (c *Client) WriteFileAtomic(ctx context.Context, file string, data []byte, mode os.FileMode) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("ssh %s: write %s: %w", c.host, file, err)
	}
	sc, err := c.SFTP()
	if err != nil {
		return err
	}
	if err := c.writeFileAtomic(ctx, sc, file, data, mode); err != nil {
		return c.opErr("write "+file, err)
	}
	return nil
}

func (c *Client) writeFileAtomic(ctx context.Context, sc *sftpc.Client, file string, data []byte, mode os.FileMode) error {
	tmp, err := tempName(file)
	if err != nil {
		return err
	}
	err = sc.WriteStaged(ctx, tmp, file, data, mode)
	if err == nil || sc.HasExtension("posix-rename@openssh.com") {
		return err
	}
	var pe *fs.PathError
	if !errors.As(err, &pe) || pe.Op != "rename" {
		return err
	}
	// Plain SFTP rename refuses to replace a file: the write is done again once the
	// file is out of the way.
	if rmErr := sc.Remove(ctx, file); rmErr != nil && !errors.Is(rmErr, fs.ErrNotExist) {
		return err
	}
	return sc.WriteStaged(ctx, tmp, file, data, mode)
}

// tempName is a hidden, unique name beside p.
func tempName(p string) (string, error) {
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return path.Join(path.Dir(p), "."+path.Base(p)+".ship-"+hex.EncodeToString(b)+".tmp"), nil
}
