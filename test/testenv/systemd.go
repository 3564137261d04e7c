package testenv

import (
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// Systemd is the notification socket systemd gives a Type=notify service (NOTIFY_SOCKET):
// it records what the service tells it and keeps the sockets the service stores
// (FDSTORE=1, FileDescriptorStoreMax=), by name, to hand to the next start.
type Systemd struct {
	// Path is the socket, for NOTIFY_SOCKET.
	Path string
	conn *net.UnixConn

	mu     sync.Mutex
	states []string
	fds    map[string]*os.File
}

// FakeSystemd listens on path as systemd's notification socket until the test ends.
func FakeSystemd(t testing.TB, path string) *Systemd {
	t.Helper()
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	f := &Systemd{Path: path, conn: conn, fds: map[string]*os.File{}}
	done := make(chan struct{})
	t.Cleanup(func() {
		conn.Close()
		<-done
		f.Flush()
	})
	go func() {
		defer close(done)
		buf := make([]byte, 4096)
		oob := make([]byte, syscall.CmsgSpace(16*4))
		for {
			n, oobn, _, _, err := conn.ReadMsgUnix(buf, oob)
			if err != nil {
				return
			}
			f.receive(string(buf[:n]), oob[:oobn])
		}
	}()
	return f
}

func (f *Systemd) receive(msg string, oob []byte) {
	var fds []int
	if len(oob) > 0 {
		cmsgs, _ := syscall.ParseSocketControlMessage(oob)
		for _, c := range cmsgs {
			rights, _ := syscall.ParseUnixRights(&c)
			fds = append(fds, rights...)
		}
	}
	lines := strings.Split(msg, "\n")
	vars := map[string]string{}
	for _, l := range lines {
		k, v, _ := strings.Cut(l, "=")
		vars[k] = v
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.states = append(f.states, lines...)
	name := vars["FDNAME"]
	switch {
	case vars["FDSTORE"] == "1":
		for _, fd := range fds {
			if f.fds[name] != nil {
				// The same socket stored again: systemd keeps one.
				syscall.Close(fd)
				continue
			}
			f.fds[name] = os.NewFile(uintptr(fd), name)
		}
		return
	case vars["FDSTOREREMOVE"] == "1":
		if old := f.fds[name]; old != nil {
			old.Close()
			delete(f.fds, name)
		}
	}
	for _, fd := range fds {
		syscall.Close(fd)
	}
}

// Has reports whether the service sent the state line (e.g. "READY=1").
func (f *Systemd) Has(line string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, s := range f.states {
		if s == line {
			return true
		}
	}
	return false
}

// Count is how often the service sent the state line (e.g. "WATCHDOG=1").
func (f *Systemd) Count(line string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, s := range f.states {
		if s == line {
			n++
		}
	}
	return n
}

// Files returns the stored sockets, to pass as fds 3.., and their names.
func (f *Systemd) Files() ([]*os.File, []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var files []*os.File
	var names []string
	for name, file := range f.fds {
		files = append(files, file)
		names = append(names, name)
	}
	return files, names
}

// Flush closes the stored sockets, as systemd does when the service stops.
func (f *Systemd) Flush() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for name, file := range f.fds {
		file.Close()
		delete(f.fds, name)
	}
}
