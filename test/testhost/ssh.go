package testhost

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/client"
	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// SSHAddr is the host's sshd ("IP:22").
func (h *Host) SSHAddr() string { return net.JoinHostPort(h.IP, "22") }

// Dial logs in to the host as user, checking its host key against KnownHostsFile.
func (h *Host) Dial(user string) (*ssh.Client, error) {
	cb, err := knownhosts.New(h.c.KnownHostsFile)
	if err != nil {
		return nil, err
	}
	return ssh.Dial("tcp", h.SSHAddr(), &ssh.ClientConfig{
		User:            user,
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(h.c.signer)},
		HostKeyCallback: cb,
		Timeout:         time.Minute, // bounds a hang only: a busy machine answers slowly
	})
}

// Run runs a shell command on the host as root and returns its stdout and stderr,
// combined; a command that exits non-zero is an error.
func (h *Host) Run(cmd string) (string, error) { return h.RunAs("root", cmd) }

// RunAs is Run as another user.
func (h *Host) RunAs(user, cmd string) (string, error) {
	c, err := h.Dial(user)
	if err != nil {
		return "", fmt.Errorf("ssh %s@%s: %w", user, h.Name, err)
	}
	defer c.Close()
	s, err := c.NewSession()
	if err != nil {
		return "", err
	}
	defer s.Close()
	// One writer for both streams, which must not be a bare bytes.Buffer: the session
	// copies each stream with io.Copy, which would call the buffer's ReadFrom from two
	// goroutines at once, and a read of nothing on stderr can cut stdout.
	var out lockedBuffer
	s.Stdout, s.Stderr = &out, &out
	if err := s.Run(cmd); err != nil {
		return out.String(), fmt.Errorf("%s on %s: %w: %s", cmd, h.Name, err, strings.TrimSpace(out.String()))
	}
	return out.String(), nil
}

// MustRun is Run that fails the test on an error.
func (h *Host) MustRun(t testing.TB, cmd string) string {
	t.Helper()
	out, err := h.Run(cmd)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Put writes a file on the host as root, over SFTP.
func (h *Host) Put(t testing.TB, path string, data []byte, mode os.FileMode) {
	t.Helper()
	c, err := h.Dial("root")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sc, err := sftp.NewClient(c)
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	f, err := sc.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC)
	if err != nil {
		t.Fatalf("%s: create %s: %v", h.Name, path, err)
	}
	if _, err := f.Write(data); err != nil {
		t.Fatalf("%s: write %s: %v", h.Name, path, err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := sc.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

// Process is a command running on a host over an SSH session of its own.
type Process struct {
	h       *Host
	pidFile string
	client  *ssh.Client
	stdout  lockedBuffer
	stderr  lockedBuffer
	done    chan error
}

// Start runs cmd (a command line that a shell execs) on the host as root until it
// exits or Interrupt is called. A process left running when the test ends is killed.
func (h *Host) Start(t testing.TB, cmd string) *Process {
	t.Helper()
	c, err := h.Dial("root")
	if err != nil {
		t.Fatal(err)
	}
	s, err := c.NewSession()
	if err != nil {
		c.Close()
		t.Fatal(err)
	}
	p := &Process{h: h, client: c, done: make(chan error, 1), pidFile: "/run/testhost-" + randomHex(4) + ".pid"}
	s.Stdout, s.Stderr = &p.stdout, &p.stderr
	// The shell's pid is the command's after exec: Interrupt signals it by that pid
	// (sshd's support for signal requests varies).
	if err := s.Start("echo $$ >" + p.pidFile + " && exec " + cmd); err != nil {
		c.Close()
		t.Fatalf("start %s on %s: %v", cmd, h.Name, err)
	}
	go func() { p.done <- s.Wait() }()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_, _ = h.Run("kill -KILL $(cat " + p.pidFile + ")")
		}
		p.client.Close()
	})
	return p
}

// Interrupt sends SIGINT to the process and waits for it to exit; it returns its
// stdout, and an error (with its stderr) when it failed.
func (p *Process) Interrupt() (string, error) {
	if _, err := p.h.Run("kill -INT $(cat " + p.pidFile + ") && rm -f " + p.pidFile); err != nil {
		return "", err
	}
	return p.Wait()
}

// Wait waits for the process to exit.
func (p *Process) Wait() (string, error) {
	err := <-p.done
	p.client.Close()
	if err != nil {
		return p.stdout.String(), fmt.Errorf("%w: %s", err, strings.TrimSpace(p.stderr.String()))
	}
	return p.stdout.String(), nil
}

func containerRestartOptions() client.ContainerRestartOptions {
	timeout := 60
	return client.ContainerRestartOptions{Timeout: &timeout}
}

// lockedBuffer collects a command's output; it has no ReadFrom, so that io.Copy
// writes to it in turns.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
