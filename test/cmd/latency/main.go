// Command latency is a TCP relay that adds a fixed delay each way and counts the
// round trips its clients make: a network link to a server far away, for the WAN
// benchmark (make bench-wan), on a kernel without netem. It listens on -listen,
// forwards each connection to -to, holds every chunk of data -delay before passing it
// on (order kept, each direction on its own), prints "ready ADDR PID" once it listens,
// and when a connection ends appends one JSON line to -out:
//
//	latency -listen 127.0.0.1:0 -to 127.0.0.2:22 -delay 25ms -out relay.jsonl
//
// A round trip is a turn of the conversation as the client sees it: the client sends
// after it has received something since its last send (its first send is one too).
// A client that pipelines requests sends several before the first answer arrives, and
// makes fewer turns; one that waits for each answer makes one turn per request. Data
// the client sends without waiting for anything (an SSH window adjust after a reply)
// counts as a turn as well, so the count is an upper bound of the waits.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"
)

// Conn is the line appended to -out for one connection.
type Conn struct {
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
	// Turns are the client's round trips (see the package comment).
	Turns int   `json:"turns"`
	Up    int64 `json:"up"`   // bytes from the client
	Down  int64 `json:"down"` // bytes to the client
}

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "latency:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("latency", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:0", "address to listen on")
	to := fs.String("to", "", "address to forward to (required)")
	delay := fs.Duration("delay", 0, "delay added to each direction")
	out := fs.String("out", "", "file to append one JSON line per connection to (required)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *to == "" || *out == "" || *delay < 0 {
		return errors.New("usage: latency -to HOST:PORT -out FILE [-listen ADDR] [-delay DURATION]")
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	r := &relay{to: *to, delay: *delay, out: *out}
	fmt.Printf("ready %s %d\n", ln.Addr(), os.Getpid())
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-stop
		ln.Close()
	}()
	err = r.serve(ln)
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

type relay struct {
	to    string
	delay time.Duration
	out   string
	mu    sync.Mutex // one line at a time in out
}

func (r *relay) serve(ln net.Listener) error {
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go r.handle(c.(*net.TCPConn))
	}
}

// handle relays one connection and records it.
func (r *relay) handle(client *net.TCPConn) {
	defer client.Close()
	s := &stats{conn: Conn{Start: time.Now().UTC()}}
	srv, err := net.Dial("tcp", r.to)
	if err != nil {
		fmt.Fprintln(os.Stderr, "latency:", err)
		return
	}
	server := srv.(*net.TCPConn)
	defer server.Close()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); r.pump(client, server, s, true) }()
	go func() { defer wg.Done(); r.pump(server, client, s, false) }()
	wg.Wait()
	s.conn.End = time.Now().UTC()
	if err := r.record(s.conn); err != nil {
		fmt.Fprintln(os.Stderr, "latency:", err)
	}
}

// stats is one connection's count, from both pumps.
type stats struct {
	mu   sync.Mutex
	conn Conn
	// received: the client has been sent data since its last send.
	received bool
}

// sent notes n bytes from the client, read the moment it sent them.
func (s *stats) sent(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn.Up == 0 || s.received {
		s.conn.Turns++
	}
	s.received = false
	s.conn.Up += int64(n)
}

// delivered notes n bytes written to the client.
func (s *stats) delivered(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.received = true
	s.conn.Down += int64(n)
}

type chunk struct {
	data []byte
	due  time.Time
}

// pump copies from src to dst, each chunk delay after it was read, until src ends;
// then it closes dst's writing side (or both, on an error).
func (r *relay) pump(src, dst *net.TCPConn, s *stats, up bool) {
	q := make(chan chunk, 1024)
	go func() {
		defer close(q)
		for {
			buf := make([]byte, 32<<10)
			n, err := src.Read(buf)
			if n > 0 {
				if up {
					s.sent(n)
				}
				q <- chunk{buf[:n], time.Now().Add(r.delay)}
			}
			if err != nil {
				return
			}
		}
	}()
	failed := false
	for c := range q {
		if failed {
			continue // drain, so that the reader is not stuck
		}
		if d := time.Until(c.due); d > 0 {
			time.Sleep(d)
		}
		if !up {
			// Noted before the write: the client may answer before Write returns.
			s.delivered(len(c.data))
		}
		if _, err := dst.Write(c.data); err != nil {
			failed = true
			src.Close()
			continue
		}
	}
	if failed {
		dst.Close()
		return
	}
	_ = dst.CloseWrite()
}

func (r *relay) record(c Conn) error {
	line, err := json.Marshal(c)
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	f, err := os.OpenFile(r.out, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(append(line, '\n'))
	return errors.Join(err, f.Close())
}
