package sftpc_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"github.com/shipdeploy/ship/pkg/sftpc"
)

func names(infos []fs.FileInfo) []string {
	var out []string
	for _, fi := range infos {
		out = append(out, fi.Name())
	}
	slices.Sort(out)
	return out
}

func isStatus(err error, code uint32) bool {
	var se *sftpc.StatusError
	return errors.As(err, &se) && se.Code == code
}

func mode(t *testing.T, p string) fs.FileMode {
	t.Helper()
	st, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	return st.Mode().Perm()
}

// session is a client of a new sftp-server, the test's context and a folder of its own.
func session(t *testing.T) (*sftpc.Client, context.Context, string) {
	c, _ := serve(t, -1)
	return c, t.Context(), t.TempDir()
}

// The extensions the client uses are offered by OpenSSH's server.
func TestExtensions(t *testing.T) {
	c, _, _ := session(t)
	for _, ext := range []string{"posix-rename@openssh.com", "fsync@openssh.com"} {
		if !c.HasExtension(ext) {
			t.Errorf("the server offers no %s", ext)
		}
	}
}

// Mkdir, Stat, RealPath and Rmdir, and their errors.
func TestFolders(t *testing.T) {
	c, ctx, dir := session(t)
	d := filepath.Join(dir, "d")
	if err := c.Mkdir(ctx, d); err != nil {
		t.Fatal(err)
	}
	if err := c.Mkdir(ctx, d); !isStatus(err, sftpc.StatusFailure) {
		t.Errorf("mkdir of a folder there: %v, want a Failure status", err)
	}
	if err := c.Mkdir(ctx, filepath.Join(dir, "no", "parent")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("mkdir without its parent: %v, want fs.ErrNotExist", err)
	}
	if fi, err := c.Stat(ctx, d); err != nil || !fi.IsDir() || fi.Name() != "d" || fi.Mode().Perm() != 0o755&^umask() {
		t.Errorf("Stat = %v, %v", fi, err)
	}
	if p, err := c.RealPath(ctx, dir+"/./d/.."); err != nil || p != dir {
		t.Errorf("RealPath = %q, %v; want %s", p, err, dir)
	}
	if err := c.Rmdir(ctx, d); err != nil {
		t.Fatal(err)
	}
	if err := c.Rmdir(ctx, d); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("rmdir of nothing: %v", err)
	}
}

// WriteFile's modes, ReadFile, Append and Remove, and their errors.
func TestFiles(t *testing.T) {
	c, ctx, dir := session(t)
	secret := filepath.Join(dir, "secret")
	if err := c.WriteFile(ctx, secret, []byte("TOKEN=x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if m := mode(t, secret); m != 0o600 {
		t.Errorf("mode %o, want 600", m)
	}
	// Bits the umask would take away are set all the same.
	open := filepath.Join(dir, "open")
	if err := c.WriteFile(ctx, open, nil, 0o666); err != nil {
		t.Fatal(err)
	}
	if m := mode(t, open); m != 0o666 {
		t.Errorf("mode %o, want 666", m)
	}
	if err := c.WriteFile(ctx, secret, []byte("again"), 0o600); !isStatus(err, sftpc.StatusFailure) {
		t.Errorf("WriteFile over a file: %v, want a Failure status", err)
	}
	if data, err := c.ReadFile(ctx, secret); err != nil || string(data) != "TOKEN=x\n" {
		t.Errorf("ReadFile = %q, %v", data, err)
	}
	if data, err := c.ReadFile(ctx, open); err != nil || len(data) != 0 {
		t.Errorf("ReadFile of an empty file = %q, %v", data, err)
	}
	if _, err := c.ReadFile(ctx, filepath.Join(dir, "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("ReadFile of a missing file: %v", err)
	}
	if err := c.WriteFile(ctx, filepath.Join(dir, "no", "file"), []byte("x"), 0o644); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("WriteFile in a missing folder: %v", err)
	}
	log := filepath.Join(dir, "audit.log")
	for _, line := range []string{"one\n", "two\n"} {
		if err := c.Append(ctx, log, []byte(line)); err != nil {
			t.Fatal(err)
		}
	}
	if data, _ := os.ReadFile(log); string(data) != "one\ntwo\n" {
		t.Errorf("audit.log = %q", data)
	}
	if m := mode(t, log); m != 0o644&^umask() {
		t.Errorf("audit.log's mode %o", m)
	}
	if err := c.Remove(ctx, log); err != nil {
		t.Fatal(err)
	}
	if err := c.Remove(ctx, log); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("remove of nothing: %v", err)
	}
}

// The staged write replaces a file whole, and leaves no temporary file, even when
// its rename fails.
func TestStagedWrite(t *testing.T) {
	c, ctx, dir := session(t)
	name := filepath.Join(dir, "release.json")
	for i, data := range []string{"first", "second, longer"} {
		tmp := filepath.Join(dir, fmt.Sprintf(".release.json.%d", i))
		if err := c.WriteStaged(ctx, tmp, name, []byte(data), 0o640); err != nil {
			t.Fatal(err)
		}
		if got, _ := os.ReadFile(name); string(got) != data {
			t.Errorf("the file holds %q, want %q", got, data)
		}
		if m := mode(t, name); m != 0o640 {
			t.Errorf("mode %o", m)
		}
		if _, err := os.Lstat(tmp); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("the temporary file is left: %v", err)
		}
	}
	// The rename fails (a folder is in the way): the temporary file is removed.
	busy := filepath.Join(dir, "busy")
	if err := os.MkdirAll(filepath.Join(busy, "x"), 0o755); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(dir, ".busy.tmp")
	if err := c.WriteStaged(ctx, tmp, busy, []byte("x"), 0o644); err == nil {
		t.Fatal("a staged write over a folder that is not empty succeeded")
	}
	if _, err := os.Lstat(tmp); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the temporary file is left after a failed rename: %v", err)
	}
}

// Symlink (OpenSSH's order of the two names), Readlink, Lstat, Stat and Rename.
func TestLinksAndRenames(t *testing.T) {
	c, ctx, dir := session(t)
	link := filepath.Join(dir, "current")
	if err := c.Symlink(ctx, "releases/a", link); err != nil {
		t.Fatal(err)
	}
	if got, err := os.Readlink(link); err != nil || got != "releases/a" {
		t.Errorf("current -> %q, %v", got, err)
	}
	if got, err := c.Readlink(ctx, link); err != nil || got != "releases/a" {
		t.Errorf("Readlink = %q, %v", got, err)
	}
	if fi, err := c.Lstat(ctx, link); err != nil || fi.Mode()&fs.ModeSymlink == 0 {
		t.Errorf("Lstat = %v, %v; want a symlink", fi, err)
	}
	if _, err := c.Stat(ctx, link); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Stat through a dangling link: %v", err)
	}
	if _, err := c.Readlink(ctx, filepath.Join(dir, "nothing")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Readlink of nothing: %v", err)
	}
	next := filepath.Join(dir, ".current-b")
	if err := c.Symlink(ctx, "releases/b", next); err != nil {
		t.Fatal(err)
	}
	if err := c.Rename(ctx, next, link); err != nil {
		t.Fatalf("rename over a link: %v", err)
	}
	if got, _ := os.Readlink(link); got != "releases/b" {
		t.Errorf("current -> %q after the rename", got)
	}
}

// ReadDir of a folder longer than a flight's reads, and a Batch whose requests
// depend on each other.
func TestListingAndBatch(t *testing.T) {
	c, ctx, dir := session(t)
	d := filepath.Join(dir, "list")
	if err := os.Mkdir(d, 0o755); err != nil {
		t.Fatal(err)
	}
	var want []string
	for i := range 950 { // more than the first flight's reads list
		n := fmt.Sprintf("f%04d", i)
		want = append(want, n)
		if err := os.WriteFile(filepath.Join(d, n), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	infos, err := c.ReadDir(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	if got := names(infos); !slices.Equal(got, want) {
		t.Errorf("ReadDir: %d names, want %d", len(got), len(want))
	}
	if _, err := c.ReadDir(ctx, filepath.Join(dir, "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("ReadDir of nothing: %v", err)
	}
	// Requests that depend on each other, sent together in order.
	moved := filepath.Join(dir, "moved")
	ops := []sftpc.Op{sftpc.OpRename(d, moved)}
	for _, n := range want {
		ops = append(ops, sftpc.OpRemove(filepath.Join(moved, n)))
	}
	ops = append(ops, sftpc.OpRmdir(moved), sftpc.OpLstat(moved), sftpc.OpMkdir(moved, 0o700))
	res, err := c.Batch(ctx, ops...)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res[:len(res)-2] {
		if r.Err != nil {
			t.Fatalf("op %d: %v", i, r.Err)
		}
	}
	if err := res[len(res)-2].Err; !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("lstat after the rmdir: %v", err)
	}
	if err := res[len(res)-1].Err; err != nil || mode(t, moved) != 0o700&^umask() {
		t.Errorf("mkdir at the end: %v", err)
	}
}

// umask is this process's umask, which sftp-server inherits.
func umask() fs.FileMode {
	m := syscallUmask(0)
	syscallUmask(m)
	return fs.FileMode(m)
}

func TestPermission(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "secret")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	uid := -1
	if os.Geteuid() == 0 {
		uid = 65534 // root may do anything: the server runs as nobody
		if err := os.Chmod(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	} else if err := os.Chmod(file, 0); err != nil {
		t.Fatal(err)
	}
	c, _ := serve(t, uid)
	if _, err := c.ReadFile(t.Context(), file); !errors.Is(err, fs.ErrPermission) {
		t.Errorf("ReadFile of a file not ours: %v, want fs.ErrPermission", err)
	}
	if err := c.WriteFile(t.Context(), filepath.Join(dir, "new"), nil, 0o644); uid >= 0 && !errors.Is(err, fs.ErrPermission) {
		t.Errorf("WriteFile in a folder not ours: %v, want fs.ErrPermission", err)
	}
}

// Files of several megabytes, larger than a flight's reads and a flush.
func TestBigFiles(t *testing.T) {
	c, _ := serve(t, -1)
	ctx := t.Context()
	dir := t.TempDir()
	for _, size := range []int{64 << 10, 1<<20 + 1, 5<<20 + 12345, 40 << 20} {
		data := make([]byte, size)
		rand.Read(data)
		name := filepath.Join(dir, fmt.Sprintf("big-%d", size))
		if err := c.WriteStaged(ctx, name+".tmp", name, data, 0o600); err != nil {
			t.Fatal(err)
		}
		if got, err := os.ReadFile(name); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("%d bytes written, %d on disk (%v)", size, len(got), err)
		}
		got, err := c.ReadFile(ctx, name)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("%d bytes on disk, %d read (%v)", size, len(got), err)
		}
	}
}

// Calls from many goroutines at once, each on its own files.
func TestConcurrent(t *testing.T) {
	c, _ := serve(t, -1)
	ctx := t.Context()
	dir := t.TempDir()
	var wg sync.WaitGroup
	for i := range 40 {
		wg.Go(func() {
			d := filepath.Join(dir, fmt.Sprint(i))
			data := bytes.Repeat([]byte{byte(i)}, 1000*i)
			if err := c.Mkdir(ctx, d); err != nil {
				t.Error(err)
				return
			}
			if err := c.WriteStaged(ctx, d+"/f.tmp", d+"/f", data, 0o644); err != nil {
				t.Error(err)
				return
			}
			if got, err := c.ReadFile(ctx, d+"/f"); err != nil || !bytes.Equal(got, data) {
				t.Errorf("%d: read %d bytes, %v", i, len(got), err)
			}
			if infos, err := c.ReadDir(ctx, d); err != nil || len(infos) != 1 || infos[0].Size() != int64(len(data)) {
				t.Errorf("%d: ReadDir = %v, %v", i, infos, err)
			}
			res, err := c.Batch(ctx, sftpc.OpRemove(d+"/f"), sftpc.OpRmdir(d))
			if err != nil || res[0].Err != nil || res[1].Err != nil {
				t.Errorf("%d: removal: %v %v", i, err, res)
			}
		})
	}
	wg.Wait()
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("%d entries left", len(entries))
	}
}

// WriteFile, the staged write and ReadFile each wait for two round trips: their
// requests go out in two flights.
func TestFlights(t *testing.T) {
	c, f := serve(t, -1)
	ctx := t.Context()
	dir := t.TempDir()
	data := bytes.Repeat([]byte("0123456789abcdef"), 20<<10) // 320 KiB: five writes, five reads
	// The first request goes with INIT (TestFirstRequestWithInit): counted apart.
	if _, err := c.Stat(ctx, dir); err != nil {
		t.Fatal(err)
	}
	for _, step := range []struct {
		name string
		do   func() error
	}{
		{"WriteFile", func() error { return c.WriteFile(ctx, dir+"/a", data, 0o600) }},
		{"WriteStaged", func() error { return c.WriteStaged(ctx, dir+"/.b.tmp", dir+"/b", data, 0o600) }},
		{"ReadFile", func() error {
			got, err := c.ReadFile(ctx, dir+"/b")
			if err == nil && !bytes.Equal(got, data) {
				err = fmt.Errorf("read %d bytes, want %d", len(got), len(data))
			}
			return err
		}},
		{"Append", func() error { return c.Append(ctx, dir+"/log", []byte("line\n")) }},
		{"ReadDir", func() error { _, err := c.ReadDir(ctx, dir); return err }},
	} {
		before := f.count()
		if err := step.do(); err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		if n := f.count() - before; n != 2 {
			t.Errorf("%s took %d flights, want 2", step.name, n)
		}
	}
}

// gatedReader holds the server's answers until open is closed.
type gatedReader struct {
	io.Reader
	open <-chan struct{}
}

func (r gatedReader) Read(p []byte) (int, error) {
	<-r.open
	return r.Reader.Read(p)
}

// signalWriter counts writes on writes.
type signalWriter struct {
	io.WriteCloser
	writes chan<- struct{}
}

func (w signalWriter) Write(p []byte) (int, error) {
	n, err := w.WriteCloser.Write(p)
	w.writes <- struct{}{}
	return n, err
}

// The first request goes out behind INIT, before the server's VERSION is read: the
// session's start costs no round trip of its own.
func TestFirstRequestWithInit(t *testing.T) {
	cmd := exec.Command(findServer(t))
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
	open, writes := make(chan struct{}), make(chan struct{}, 16)
	c, err := sftpc.New(gatedReader{out, open}, signalWriter{in, writes})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		c.Close()
		cmd.Wait()
	}()
	go func() {
		<-writes // INIT
		<-writes // the lstat
		close(open)
	}()
	dir := t.TempDir()
	if fi, err := c.Lstat(t.Context(), dir); err != nil || !fi.IsDir() {
		t.Fatalf("Lstat = %v, %v", fi, err)
	}
	if !c.HasExtension("posix-rename@openssh.com") {
		t.Error("no posix-rename@openssh.com once VERSION was read")
	}
}
