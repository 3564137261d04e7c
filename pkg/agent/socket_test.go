package agent

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
)

func TestListenAPI(t *testing.T) {
	dir, err := os.MkdirTemp("", "sock-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "run", "shipd.sock")
	gid := os.Getgid()
	first, err := listenAPI(path, strconv.Itoa(gid))
	if err != nil {
		t.Fatal(err)
	}
	defer first.ln.Close()
	fi, err := os.Lstat(path)
	if err != nil || fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o660 || int(fi.Sys().(*syscall.Stat_t).Gid) != gid {
		t.Fatalf("socket %v: %v", fi, err)
	}

	// A successor's socket replaces the path; the first one no longer removes it.
	second, err := listenAPI(path, "")
	if err != nil {
		t.Fatal(err)
	}
	defer second.ln.Close()
	first.ln.Close()
	first.remove()
	if _, err := os.Lstat(path); err != nil {
		t.Fatalf("the successor's socket went: %v", err)
	}
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	second.remove()
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Errorf("socket left: %v", err)
	}
	if _, err := listenAPI(path, "no-such-group-here"); err == nil {
		t.Error("an unknown group was accepted")
	}
	if entries, _ := os.ReadDir(filepath.Dir(path)); len(entries) != 0 {
		t.Errorf("left behind: %v", entries)
	}
}
