package sshhost

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shipdeploy/ship/pkg/deploy"
	"github.com/shipdeploy/ship/pkg/release"
	"github.com/shipdeploy/ship/pkg/sshx"
	"github.com/shipdeploy/ship/test/testenv"
)

// dialTest connects to a real sshd from testenv with the SSH dialer.
func dialTest(t *testing.T) (deploy.Host, *testenv.SSHServer) {
	t.Helper()
	srv := testenv.SSHD(t)
	dial := Dialer(Options{SSH: sshx.Options{
		KnownHostsFiles: []string{srv.KnownHostsFile},
		IdentityFiles:   []string{srv.UserKeyFile},
		HomeDir:         t.TempDir(),
		ConfigFile:      "none",
		AgentSocket:     "none",
	}})
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	h, err := dial(ctx, srv.User+"@"+srv.Addr)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { h.Close() })
	return h, srv
}

// TestSSHFiles runs the Files operations through a real sshd's SFTP server, on this
// machine's file system.
func TestSSHFiles(t *testing.T) {
	h, _ := dialTest(t)
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "srv", "app")

	if err := h.MkdirAll(ctx, dir+"/releases"); err != nil {
		t.Fatal(err)
	}
	if err := h.Mkdir(ctx, dir+"/.lock"); err != nil {
		t.Fatal(err)
	}
	if err := h.Mkdir(ctx, dir+"/.lock"); !errors.Is(err, fs.ErrExist) {
		t.Errorf("a second mkdir of the lock: %v, want fs.ErrExist", err)
	}
	if err := h.Mkdir(ctx, dir+"/no/such/parent"); err == nil || errors.Is(err, fs.ErrExist) {
		t.Errorf("mkdir without its parent: %v", err)
	}

	secretFile := dir + "/releases/compose.tmp"
	if err := h.WriteFile(ctx, secretFile, []byte("TOKEN: x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(secretFile); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("mode of the written file: %v, %v", st.Mode(), err)
	}
	if err := h.WriteFile(ctx, secretFile, []byte("again"), 0o600); !errors.Is(err, fs.ErrExist) {
		t.Errorf("WriteFile over a file: %v, want fs.ErrExist", err)
	}
	if err := os.WriteFile(dir+"/releases/old", []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := h.Rename(ctx, secretFile, dir+"/releases/old"); err != nil {
		t.Fatalf("rename over a file: %v", err)
	}
	if data, err := h.ReadFile(ctx, dir+"/releases/old"); err != nil || string(data) != "TOKEN: x\n" {
		t.Errorf("ReadFile = %q, %v", data, err)
	}
	if _, err := h.ReadFile(ctx, dir+"/missing"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("ReadFile of a missing file: %v", err)
	}

	// The switch: a new symlink renamed over current.
	for _, sha := range []string{"aaa", "bbb"} {
		tmp := dir + "/.current-" + sha
		if err := h.Symlink(ctx, "releases/"+sha, tmp); err != nil {
			t.Fatal(err)
		}
		if err := h.Rename(ctx, tmp, dir+"/current"); err != nil {
			t.Fatal(err)
		}
		if got, err := os.Readlink(dir + "/current"); err != nil || got != "releases/"+sha {
			t.Errorf("current -> %q, %v", got, err)
		}
		if got, err := h.Readlink(ctx, dir+"/current"); err != nil || got != "releases/"+sha {
			t.Errorf("Readlink = %q, %v", got, err)
		}
	}
	if _, err := h.Readlink(ctx, dir+"/nothing"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Readlink of nothing: %v", err)
	}

	for _, line := range []string{"one\n", "two\n"} {
		if err := h.Append(ctx, dir+"/audit.log", []byte(line)); err != nil {
			t.Fatal(err)
		}
	}
	if data, _ := os.ReadFile(dir + "/audit.log"); string(data) != "one\ntwo\n" {
		t.Errorf("audit.log = %q", data)
	}

	entries, err := h.ReadDir(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if got := strings.Join(names, ","); !strings.Contains(got, "releases") || !strings.Contains(got, "current") {
		t.Errorf("ReadDir = %s", got)
	}
	if err := h.RemoveAll(ctx, dir+"/releases"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir + "/releases"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("RemoveAll left %v", err)
	}
	if err := h.RemoveAll(ctx, dir+"/releases"); err != nil {
		t.Errorf("RemoveAll of nothing: %v", err)
	}
}

// TestSSHEngine reaches the engine through the SSH-forwarded socket.
func TestSSHEngine(t *testing.T) {
	testenv.Docker(t)
	h, _ := dialTest(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	v, err := h.Ping(ctx)
	if err != nil || !strings.Contains(v, "API") {
		t.Fatalf("Ping = %q, %v", v, err)
	}
	if cs, err := h.Containers(ctx, "ship-deploy-no-such-project"); err != nil || len(cs) != 0 {
		t.Errorf("Containers = %v, %v", cs, err)
	}
	if err := h.RemoveImage(ctx, "ship-test/no-such-image:none"); err != nil {
		t.Errorf("RemoveImage of nothing: %v", err)
	}
}

// TestSSHDiskFull: a write the host refuses for want of space (a 64 KiB tmpfs, and
// /dev/full for an append) says that the host's disk may be full, which host and
// where, not only sftp's "Failure".
func TestSSHDiskFull(t *testing.T) {
	h, srv := dialTest(t)
	ctx := context.Background()
	small := filepath.Join(t.TempDir(), "small")
	if err := os.Mkdir(small, 0o755); err != nil {
		t.Fatal(err)
	}
	// The test's sshd runs on this machine, so a mount here is on its host.
	if err := syscall.Mount("tmpfs", small, "tmpfs", 0, "size=64k"); err != nil {
		t.Fatalf("mount a small tmpfs (the test needs root): %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(small, syscall.MNT_DETACH) })

	check := func(what string, err error, file string) {
		t.Helper()
		if err == nil {
			t.Fatalf("%s on a full disk: no error", what)
		}
		msg := err.Error()
		for _, want := range []string{file, "disk of " + srv.User + "@" + srv.Addr + " may be full", "df -h " + filepath.Dir(file)} {
			if !strings.Contains(msg, want) {
				t.Errorf("%s on a full disk: %q does not say %q", what, msg, want)
			}
		}
	}
	file := small + "/compose.tmp"
	check("WriteFile", h.WriteFile(ctx, file, make([]byte, 256<<10), 0o600), file)
	if _, err := os.Stat(file); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the failed write left %s: %v", file, err)
	}
	check("Append", h.Append(ctx, "/dev/full", []byte("line\n")), "/dev/full")

	// A staged write that finds no room keeps the file it would replace whole.
	sw, ok := h.(release.StagedWriter)
	if !ok {
		t.Fatal("the SSH host is no release.StagedWriter")
	}
	name := small + "/release.json"
	if err := os.WriteFile(name, []byte("{}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tmp := small + "/.release.json.tmp"
	check("WriteStaged", sw.WriteStaged(ctx, tmp, name, make([]byte, 256<<10), 0o644), tmp)
	if data, err := os.ReadFile(name); err != nil || string(data) != "{}\n" {
		t.Errorf("the staged write that failed left %d bytes in the file (%v), want the old content", len(data), err)
	}
	if _, err := os.Stat(tmp); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the failed staged write left %s: %v", tmp, err)
	}
}
