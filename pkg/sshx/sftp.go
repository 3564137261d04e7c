package sshx

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path"

	"github.com/pkg/sftp"
)

// writeChunk is how much WriteFileAtomic writes between checks of its context.
const writeChunk = 1 << 20

// SFTP is the connection's SFTP client, started on first use. It belongs to the
// Client, which closes it: do not Close it yourself.
func (c *Client) SFTP() (*sftp.Client, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, fmt.Errorf("ssh %s: sftp: %w", c.host, errClosed)
	}
	if c.sftp != nil {
		return c.sftp, nil
	}
	sc, w, err := c.startSFTP()
	if err != nil {
		return nil, c.opErr("start sftp", err)
	}
	c.sftp, c.wire = sc, w
	return sc, nil
}

// startSFTP starts the SFTP subsystem on a session of its own (as sftp.NewClient
// does), its stream to the server watched (wire).
func (c *Client) startSFTP() (*sftp.Client, *wire, error) {
	s, err := c.ssh.NewSession()
	if err != nil {
		return nil, nil, err
	}
	s.Stderr = io.Discard
	in, err := s.StdinPipe()
	if err != nil {
		s.Close()
		return nil, nil, err
	}
	out, err := s.StdoutPipe()
	if err != nil {
		s.Close()
		return nil, nil, err
	}
	if err := s.RequestSubsystem("sftp"); err != nil {
		s.Close()
		return nil, nil, err
	}
	w := newWire(in)
	sc, err := sftp.NewClientPipe(out, w)
	if err != nil {
		s.Close()
		return nil, nil, err
	}
	return sc, w, nil
}

// WriteFileAtomic writes data to the remote file with the given permission bits,
// so that file holds either what it held before or all of data, never a part:
// data goes to a temporary file in the same folder, which is given mode before
// any data, written, synced to disk where the server can (fsync@openssh.com),
// and renamed over file (posix-rename@openssh.com; without it, file is removed
// first, and is briefly absent). On failure the temporary file is removed when
// the connection still allows it. Cancelling ctx stops the write.
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

func (c *Client) writeFileAtomic(ctx context.Context, sc *sftp.Client, file string, data []byte, mode os.FileMode) error {
	tmp, err := tempName(file)
	if err != nil {
		return err
	}
	f, err := sc.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL)
	if err != nil {
		return fmt.Errorf("create %s: %w", tmp, err)
	}
	done := false
	defer func() {
		if !done {
			f.Close()
			if rmErr := sc.Remove(tmp); rmErr != nil {
				c.log.Debug("ssh: could not remove a temporary file", "file", tmp, "err", rmErr)
			}
		}
	}()
	// Before any data, so that a secret is never readable by others.
	if err := f.Chmod(mode.Perm()); err != nil {
		return fmt.Errorf("chmod %s: %w", tmp, err)
	}
	for off := 0; off < len(data); off += writeChunk {
		if err := ctx.Err(); err != nil {
			return err
		}
		if _, err := f.Write(data[off:min(off+writeChunk, len(data))]); err != nil {
			return err
		}
	}
	if _, ok := sc.HasExtension("fsync@openssh.com"); ok {
		if err := f.Sync(); err != nil {
			return fmt.Errorf("fsync %s: %w", tmp, err)
		}
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if _, ok := sc.HasExtension("posix-rename@openssh.com"); ok {
		err = sc.PosixRename(tmp, file)
	} else if err = sc.Rename(tmp, file); err != nil {
		// Plain SFTP rename refuses to replace a file.
		if rmErr := sc.Remove(file); rmErr == nil || errors.Is(rmErr, os.ErrNotExist) {
			err = sc.Rename(tmp, file)
		}
	}
	if err != nil {
		return fmt.Errorf("rename %s to %s: %w", path.Base(tmp), path.Base(file), err)
	}
	done = true
	return nil
}

// tempName is a hidden, unique name beside p.
func tempName(p string) (string, error) {
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return path.Join(path.Dir(p), "."+path.Base(p)+".ship-"+hex.EncodeToString(b)+".tmp"), nil
}
