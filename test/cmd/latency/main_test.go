package main

import (
	"bufio"
	"encoding/json"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// echo is a server that answers each line with the line.
func echo(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String()
}

// relayTo starts a relay to addr with delay; it returns its address and its log.
func relayTo(t *testing.T, addr string, delay time.Duration) (string, string) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	out := filepath.Join(t.TempDir(), "relay.jsonl")
	r := &relay{to: addr, delay: delay, out: out}
	go r.serve(ln)
	return ln.Addr().String(), out
}

// conns waits for n lines in out and returns them.
func conns(t *testing.T, out string, n int) []Conn {
	deadline := time.Now().Add(10 * time.Second)
	for {
		var cs []Conn
		if f, err := os.Open(out); err == nil {
			sc := bufio.NewScanner(f)
			for sc.Scan() {
				var c Conn
				if err := json.Unmarshal(sc.Bytes(), &c); err != nil {
					t.Fatalf("%s: %q: %v", out, sc.Text(), err)
				}
				cs = append(cs, c)
			}
			f.Close()
		}
		if len(cs) >= n {
			return cs
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d connection lines in %s after 10s, want %d", len(cs), out, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A client that waits for each answer makes one turn per request, each costing
// twice the delay; one that sends all its requests first makes one.
func TestRelayTurnsAndDelay(t *testing.T) {
	const delay = 40 * time.Millisecond
	addr, out := relayTo(t, echo(t), delay)

	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(c)
	start := time.Now()
	for range 3 {
		if _, err := c.Write([]byte("ping\n")); err != nil {
			t.Fatal(err)
		}
		line, err := r.ReadString('\n')
		if err != nil || line != "ping\n" {
			t.Fatalf("answer %q, %v; want ping", line, err)
		}
	}
	waited := time.Since(start)
	if waited < 3*2*delay {
		t.Errorf("3 waited-for requests took %s, want at least %s (the delay each way)", waited, 3*2*delay)
	}
	c.Close()

	// Pipelined: three requests in one go, then the three answers.
	c, err = net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("a\nb\nc\n")); err != nil {
		t.Fatal(err)
	}
	r = bufio.NewReader(c)
	for _, want := range []string{"a\n", "b\n", "c\n"} {
		if line, err := r.ReadString('\n'); err != nil || line != want {
			t.Fatalf("answer %q, %v; want %q", line, err, want)
		}
	}
	c.Close()

	cs := conns(t, out, 2)
	if cs[0].Turns != 3 || cs[0].Up != 15 || cs[0].Down != 15 {
		t.Errorf("waited-for requests: %+v, want 3 turns and 15 bytes each way", cs[0])
	}
	if cs[1].Turns != 1 || cs[1].Up != 6 || cs[1].Down != 6 {
		t.Errorf("pipelined requests: %+v, want 1 turn and 6 bytes each way", cs[1])
	}
}
