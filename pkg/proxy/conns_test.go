package proxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
)

// A connection accepted before Shutdown whose request comes after Shutdown began (as
// in a handover) is answered, not closed unanswered.
func TestShutdownAnswersAcceptedConnection(t *testing.T) {
	blue := newBackend(t, "blue")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := NewRoute("web", ln, RouteOptions{})
	deploy(t, r, blue.addr())
	served := make(chan error, 1)
	go func() { served <- r.Serve() }()

	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	waitFor(t, "the route to accept the connection", func() bool {
		r.l.conns.mu.Lock()
		defer r.l.conns.mu.Unlock()
		return len(r.l.conns.busy) == 1
	})
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	shut := make(chan error, 1)
	go func() { shut <- r.Shutdown(ctx) }()
	if err := <-served; err != nil { // the accept loop is over: the shutdown has begun
		t.Fatal(err)
	}

	fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("the accepted connection got no answer: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "blue" || !resp.Close {
		t.Errorf("got %d %q (close %v), want 200 blue and the connection closed after it", resp.StatusCode, body, resp.Close)
	}
	if err := <-shut; err != nil {
		t.Fatal(err)
	}
}
