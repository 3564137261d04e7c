package agent

import (
	"fmt"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
)

// socketMode is the API socket's mode: its owner and group may use the API.
const socketMode = 0o660

// apiSocket is the API's listening unix socket.
type apiSocket struct {
	ln   *net.UnixListener
	path string
	info os.FileInfo // of the socket file this process made
}

// listenAPI binds the API socket at path with mode 0660, owned by group when set. The
// socket is made under a temporary name, given its mode and group, then renamed over
// path: a client never finds a socket with the wrong mode, and a shipd that takes over
// from another (a handover) replaces the old socket without a moment with none.
func listenAPI(path, group string) (*apiSocket, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("api socket: %w", err)
	}
	tmp := fmt.Sprintf("%s.%d.new", path, os.Getpid())
	os.Remove(tmp)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("api socket: %w", err)
	}
	// The file is this process's to remove, at its path, only while it is still ours.
	ln.SetUnlinkOnClose(false)
	fail := func(err error) (*apiSocket, error) {
		ln.Close()
		os.Remove(tmp)
		return nil, fmt.Errorf("api socket %s: %w", path, err)
	}
	if err := os.Chmod(tmp, socketMode); err != nil {
		return fail(err)
	}
	if group != "" {
		gid, err := lookupGroup(group)
		if err != nil {
			return fail(err)
		}
		if err := os.Lchown(tmp, -1, gid); err != nil {
			return fail(fmt.Errorf("give the socket to group %s: %w", group, err))
		}
	}
	info, err := os.Lstat(tmp)
	if err != nil {
		return fail(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fail(err)
	}
	return &apiSocket{ln: ln, path: path, info: info}, nil
}

// remove deletes the socket file if it is still the one this process made (a
// successor may have put its own there).
func (s *apiSocket) remove() {
	if cur, err := os.Lstat(s.path); err == nil && os.SameFile(cur, s.info) {
		os.Remove(s.path)
	}
}

func lookupGroup(name string) (int, error) {
	if gid, err := strconv.Atoi(name); err == nil {
		return gid, nil
	}
	g, err := user.LookupGroup(name)
	if err != nil {
		return 0, fmt.Errorf("socket_group %s: %w", name, err)
	}
	gid, err := strconv.Atoi(g.Gid)
	if err != nil {
		return 0, fmt.Errorf("socket_group %s: gid %q", name, g.Gid)
	}
	return gid, nil
}
