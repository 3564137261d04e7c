//go:build unix

package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// Listening sockets can come from outside the process, so that a restart of shipd never
// refuses a connection: the socket stays open, and connections wait in its backlog while
// no process accepts them.
//
// Two ways use the same protocol, the one of systemd's sd_listen_fds(3): the sockets are
// file descriptors 3, 4, ... and the environment holds LISTEN_FDS (their number),
// LISTEN_PID (the pid they are meant for) and optionally LISTEN_FDNAMES.
//
//   - socket activation: systemd opens the sockets of a shipd.socket unit and passes them.
//   - handover: a running shipd starts its successor with StartSuccessor, which passes
//     its listeners as extra files and waits until the successor calls Ready; the old
//     shipd then shuts its routes down. The parent cannot know the child's pid before it
//     starts, so the handover leaves LISTEN_PID out; Inherit accepts the sockets when
//     LISTEN_PID is absent or is its own pid.

const listenFdsStart = 3

// Inherited holds the listening sockets passed to this process; Listen hands them out.
type Inherited struct {
	mu  sync.Mutex
	lns []net.Listener // nil once taken
}

// Inherit takes the listening sockets passed to this process (see above) and unsets
// LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES so that children do not see them. With none
// passed it returns an empty set. Call it once, early.
func Inherit() (*Inherited, error) {
	in := &Inherited{}
	fdsEnv, ok := os.LookupEnv("LISTEN_FDS")
	pidEnv, hasPid := os.LookupEnv("LISTEN_PID")
	os.Unsetenv("LISTEN_FDS")
	os.Unsetenv("LISTEN_PID")
	os.Unsetenv("LISTEN_FDNAMES")
	if !ok {
		return in, nil
	}
	if hasPid {
		pid, err := strconv.Atoi(pidEnv)
		if err != nil || pid != os.Getpid() {
			return in, nil // meant for another process
		}
	}
	n, err := strconv.Atoi(fdsEnv)
	if err != nil || n < 0 {
		return nil, fmt.Errorf("inherit listeners: LISTEN_FDS=%q is not a count", fdsEnv)
	}
	var errs []error
	for fd := listenFdsStart; fd < listenFdsStart+n; fd++ {
		f := os.NewFile(uintptr(fd), "LISTEN_FD_"+strconv.Itoa(fd))
		ln, err := net.FileListener(f) // a close-on-exec duplicate
		f.Close()
		if err != nil {
			errs = append(errs, fmt.Errorf("fd %d: %w", fd, err))
			continue
		}
		in.lns = append(in.lns, ln)
	}
	if err := errors.Join(errs...); err != nil {
		in.Close()
		return nil, fmt.Errorf("inherit listeners: %w", err)
	}
	return in, nil
}

// Len returns the number of inherited listeners not yet taken.
func (in *Inherited) Len() int {
	in.mu.Lock()
	defer in.mu.Unlock()
	n := 0
	for _, ln := range in.lns {
		if ln != nil {
			n++
		}
	}
	return n
}

// Listen returns the inherited TCP listener bound to addr (host:port, ":80" matches a
// socket on all addresses) and marks it taken, or opens a new one when none matches.
// The bool says whether it was inherited.
func (in *Inherited) Listen(addr string) (net.Listener, bool, error) {
	want, err := net.ResolveTCPAddr("tcp", addr)
	if err != nil {
		return nil, false, fmt.Errorf("listen %s: %w", addr, err)
	}
	in.mu.Lock()
	for i, ln := range in.lns {
		if ln == nil {
			continue
		}
		if got, ok := ln.Addr().(*net.TCPAddr); ok && sameTCPAddr(want, got) {
			in.lns[i] = nil
			in.mu.Unlock()
			return ln, true, nil
		}
	}
	in.mu.Unlock()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, false, err
	}
	return ln, false, nil
}

func sameTCPAddr(want, got *net.TCPAddr) bool {
	if want.Port != got.Port {
		return false
	}
	if len(want.IP) == 0 || want.IP.IsUnspecified() {
		return len(got.IP) == 0 || got.IP.IsUnspecified()
	}
	return want.IP.Equal(got.IP)
}

// Close closes the inherited listeners that were not taken (a route that is no longer
// configured).
func (in *Inherited) Close() error {
	in.mu.Lock()
	defer in.mu.Unlock()
	var errs []error
	for i, ln := range in.lns {
		if ln != nil {
			errs = append(errs, ln.Close())
			in.lns[i] = nil
		}
	}
	return errors.Join(errs...)
}

// ListenerFile returns a duplicate of ln's socket, to pass to a new process as one of
// exec.Cmd's ExtraFiles (StartSuccessor does) or to serve it from a second listener in
// this process (net.FileListener). Closing ln afterwards leaves the socket open there.
//
// Unlike (*net.TCPListener).File, the file stays in non-blocking mode when os/exec takes
// its descriptor: the mode belongs to the socket, which ln shares, and a blocking accept
// in this process could then hold up its shutdown. For a *net.UnixListener, call
// SetUnlinkOnClose(false) first, or closing it removes the socket's path.
func ListenerFile(ln net.Listener) (*os.File, error) {
	sc, ok := ln.(syscall.Conn)
	if !ok {
		return nil, fmt.Errorf("listener file: %T has no socket", ln)
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("listener file: %w", err)
	}
	var dup int
	var dupErr error
	err = raw.Control(func(fd uintptr) {
		// Hold ForkLock so that no process started meanwhile inherits the duplicate
		// before it is marked close-on-exec.
		syscall.ForkLock.RLock()
		defer syscall.ForkLock.RUnlock()
		dup, dupErr = syscall.Dup(int(fd))
		if dupErr == nil {
			syscall.CloseOnExec(dup)
		}
	})
	if err == nil {
		err = dupErr
	}
	if err != nil {
		return nil, fmt.Errorf("listener file: dup %s: %w", ln.Addr(), err)
	}
	return os.NewFile(uintptr(dup), "listener "+ln.Addr().String()), nil
}

// handoverEnv returns the environment entries that tell a child started with n listener
// files as its first ExtraFiles (descriptors 3 .. 3+n-1) to take them with Inherit. Add
// them to the child's environment, without any LISTEN_* of this process's own.
func handoverEnv(n int) []string {
	return []string{"LISTEN_FDS=" + strconv.Itoa(n)}
}

// readyFdEnv names the descriptor on which a successor says that it serves.
const readyFdEnv = "SHIP_HANDOVER_READY_FD"

// StartSuccessor starts cmd, the process taking over, with lns as its inherited listeners
// (descriptors 3 .. 3+len(lns)-1, LISTEN_FDS; cmd.ExtraFiles must be empty) and a pipe
// on which it calls Ready once it serves them. It returns when it has, with the running
// process in cmd; or with an error when the process exits first or ctx is done, in which
// case the process is killed. The caller then shuts its own routes down: connections
// that arrive meanwhile wait in the shared sockets' backlogs, so none is refused.
//
// Under systemd, the successor must become the service's main process before this one
// exits (sd_notify "MAINPID=<pid>" with NotifyAccess=all), or systemd stops the service.
func StartSuccessor(ctx context.Context, cmd *exec.Cmd, lns []net.Listener) error {
	if len(cmd.ExtraFiles) > 0 {
		return errors.New("start successor: cmd.ExtraFiles is not empty")
	}
	var files []*os.File
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	for _, ln := range lns {
		f, err := ListenerFile(ln)
		if err != nil {
			return fmt.Errorf("start successor: %w", err)
		}
		files = append(files, f)
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("start successor: %w", err)
	}
	defer pr.Close()
	files = append(files, pw)
	if cmd.Env == nil {
		cmd.Env = os.Environ()
	}
	cmd.Env = withoutListenEnv(cmd.Env)
	cmd.Env = append(cmd.Env, handoverEnv(len(lns))...)
	cmd.Env = append(cmd.Env, readyFdEnv+"="+strconv.Itoa(listenFdsStart+len(lns)))
	cmd.ExtraFiles = files
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start successor: %w", err)
	}
	pw.Close() // the child holds the write end now: EOF means it exited
	files = files[:len(files)-1]

	ready := make(chan error, 1)
	go func() {
		var b [1]byte
		_, err := pr.Read(b[:])
		ready <- err
	}()
	select {
	case err := <-ready:
		if err == nil {
			return nil
		}
		err = fmt.Errorf("start successor: it exited before it was ready (%w)", err)
		cmd.Process.Kill()
		cmd.Wait()
		return err
	case <-ctx.Done():
		cmd.Process.Kill()
		cmd.Wait()
		return fmt.Errorf("start successor: %w", ctx.Err())
	}
}

// Ready tells the process that started this one with StartSuccessor that this one now
// serves; it is a no-op in a process started otherwise. Call it once, after Serve has
// started on every inherited listener.
func Ready() error {
	v, ok := os.LookupEnv(readyFdEnv)
	if !ok {
		return nil
	}
	os.Unsetenv(readyFdEnv)
	fd, err := strconv.Atoi(v)
	if err != nil || fd < listenFdsStart {
		return fmt.Errorf("ready: %s=%q", readyFdEnv, v)
	}
	f := os.NewFile(uintptr(fd), "handover-ready")
	defer f.Close()
	if _, err := f.Write([]byte{1}); err != nil {
		return fmt.Errorf("ready: %w", err)
	}
	return nil
}

// withoutListenEnv returns env without LISTEN_FDS, LISTEN_PID and LISTEN_FDNAMES.
func withoutListenEnv(env []string) []string {
	out := env[:0:0]
	for _, kv := range env {
		if strings.HasPrefix(kv, "LISTEN_FDS=") || strings.HasPrefix(kv, "LISTEN_PID=") || strings.HasPrefix(kv, "LISTEN_FDNAMES=") {
			continue
		}
		out = append(out, kv)
	}
	return out
}
