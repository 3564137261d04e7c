package testhost

import (
	"bufio"
	"net"
	"testing"
)

// echo serves one line back per connection on 127.0.0.1 until the test ends.
func echo(t *testing.T) string {
	t.Helper()
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
				line, _ := bufio.NewReader(c).ReadString('\n')
				c.Write([]byte("echo " + line))
			}()
		}
	}()
	return ln.Addr().String()
}

func TestForward(t *testing.T) {
	addr := forward(t, "127.0.0.1:0", echo(t))
	for _, msg := range []string{"one\n", "two\n"} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		got, err := bufio.NewReader(c).ReadString('\n')
		c.Close()
		if err != nil || got != "echo "+msg {
			t.Fatalf("through the forwarder: %q, %v; want %q", got, err, "echo "+msg)
		}
	}
}

func TestForwardStopsWithTheTest(t *testing.T) {
	var addr string
	t.Run("inner", func(t *testing.T) {
		addr = forward(t, "127.0.0.1:0", echo(t))
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		// Left open: the cleanup closes it and waits for its relay.
		t.Cleanup(func() { c.Close() })
	})
	if c, err := net.Dial("tcp", addr); err == nil {
		c.Close()
		t.Fatalf("the forwarder on %s still accepts after its test ended", addr)
	}
}
