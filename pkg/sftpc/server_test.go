package sftpc_test

import (
	"io"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"testing"

	"github.com/shipdeploy/ship/pkg/sftpc"
)

// The tests talk to OpenSSH's real sftp-server, started as a child over pipes.

// serverPaths are where distributions put OpenSSH's sftp-server.
var serverPaths = []string{"/usr/lib/openssh/sftp-server", "/usr/libexec/openssh/sftp-server", "/usr/libexec/sftp-server", "/usr/lib/ssh/sftp-server"}

// findServer is sftp-server's path; without one the test fails in CI and is
// skipped, saying so, elsewhere.
func findServer(t *testing.T) string {
	t.Helper()
	for _, p := range serverPaths {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	const msg = "OpenSSH's sftp-server is not installed (apt-get install openssh-sftp-server)"
	if ci, _ := strconv.ParseBool(os.Getenv("CI")); ci {
		t.Fatal(msg + ": required in CI")
	}
	t.Skip("SKIPPED: " + msg)
	return ""
}

// flights counts the flights of requests: writes to the server that follow a read
// of its answers (or are the first).
type flights struct {
	mu       sync.Mutex
	n        int
	answered bool
}

func (f *flights) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.n
}

type countWriter struct {
	io.WriteCloser
	f *flights
}

func (w countWriter) Write(p []byte) (int, error) {
	w.f.mu.Lock()
	if w.f.answered || w.f.n == 0 {
		w.f.n++
	}
	w.f.answered = false
	w.f.mu.Unlock()
	return w.WriteCloser.Write(p)
}

type countReader struct {
	io.Reader
	f *flights
}

func (r countReader) Read(p []byte) (int, error) {
	n, err := r.Reader.Read(p)
	if n > 0 {
		r.f.mu.Lock()
		r.f.answered = true
		r.f.mu.Unlock()
	}
	return n, err
}

// serve starts sftp-server (as the user uid when it is not -1) and a client of it;
// both end with the test.
func serve(t *testing.T, uid int) (*sftpc.Client, *flights) {
	t.Helper()
	cmd := exec.Command(findServer(t))
	if uid >= 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}}
	}
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	f := &flights{}
	c, err := sftpc.New(countReader{out, f}, countWriter{in, f})
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Close()
		if err := c.Wait(); err != sftpc.ErrClosed {
			t.Errorf("the session ended with %v, want ErrClosed", err)
		}
		if err := cmd.Wait(); err != nil {
			t.Errorf("sftp-server: %v", err)
		}
	})
	return c, f
}

var syscallUmask = syscall.Umask
