package sshx_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/client"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/shipdeploy/ship/pkg/sshx"
	"github.com/shipdeploy/ship/test/testenv"
)

// dockerSocket is the engine's unix socket: DOCKER_HOST's when it names one.
func dockerSocket(t *testing.T) string {
	t.Helper()
	host := os.Getenv("DOCKER_HOST")
	if host == "" {
		return sshx.DefaultDockerSocket
	}
	if path, ok := strings.CutPrefix(host, "unix://"); ok {
		return path
	}
	t.Skipf("DOCKER_HOST=%s is not a unix socket", host)
	return ""
}

func TestDocker(t *testing.T) {
	t.Parallel()
	testenv.Docker(t) // skips (fails in CI) without an engine
	sock := dockerSocket(t)
	s := testenv.SSHD(t)
	c := dial(t, dest(s), options(t, s))
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()

	t.Run("DialUnix", func(t *testing.T) {
		conn, err := c.DialUnix(ctx, sock)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		req, _ := http.NewRequest(http.MethodGet, "http://docker/_ping", nil)
		if err := req.Write(conn); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(conn), req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || string(body) != "OK" {
			t.Fatalf("GET /_ping: %s %q", resp.Status, body)
		}
	})
	t.Run("Docker", func(t *testing.T) {
		cli, err := c.Docker(ctx, sock)
		if err != nil {
			t.Fatal(err)
		}
		ping, err := cli.Ping(ctx, client.PingOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if ping.APIVersion == "" || cli.ClientVersion() == "" {
			t.Fatalf("no API version: %+v", ping)
		}
		if _, err := cli.ServerVersion(ctx, client.ServerVersionOptions{}); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("missing socket", func(t *testing.T) {
		_, err := c.DialUnix(ctx, "/nonexistent/docker.sock")
		if err == nil || !strings.Contains(err.Error(), "/nonexistent/docker.sock") || !strings.Contains(err.Error(), dest(s)) {
			t.Fatalf("err = %v, want one naming the socket and the host", err)
		}
		_, err = c.Docker(ctx, "/nonexistent/docker.sock")
		if err == nil || !strings.Contains(err.Error(), "Docker engine") {
			t.Fatalf("err = %v, want the engine unreachable", err)
		}
	})
}

// settle waits for the number of goroutines to fall to at most want.
func settle(t *testing.T, want int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		n := runtime.NumGoroutine()
		if n <= want {
			return
		}
		if time.Now().After(deadline) {
			var b strings.Builder
			_ = pprof.Lookup("goroutine").WriteTo(&b, 1)
			t.Fatalf("%d goroutines, want at most %d:\n%s", n, want, b.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestTeardown is not parallel: it counts the process's goroutines.
func TestTeardown(t *testing.T) {
	s := testenv.SSHD(t)
	o := options(t, s)
	o.Keepalive = 20 * time.Millisecond
	use := func(t *testing.T, c *sshx.Client) {
		t.Helper()
		run(t, c, "true")
		if err := c.WriteFileAtomic(t.Context(), t.TempDir()+"/f", []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond) // a few keepalives
	}

	t.Run("Close", func(t *testing.T) {
		base := runtime.NumGoroutine()
		c, err := sshx.Dial(context.Background(), dest(s), o)
		if err != nil {
			t.Fatal(err)
		}
		use(t, c)
		if err := c.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if err := c.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
		if _, _, err := c.Run(t.Context(), "true"); err == nil || !strings.Contains(err.Error(), "closed") {
			t.Fatalf("Run after Close: %v", err)
		}
		if _, err := c.SFTP(); err == nil {
			t.Fatal("SFTP after Close succeeded")
		}
		settle(t, base)
	})

	t.Run("cancel", func(t *testing.T) {
		base := runtime.NumGoroutine()
		ctx, cancel := context.WithCancel(context.Background())
		c, err := sshx.Dial(ctx, dest(s), o)
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		use(t, c)
		sc, err := c.SFTP()
		if err != nil {
			t.Fatal(err)
		}
		cancel()
		deadline := time.Now().Add(5 * time.Second)
		for {
			if _, err := sc.Getwd(); err != nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("SFTP still works after the context was cancelled")
			}
			time.Sleep(10 * time.Millisecond)
		}
		settle(t, base)
		c.Close()
	})

	t.Run("cancel while dialling", func(t *testing.T) {
		base := runtime.NumGoroutine()
		addr := blackHole(t)
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(200*time.Millisecond, cancel)
		start := time.Now()
		_, err := sshx.Dial(ctx, addr, o)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want cancelled", err)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Fatalf("Dial returned %s after the cancel", d)
		}
		settle(t, base+1) // the black hole's accept loop
	})

	t.Run("dial timeout", func(t *testing.T) {
		addr := blackHole(t)
		o := o
		o.DialTimeout = 300 * time.Millisecond
		start := time.Now()
		_, err := sshx.Dial(context.Background(), addr, o)
		if err == nil || !strings.Contains(err.Error(), "within") || !strings.Contains(err.Error(), addr) {
			t.Fatalf("err = %v, want a timeout naming the host", err)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Fatalf("Dial took %s", d)
		}
	})
}

// blackHole is an address that accepts TCP connections and never says a word.
func blackHole(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		<-done
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return l.Addr().String()
}

// freezer is a TCP proxy to an address that can stop passing bytes, as a network
// that silently drops everything would.
type freezer struct {
	addr   string
	mu     sync.Mutex
	frozen bool
	conns  []net.Conn
}

func newFreezer(t *testing.T, to string) *freezer {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &freezer{addr: l.Addr().String()}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			in, err := l.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", to)
			if err != nil {
				in.Close()
				continue
			}
			f.mu.Lock()
			f.conns = append(f.conns, in, out)
			f.mu.Unlock()
			wg.Add(2)
			go func() { defer wg.Done(); f.pipe(out, in) }()
			go func() { defer wg.Done(); f.pipe(in, out) }()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		f.mu.Lock()
		for _, c := range f.conns {
			c.Close()
		}
		f.mu.Unlock()
		wg.Wait()
	})
	return f
}

func (f *freezer) freeze() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.frozen = true
}

// pipe copies from src to dst, dropping what it reads while frozen.
func (f *freezer) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if err != nil {
			dst.Close()
			return
		}
		f.mu.Lock()
		frozen := f.frozen
		f.mu.Unlock()
		if frozen {
			continue
		}
		if _, err := dst.Write(buf[:n]); err != nil {
			src.Close()
			return
		}
	}
}

func TestKeepalive(t *testing.T) {
	t.Parallel()
	s := testenv.SSHD(t)
	f := newFreezer(t, s.Addr)
	o := options(t, s)
	known := t.TempDir() + "/known_hosts"
	line := knownhosts.Line([]string{knownhosts.Normalize(f.addr)}, s.HostKey) + "\n"
	if err := os.WriteFile(known, []byte(line), 0o600); err != nil {
		t.Fatal(err)
	}
	o.KnownHostsFiles = []string{known}
	o.Keepalive = 100 * time.Millisecond
	c := dial(t, s.User+"@"+f.addr, o)
	run(t, c, "true")
	time.Sleep(500 * time.Millisecond) // answered keepalives keep it open
	run(t, c, "true")

	f.freeze()
	start := time.Now()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	_, _, err := c.Run(ctx, "true")
	if err == nil || errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "keepalive") {
		t.Fatalf("Run on a dead network: %v, want the connection closed by the keepalive", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("the dead connection was noticed after %s", d)
	}
	t.Logf("noticed after %s: %v", time.Since(start), err)
	if err := c.Close(); err != nil {
		t.Fatalf("Close after the keepalive closed the connection: %v", err)
	}
}
