//go:build unix

package proxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The test binary doubles as the successor process of the handover test.
func TestMain(m *testing.M) {
	if os.Getenv("SHIP_PROXY_TEST_CHILD") == "handover" {
		os.Exit(handoverChild(os.Stdin, os.Stdout))
	}
	os.Exit(m.Run())
}

// handoverChild is the new process: it takes the listener, serves and deploys, says it
// is ready, and when its stdin closes shuts down and says how many requests it served.
func handoverChild(stdin io.Reader, stdout io.Writer) int {
	in, err := Inherit()
	if err != nil {
		fmt.Fprintln(stdout, "error", err)
		return 1
	}
	ln, inherited, err := in.Listen(os.Getenv("SHIP_PROXY_TEST_LISTEN"))
	if err != nil || !inherited {
		fmt.Fprintln(stdout, "error: listener not inherited", err)
		return 1
	}
	// The target first: a request this process accepted before it had one would get 503.
	r := NewRoute("web", ln, RouteOptions{})
	ctx := context.Background()
	if err := r.Deploy(ctx, os.Getenv("SHIP_PROXY_TEST_TARGET"), fastCheck, time.Second); err != nil {
		fmt.Fprintln(stdout, "error", err)
		return 1
	}
	served := make(chan error, 1)
	go func() { served <- r.Serve() }()
	if err := Ready(); err != nil {
		fmt.Fprintln(stdout, "error", err)
		return 1
	}
	io.Copy(io.Discard, stdin)
	sctx, cancel := context.WithTimeout(ctx, patience)
	defer cancel()
	if err := r.Shutdown(sctx); err != nil {
		fmt.Fprintln(stdout, "error", err)
		return 1
	}
	<-served
	fmt.Fprintln(stdout, "served", r.Status().Requests)
	return 0
}

// A running route hands its socket to a new process (as shipd to its successor) while
// requests run: none is refused, and the new process takes over.
func TestHandoverToNewProcess(t *testing.T) {
	blue := newBackend(t, "blue")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	first := NewRoute("web", ln, RouteOptions{})
	served := make(chan error, 1)
	go func() { served <- first.Serve() }()
	deploy(t, first, blue.addr())

	l := startLoad(t, routeURL(first)+"/")
	waitServed(t, blue, 50) // through this process

	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=0", "SHIP_PROXY_TEST_CHILD=handover", "SHIP_PROXY_TEST_LISTEN="+ln.Addr().String(), "SHIP_PROXY_TEST_TARGET="+blue.addr())
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	if err := StartSuccessor(ctx, cmd, []net.Listener{ln}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	lines := bufio.NewScanner(stdout)

	if err := first.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-served; err != nil {
		t.Fatal(err)
	}
	waitServed(t, blue, 50) // through the new process: this one is shut down
	stopLoad(t, l)

	stdin.Close()
	if !lines.Scan() || !strings.HasPrefix(lines.Text(), "served ") {
		t.Fatalf("child: %q %v", lines.Text(), lines.Err())
	}
	n, _ := strconv.Atoi(strings.TrimPrefix(lines.Text(), "served "))
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	if n == 0 || first.Status().Requests == 0 {
		t.Errorf("requests: old process %d, new process %d; want both > 0", first.Status().Requests, n)
	}
}

func TestInheritIgnores(t *testing.T) {
	tests := []struct {
		name, fds, pid string
		wantErr        bool
	}{
		{"nothing passed", "", "", false},
		{"meant for another process", "1", "1", false},
		{"not a count", "x", strconv.Itoa(os.Getpid()), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.fds != "" {
				t.Setenv("LISTEN_FDS", tt.fds)
			}
			if tt.pid != "" {
				t.Setenv("LISTEN_PID", tt.pid)
			}
			in, err := Inherit()
			if (err != nil) != tt.wantErr {
				t.Fatalf("Inherit: %v", err)
			}
			if err == nil && in.Len() != 0 {
				t.Errorf("inherited %d listeners", in.Len())
			}
			if _, ok := os.LookupEnv("LISTEN_FDS"); ok {
				t.Error("LISTEN_FDS is still set")
			}
		})
	}
}

func TestInheritedListen(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	in := &Inherited{lns: []net.Listener{ln}}
	other, inherited, err := in.Listen("127.0.0.1:0")
	if err != nil || inherited {
		t.Fatalf("another address: inherited %v, %v", inherited, err)
	}
	other.Close()
	got, inherited, err := in.Listen(ln.Addr().String())
	if err != nil || !inherited || got != ln {
		t.Fatalf("its address: inherited %v, %v", inherited, err)
	}
	if in.Len() != 0 {
		t.Error("a taken listener is still counted")
	}
	if err := in.Close(); err != nil {
		t.Error(err)
	}
	ln.Close()
}

func TestSameTCPAddr(t *testing.T) {
	tests := []struct {
		want, got string
		same      bool
	}{
		{":80", "[::]:80", true},
		{":80", "0.0.0.0:80", true},
		{"0.0.0.0:80", "[::]:80", true},
		{":80", "127.0.0.1:80", false},
		{"127.0.0.1:80", "127.0.0.1:80", true},
		{"127.0.0.1:80", "127.0.0.2:80", false},
		{"127.0.0.1:80", "127.0.0.1:81", false},
		{"[::1]:80", "[::1]:80", true},
	}
	for _, tt := range tests {
		w, _ := net.ResolveTCPAddr("tcp", tt.want)
		g, _ := net.ResolveTCPAddr("tcp", tt.got)
		if got := sameTCPAddr(w, g); got != tt.same {
			t.Errorf("sameTCPAddr(%s, %s) = %v, want %v", tt.want, tt.got, got, tt.same)
		}
	}
}

func TestWithoutListenEnv(t *testing.T) {
	got := withoutListenEnv([]string{"PATH=/bin", "LISTEN_FDS=2", "LISTEN_PID=9", "LISTEN_FDNAMES=a:b", "LISTEN_FDSX=1"})
	if strings.Join(got, " ") != "PATH=/bin LISTEN_FDSX=1" {
		t.Errorf("got %v", got)
	}
}

func TestStartSuccessorFails(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	// A successor that exits without saying it is ready.
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=0")
	err = StartSuccessor(context.Background(), cmd, []net.Listener{ln})
	if err == nil || !strings.Contains(err.Error(), "exited before it was ready") {
		t.Errorf("got %v", err)
	}
	// The listener still serves here.
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
}
