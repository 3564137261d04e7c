package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/shipdeploy/ship/pkg/proxy"
)

// notifier talks to systemd's notification socket (sd_notify(3)): MAINPID= and READY=1
// once shipd serves (a successor takes over so), WATCHDOG=1 while it is alive,
// STOPPING=1 when it shuts down. Without NOTIFY_SOCKET (not run by systemd, or Type=simple) it
// does nothing.
type notifier struct {
	addr     *net.UnixAddr
	watchdog time.Duration // 0: no watchdog
	// socket and usec are NOTIFY_SOCKET and WATCHDOG_USEC as found, for a successor.
	socket, usec string
}

// newNotifier reads NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID and unsets them, so
// that no child sees them. The watchdog applies when WATCHDOG_PID is this process or
// absent (a successor started by a handover inherits WATCHDOG_USEC alone).
func newNotifier() *notifier {
	n := &notifier{socket: os.Getenv("NOTIFY_SOCKET"), usec: os.Getenv("WATCHDOG_USEC")}
	if sock := n.socket; sock != "" {
		if strings.HasPrefix(sock, "@") {
			sock = "\x00" + sock[1:] // an abstract socket
		}
		n.addr = &net.UnixAddr{Name: sock, Net: "unixgram"}
	}
	if usec, err := strconv.ParseInt(n.usec, 10, 64); err == nil && usec > 0 {
		pid := os.Getenv("WATCHDOG_PID")
		if pid == "" || pid == strconv.Itoa(os.Getpid()) {
			n.watchdog = time.Duration(usec) * time.Microsecond
		}
	}
	os.Unsetenv("NOTIFY_SOCKET")
	os.Unsetenv("WATCHDOG_USEC")
	os.Unsetenv("WATCHDOG_PID")
	return n
}

// childEnv is the environment a successor needs to talk to systemd once it is the
// main process: the socket, and the watchdog without WATCHDOG_PID (the successor's pid
// is not known before it starts).
func (n *notifier) childEnv() []string {
	var env []string
	if n.socket != "" {
		env = append(env, "NOTIFY_SOCKET="+n.socket)
	}
	if n.usec != "" && n.watchdog > 0 {
		env = append(env, "WATCHDOG_USEC="+n.usec)
	}
	return env
}

// enabled reports whether there is a socket to notify.
func (n *notifier) enabled() bool { return n != nil && n.addr != nil }

// notify sends state lines such as "READY=1" in one datagram.
func (n *notifier) notify(state ...string) error {
	if !n.enabled() {
		return nil
	}
	conn, err := net.DialUnix("unixgram", nil, n.addr)
	if err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(strings.Join(state, "\n"))); err != nil {
		return fmt.Errorf("sd_notify %s: %w", strings.Join(state, ","), err)
	}
	return nil
}

// runWatchdog sends WATCHDOG=1 at half the watchdog interval while alive() holds,
// until ctx ends. A failed send is reported through warn once per kind.
func (n *notifier) runWatchdog(ctx context.Context, alive func() error, warn func(msg string, err error)) {
	if !n.enabled() || n.watchdog <= 0 {
		return
	}
	t := time.NewTicker(n.watchdog / 2)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := alive(); err != nil {
			// Not petting the watchdog lets systemd restart a shipd that is stuck.
			warn("watchdog: not alive", err)
			continue
		}
		if err := n.notify("WATCHDOG=1"); err != nil {
			warn("watchdog", err)
		}
	}
}

// fdName is the name a listening socket is stored under in systemd's file descriptor
// store: its address, with the colons (which separate LISTEN_FDNAMES) made dashes.
func fdName(ln net.Listener) string {
	return "listen-" + strings.ReplaceAll(ln.Addr().String(), ":", "-")
}

// storeListener hands a duplicate of ln's socket to systemd's file descriptor store
// (FDSTORE=1; the unit needs FileDescriptorStoreMax=). systemd keeps it open while
// shipd restarts, after a crash too, and passes it back (LISTEN_FDS): connections wait
// in its backlog meanwhile instead of being refused.
func (n *notifier) storeListener(ln net.Listener) error {
	if !n.enabled() {
		return nil
	}
	f, err := proxy.ListenerFile(ln)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := n.sendFile("FDSTORE=1\nFDNAME="+fdName(ln), f); err != nil {
		return fmt.Errorf("sd_notify FDSTORE %s: %w", ln.Addr(), err)
	}
	return nil
}

// sendFile sends state with f's descriptor attached (SCM_RIGHTS).
func (n *notifier) sendFile(state string, f *os.File) error {
	raw, err := f.SyscallConn()
	if err != nil {
		return err
	}
	// From an unconnected socket: the net package sends no ancillary data on a
	// connected datagram socket.
	sock, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_DGRAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	defer syscall.Close(sock)
	to := &syscall.SockaddrUnix{Name: n.socket}
	var sendErr error
	// Control, not Fd: Fd would switch a shared socket to blocking mode.
	err = raw.Control(func(fd uintptr) {
		sendErr = syscall.Sendmsg(sock, []byte(state), syscall.UnixRights(int(fd)), to, 0)
	})
	if err == nil {
		err = sendErr
	}
	return err
}

// barrier returns once systemd has taken in every notification sent before it
// (BARRIER=1, as sd_notify_barrier(3)): it sends the write end of a pipe, which
// systemd closes once it gets there. A process that tells systemd MAINPID= and then
// has the old main process exit needs it: without it systemd may see the exit first.
func (n *notifier) barrier(timeout time.Duration) error {
	if !n.enabled() {
		return nil
	}
	r, w, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("sd_notify barrier: %w", err)
	}
	defer r.Close()
	err = n.sendFile("BARRIER=1", w)
	w.Close()
	if err != nil {
		return fmt.Errorf("sd_notify barrier: %w", err)
	}
	if err := r.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		return fmt.Errorf("sd_notify barrier: %w", err)
	}
	if _, err := r.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		return fmt.Errorf("sd_notify barrier: systemd did not close it: %v", err)
	}
	return nil
}

// forgetListener removes a socket from systemd's store, so that the port is closed
// once shipd no longer serves it.
func (n *notifier) forgetListener(name string) error {
	return n.notify("FDSTOREREMOVE=1", "FDNAME="+name)
}
