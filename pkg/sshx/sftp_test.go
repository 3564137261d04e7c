package sshx_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shipdeploy/ship/pkg/sshx"
	"github.com/shipdeploy/ship/test/testenv"
)

// dirNames lists dir, sorted.
func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	slices.Sort(names)
	return names
}

// waitTempFile waits until a temporary file in dir has some data, and returns
// its name. sshd runs on this machine, so the remote folder is a local one.
func waitTempFile(t *testing.T, dir, name string, errc <-chan error) string {
	t.Helper()
	deadline := time.Now().Add(time.Minute) // a backstop: the loop ends when the file appears
	for time.Now().Before(deadline) {
		for _, n := range dirNames(t, dir) {
			if n == name {
				continue
			}
			if st, err := os.Stat(filepath.Join(dir, n)); err == nil && st.Size() > 0 {
				return n
			}
		}
		select {
		case err := <-errc:
			t.Fatalf("the write ended (%v) before it could be cut off", err)
		case <-time.After(time.Millisecond):
		}
	}
	t.Fatal("no temporary file appeared")
	return ""
}

func TestWriteFileAtomic(t *testing.T) {
	t.Parallel()
	s := testenv.SSHD(t)
	c := dial(t, dest(s), options(t, s))

	t.Run("new file and overwrite", func(t *testing.T) {
		dir := t.TempDir()
		file := filepath.Join(dir, "docker-compose.yml")
		for _, tt := range []struct {
			data string
			mode os.FileMode
		}{{"first\n", 0o600}, {"second, longer\n", 0o640}, {"", 0o644}} {
			if err := c.WriteFileAtomic(t.Context(), file, []byte(tt.data), tt.mode); err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.data {
				t.Fatalf("file holds %q, want %q", got, tt.data)
			}
			st, err := os.Stat(file)
			if err != nil {
				t.Fatal(err)
			}
			if st.Mode().Perm() != tt.mode {
				t.Fatalf("mode %o, want %o", st.Mode().Perm(), tt.mode)
			}
			if names := dirNames(t, dir); !slices.Equal(names, []string{"docker-compose.yml"}) {
				t.Fatalf("folder holds %q, want only the file", names)
			}
		}
	})

	t.Run("missing folder", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "no", "such", "file")
		err := c.WriteFileAtomic(t.Context(), file, []byte("x"), 0o600)
		if err == nil || !strings.Contains(err.Error(), file) || !strings.Contains(err.Error(), dest(s)) {
			t.Fatalf("err = %v, want an error naming the file and host", err)
		}
	})

	t.Run("readers never see a part", func(t *testing.T) {
		dir := t.TempDir()
		file := filepath.Join(dir, "state.json")
		a := bytes.Repeat([]byte("a"), 300<<10)
		b := bytes.Repeat([]byte("b"), 500<<10)
		if err := c.WriteFileAtomic(t.Context(), file, a, 0o644); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		var wg sync.WaitGroup
		var reads int
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-done:
					return
				default:
				}
				got, err := os.ReadFile(file)
				if err != nil {
					t.Errorf("read: %v", err)
					return
				}
				reads++
				if !bytes.Equal(got, a) && !bytes.Equal(got, b) {
					t.Errorf("a reader saw %d bytes, neither version", len(got))
					return
				}
			}
		}()
		for i := range 10 {
			data := a
			if i%2 == 0 {
				data = b
			}
			if err := c.WriteFileAtomic(t.Context(), file, data, 0o644); err != nil {
				t.Error(err)
				break
			}
		}
		close(done)
		wg.Wait()
		t.Logf("%d reads", reads)
		if names := dirNames(t, dir); !slices.Equal(names, []string{"state.json"}) {
			t.Fatalf("folder holds %q", names)
		}
	})

	big := bytes.Repeat([]byte("0123456789abcdef"), 2<<20) // 32 MiB

	t.Run("cancelled midway", func(t *testing.T) {
		dir := t.TempDir()
		file := filepath.Join(dir, "release.tar")
		if err := c.WriteFileAtomic(t.Context(), file, []byte("old"), 0o600); err != nil {
			t.Fatal(err)
		}
		// The gate holds the write after 4 MiB (of 32) until the cancel.
		c, g := gated(t, s, 4<<20)
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		errc := make(chan error, 1)
		go func() { errc <- c.WriteFileAtomic(ctx, file, big, 0o600) }()
		waitTempFile(t, dir, "release.tar", errc)
		cancel()
		g.open()
		if err := <-errc; !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want cancelled", err)
		}
		if got, _ := os.ReadFile(file); string(got) != "old" {
			t.Fatalf("the file holds %d bytes, want the old content", len(got))
		}
		if names := dirNames(t, dir); !slices.Equal(names, []string{"release.tar"}) {
			t.Fatalf("folder holds %q, want the temporary file removed", names)
		}
		// The connection is still good.
		if err := c.WriteFileAtomic(t.Context(), file, []byte("new"), 0o600); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("connection lost midway", func(t *testing.T) {
		// The gate holds the write after 4 MiB (of 32): it is under way when cut.
		c2, _ := gated(t, s, 4<<20)
		dir := t.TempDir()
		file := filepath.Join(dir, "release.tar")
		errc := make(chan error, 1)
		go func() { errc <- c2.WriteFileAtomic(t.Context(), file, big, 0o600) }()
		tmp := waitTempFile(t, dir, "release.tar", errc)
		c2.Close()
		if err := <-errc; err == nil {
			t.Fatal("the write succeeded after the connection was closed")
		}
		if _, err := os.Stat(file); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("the file exists after a cut-off write (%v)", err)
		}
		if !strings.HasPrefix(tmp, ".release.tar.") {
			t.Fatalf("temporary file %q is not hidden beside the target", tmp)
		}
	})

	t.Run("one sftp client", func(t *testing.T) {
		a, err := c.SFTP()
		if err != nil {
			t.Fatal(err)
		}
		b, err := c.SFTP()
		if err != nil {
			t.Fatal(err)
		}
		if a != b {
			t.Fatal("SFTP() made a second client")
		}
	})
}

// gate is a TCP proxy to an address that passes the first limit bytes the client
// sends, then holds the rest until it is opened: a write of more than limit bytes
// is then certainly under way, and stays so, until the test lets it go on.
type gate struct {
	addr   string
	opened chan struct{}
	once   sync.Once
}

func newGate(t *testing.T, to string, limit int) *gate {
	t.Helper()
	g := &gate{opened: make(chan struct{})}
	g.addr = relay(t, to, func(dst, src net.Conn, up bool) {
		if up {
			g.pipe(dst, src, limit)
		} else {
			g.pipe(dst, src, -1)
		}
	})
	// Cleanups run last first: the gate opens before the relay closes and waits.
	t.Cleanup(g.open)
	return g
}

func (g *gate) open() { g.once.Do(func() { close(g.opened) }) }

// pipe copies src to dst; with limit >= 0, it waits for the gate to open once
// limit bytes have passed.
func (g *gate) pipe(dst, src net.Conn, limit int) {
	defer dst.Close()
	buf := make([]byte, 32<<10)
	passed := 0
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if limit >= 0 && passed+n > limit {
				<-g.opened
				limit = -1
			}
			passed += n
			if _, err := dst.Write(buf[:n]); err != nil {
				src.Close()
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// gated dials s through a gate that holds what the client sends after limit bytes.
func gated(t *testing.T, s *testenv.SSHServer, limit int) (*sshx.Client, *gate) {
	t.Helper()
	g := newGate(t, s.Addr, limit)
	return dialThrough(t, s, g.addr, options(t, s)), g
}
