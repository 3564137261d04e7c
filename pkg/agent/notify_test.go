package agent

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// listenNotify is a stand-in for systemd's notification socket.
func listenNotify(t *testing.T) (string, *net.UnixConn) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return path, conn
}

func read(t *testing.T, conn *net.UnixConn) (string, []int) {
	t.Helper()
	buf := make([]byte, 4096)
	oob := make([]byte, syscall.CmsgSpace(4))
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, oobn, _, _, err := conn.ReadMsgUnix(buf, oob)
	if err != nil {
		t.Fatal(err)
	}
	var fds []int
	if oobn > 0 {
		cmsgs, _ := syscall.ParseSocketControlMessage(oob[:oobn])
		for _, c := range cmsgs {
			r, _ := syscall.ParseUnixRights(&c)
			fds = append(fds, r...)
		}
	}
	return string(buf[:n]), fds
}

func TestNotifier(t *testing.T) {
	path, conn := listenNotify(t)
	t.Setenv("NOTIFY_SOCKET", path)
	t.Setenv("WATCHDOG_USEC", "200000")
	t.Setenv("WATCHDOG_PID", "1") // another process's watchdog
	n := newNotifier()
	if os.Getenv("NOTIFY_SOCKET") != "" || os.Getenv("WATCHDOG_USEC") != "" {
		t.Error("the notify variables are left for children")
	}
	if n.watchdog != 0 {
		t.Errorf("watchdog %s for another pid", n.watchdog)
	}
	if err := n.notify("READY=1", "STATUS=ok"); err != nil {
		t.Fatal(err)
	}
	if msg, _ := read(t, conn); msg != "READY=1\nSTATUS=ok" {
		t.Errorf("got %q", msg)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if err := n.storeListener(ln); err != nil {
		t.Fatal(err)
	}
	msg, fds := read(t, conn)
	want := "FDSTORE=1\nFDNAME=listen-127.0.0.1-" + strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	if msg != want || len(fds) != 1 || strings.Contains(fdName(ln), ":") {
		t.Errorf("got %q with %d fds, want %q", msg, len(fds), want)
	}
	// The stored fd is the listening socket itself: a connection to it can be accepted there.
	f := os.NewFile(uintptr(fds[0]), "stored")
	stored, err := net.FileListener(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	stored.Close()
	if err := n.forgetListener(fdName(ln)); err != nil {
		t.Fatal(err)
	}
	if msg, _ := read(t, conn); msg != "FDSTOREREMOVE=1\nFDNAME="+fdName(ln) {
		t.Errorf("got %q", msg)
	}
	// The listener still accepts in this process: its socket stayed non-blocking.
	go func() {
		if c, err := net.Dial("tcp", ln.Addr().String()); err == nil {
			c.Close()
		}
	}()
	ln.(*net.TCPListener).SetDeadline(time.Now().Add(5 * time.Second))
	if c, err := ln.Accept(); err != nil {
		t.Errorf("accept after storing: %v", err)
	} else {
		c.Close()
	}
}

func TestWatchdog(t *testing.T) {
	path, conn := listenNotify(t)
	t.Setenv("NOTIFY_SOCKET", path)
	t.Setenv("WATCHDOG_USEC", "100000")
	t.Setenv("WATCHDOG_PID", "")
	n := newNotifier()
	if n.watchdog != 100*time.Millisecond {
		t.Fatalf("watchdog %s", n.watchdog)
	}
	if env := strings.Join(n.childEnv(), " "); env != "NOTIFY_SOCKET="+path+" WATCHDOG_USEC=100000" {
		t.Errorf("child env %q", env)
	}
	done := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		defer close(done)
		n.runWatchdog(ctx, func() error { return nil }, func(string, error) {})
	}()
	for range 2 {
		if msg, _ := read(t, conn); msg != "WATCHDOG=1" {
			t.Errorf("got %q", msg)
		}
	}
	cancel()
	<-done
}

func TestNotifierWithoutSystemd(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	n := newNotifier()
	if n.enabled() || n.notify("READY=1") != nil || n.forgetListener("x") != nil {
		t.Error("a notifier without a socket should do nothing")
	}
}

func TestNotifierBarrier(t *testing.T) {
	path, conn := listenNotify(t)
	t.Setenv("NOTIFY_SOCKET", path)
	n := newNotifier()
	done := make(chan error, 1)
	go func() { done <- n.barrier(time.Minute) }()
	msg, fds := read(t, conn)
	if msg != "BARRIER=1" || len(fds) != 1 {
		t.Fatalf("got %q with %d fds, want BARRIER=1 with one", msg, len(fds))
	}
	select {
	case err := <-done:
		t.Fatalf("the barrier returned (%v) before systemd closed its fd", err)
	default:
	}
	syscall.Close(fds[0])
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	// systemd never gets there: an error once the time is up.
	go func() { done <- n.barrier(50 * time.Millisecond) }()
	_, fds = read(t, conn)
	defer syscall.Close(fds[0])
	if err := <-done; err == nil || !strings.Contains(err.Error(), "barrier") {
		t.Errorf("barrier without an answer: %v", err)
	}
}
