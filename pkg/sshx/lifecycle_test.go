package sshx_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
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

func TestDocker(t *testing.T) {
	t.Parallel()
	testenv.Docker(t) // skips (fails in CI) without an engine
	sock := testenv.DockerSocket(t)
	s := testenv.SSHD(t)
	c := dial(t, dest(s), options(t, s))
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
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
		if !strings.Contains(err.Error(), "add the user to the docker group") || !strings.Contains(err.Error(), "set docker_socket") {
			t.Fatalf("err = %v, want the two ways out: the docker group, docker_socket", err)
		}
		_, err = c.Docker(ctx, "/nonexistent/docker.sock")
		if err == nil || !strings.Contains(err.Error(), "Docker engine") {
			t.Fatalf("err = %v, want the engine unreachable", err)
		}
	})
}

// settle waits for the number of goroutines to fall to at most want. The limit is a
// backstop far above the moment they end, not a window the test must hit.
func settle(t *testing.T, want int) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
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
		runtime.Gosched()
		time.Sleep(10 * time.Millisecond)
	}
}

// keepalives waits for sshd to log count keepalive requests (LogLevel DEBUG1) after
// offset: the client's keepalive loop and its request goroutines have run.
func keepalives(t *testing.T, s *testenv.SSHServer, offset, count int) {
	t.Helper()
	seen := 0
	s.WaitLog(t, offset, func(line string) bool {
		if strings.Contains(line, "rtype keepalive@openssh.com") {
			seen++
		}
		return seen == count
	})
}

// TestTeardown is not parallel: it counts the process's goroutines.
func TestTeardown(t *testing.T) {
	s := testenv.SSHD(t, testenv.SSHDSetting("LogLevel", "DEBUG1"))
	o := options(t, s)
	// Short enough for a few keepalives per subtest, long enough that a loaded
	// machine never misses three in a row (which would close the connection).
	o.Keepalive = 250 * time.Millisecond
	use := func(t *testing.T, c *sshx.Client) {
		t.Helper()
		offset := len(s.Log())
		run(t, c, "true")
		if err := c.WriteFileAtomic(t.Context(), t.TempDir()+"/f", []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		keepalives(t, s, offset, 2)
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
		// The cancel closes the Client, and with it the SFTP session.
		closed := make(chan error, 1)
		go func() { closed <- sc.Wait() }()
		select {
		case <-closed:
		case <-t.Context().Done():
			t.Fatal("SFTP still open when the test ended, after the context was cancelled")
		}
		if _, err := sc.RealPath(t.Context(), "."); err == nil {
			t.Fatal("SFTP still works after the context was cancelled")
		}
		settle(t, base)
		c.Close()
	})

	t.Run("cancel while dialling", func(t *testing.T) {
		base := runtime.NumGoroutine()
		addr, accepted := blackHole(t)
		o := o
		o.DialTimeout = time.Hour // only the cancel can end this dial
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go func() {
			select {
			case <-accepted: // the dial is under way, waiting for a banner
				cancel()
			case <-ctx.Done():
			}
		}()
		_, err := sshx.Dial(ctx, addr, o)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want cancelled", err)
		}
		settle(t, base+1) // the black hole's accept loop
	})

	t.Run("dial timeout", func(t *testing.T) {
		addr, _ := blackHole(t)
		o := o
		o.DialTimeout = 300 * time.Millisecond
		start := time.Now()
		_, err := sshx.Dial(context.Background(), addr, o)
		if err == nil || !strings.Contains(err.Error(), "within") || !strings.Contains(err.Error(), addr) {
			t.Fatalf("err = %v, want a timeout naming the host", err)
		}
		// The black hole never answers: only the timeout ends the dial, and not early.
		if d := time.Since(start); d < o.DialTimeout {
			t.Fatalf("Dial gave up after %s, before its %s timeout", d, o.DialTimeout)
		}
	})
}

// blackHole is an address that accepts TCP connections and never says a word; the
// channel gets a value for each connection accepted (dropped when nobody waits).
func blackHole(t *testing.T) (string, <-chan struct{}) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	done := make(chan struct{})
	accepted := make(chan struct{}, 1)
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
			select {
			case accepted <- struct{}{}:
			default:
			}
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
	return l.Addr().String(), accepted
}

// relay is a TCP proxy to the address to: pipe copies each connection it accepts,
// both ways (up: from the client towards to). It returns the proxy's address; the
// listener and every connection are closed at cleanup, and the copies waited for.
func relay(t *testing.T, to string, pipe func(dst, src net.Conn, up bool)) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
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
			mu.Lock()
			conns = append(conns, in, out)
			mu.Unlock()
			wg.Add(2)
			go func() { defer wg.Done(); pipe(out, in, true) }()
			go func() { defer wg.Done(); pipe(in, out, false) }()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return l.Addr().String()
}

// dialThrough dials s through the proxy at addr, which a known_hosts file of its own
// names with s's host key.
func dialThrough(t *testing.T, s *testenv.SSHServer, addr string, o sshx.Options) *sshx.Client {
	t.Helper()
	known := filepath.Join(t.TempDir(), "known_hosts")
	line := knownhosts.Line([]string{knownhosts.Normalize(addr)}, s.HostKey) + "\n"
	if err := os.WriteFile(known, []byte(line), 0o600); err != nil {
		t.Fatal(err)
	}
	o.KnownHostsFiles = []string{known}
	return dial(t, s.User+"@"+addr, o)
}

// freezer is a TCP proxy to an address that can stop passing bytes, as a network
// that silently drops everything would.
type freezer struct {
	addr   string
	mu     sync.Mutex
	frozen bool
}

func newFreezer(t *testing.T, to string) *freezer {
	t.Helper()
	f := &freezer{}
	f.addr = relay(t, to, func(dst, src net.Conn, _ bool) { f.pipe(dst, src) })
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
	s := testenv.SSHD(t, testenv.SSHDSetting("LogLevel", "DEBUG1"))
	f := newFreezer(t, s.Addr)
	o := options(t, s)
	// Three missed in a row close the connection: 750 ms without an answer, which
	// a loaded machine does not reach while the network works.
	o.Keepalive = 250 * time.Millisecond
	offset := len(s.Log())
	c := dialThrough(t, s, f.addr, o)
	run(t, c, "true")
	keepalives(t, s, offset, 3) // answered keepalives keep it open
	run(t, c, "true")

	f.freeze()
	start := time.Now()
	// Only the keepalives can end this Run: the network drops everything, so no
	// answer and no error come from the host.
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	_, _, err := c.Run(ctx, "true")
	if err == nil || errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "keepalive") {
		t.Fatalf("Run on a dead network: %v, want the connection closed by the keepalive", err)
	}
	t.Logf("noticed after %s: %v", time.Since(start), err)
	if err := c.Close(); err != nil {
		t.Fatalf("Close after the keepalive closed the connection: %v", err)
	}
}
