package proxy

import (
	"bufio"
	"context"
	"crypto/sha1"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// backend is a real HTTP server on 127.0.0.1 standing in for a container.
type backend struct {
	name   string
	srv    *httptest.Server
	served atomic.Int64 // requests other than health checks
	checks atomic.Int64 // requests of /up
	health atomic.Int32 // status of /up; 0 means 200
	slow   chan struct{}
	// arrived gets a token for each /slow request as it arrives (up to its buffer).
	arrived chan struct{}
}

func (b *backend) addr() string { return b.srv.Listener.Addr().String() }

// newBackend starts a backend answering:
//
//	/up         health: 200, or b.health
//	/           its name
//	/slow       after b.slow is closed (or the request is cancelled); b.arrived says it came
//	/headers    the request's Host and X-Forwarded-* as JSON
//	/ws         a WebSocket echo of text frames
func newBackend(t *testing.T, name string) *backend {
	t.Helper()
	b := &backend{name: name, slow: make(chan struct{}), arrived: make(chan struct{}, 16)}
	mux := http.NewServeMux()
	mux.HandleFunc("/up", func(w http.ResponseWriter, r *http.Request) {
		b.checks.Add(1)
		if code := b.health.Load(); code != 0 {
			w.WriteHeader(int(code))
			return
		}
		io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		b.served.Add(1)
		io.WriteString(w, name)
	})
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		b.served.Add(1)
		select {
		case b.arrived <- struct{}{}:
		default:
		}
		select {
		case <-b.slow:
			io.WriteString(w, name+" slow done")
		case <-r.Context().Done():
		}
	})
	mux.HandleFunc("/headers", func(w http.ResponseWriter, r *http.Request) {
		b.served.Add(1)
		json.NewEncoder(w).Encode(map[string]string{
			"host":  r.Host,
			"xff":   r.Header.Get("X-Forwarded-For"),
			"xfh":   r.Header.Get("X-Forwarded-Host"),
			"xfp":   r.Header.Get("X-Forwarded-Proto"),
			"xri":   r.Header.Get("X-Real-IP"),
			"agent": r.Header.Get("User-Agent"),
		})
	})
	mux.HandleFunc("/ws", func(w http.ResponseWriter, r *http.Request) {
		b.served.Add(1)
		wsEcho(w, r)
	})
	b.srv = httptest.NewServer(mux)
	t.Cleanup(func() {
		select {
		case <-b.slow:
		default:
			close(b.slow)
		}
		b.srv.Close()
	})
	return b
}

// startRoute serves a new route on 127.0.0.1 and shuts it down at the end of the test.
func startRoute(t *testing.T, o RouteOptions) *Route {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return serveRoute(t, ln, o)
}

func serveRoute(t *testing.T, ln net.Listener, o RouteOptions) *Route {
	t.Helper()
	r := NewRoute("web", ln, o)
	serve(t, r)
	return r
}

// server is what serve runs: a Route or a Listener.
type server interface {
	Serve() error
	Shutdown(ctx context.Context) error
}

// serve serves s and shuts it down at the end of the test.
func serve(t *testing.T, s server) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- s.Serve() }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), patience)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
}

// patience bounds a wait for something that happens unless the code is broken: it only
// keeps a hang from lasting until the test binary's own timeout, and is never the event
// a test waits for, so a slow machine does not fail a test.
const patience = 2 * time.Minute

// fastCheck is a health check that does not keep a test waiting: it retries often, and
// passes as soon as the target answers, however slowly the machine runs.
var fastCheck = HealthCheck{Path: "/up", Interval: 20 * time.Millisecond, Timeout: patience, Deadline: patience}

func deploy(t *testing.T, r *Route, addr string) {
	t.Helper()
	if err := r.Deploy(context.Background(), addr, fastCheck, patience); err != nil {
		t.Fatal(err)
	}
}

func routeURL(r *Route) string { return "http://" + r.Listener().Addr().String() }

// get returns the status and body of a GET.
func get(t *testing.T, url string) (int, string) {
	t.Helper()
	return getHost(t, url, "")
}

// getHost is get with the Host header host ("": the URL's).
func getHost(t *testing.T, url, host string) (int, string) {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if host != "" {
		req.Host = host
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

// A minimal WebSocket (RFC 6455): the handshake and unfragmented text frames up to 125
// bytes, enough to see frames cross the proxy both ways.

const wsGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

func wsAccept(key string) string {
	h := sha1.Sum([]byte(key + wsGUID))
	return base64.StdEncoding.EncodeToString(h[:])
}

func wsEcho(w http.ResponseWriter, r *http.Request) {
	if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
		http.Error(w, "not a websocket request", http.StatusBadRequest)
		return
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n", wsAccept(r.Header.Get("Sec-WebSocket-Key")))
	if brw.Flush() != nil {
		return
	}
	for {
		msg, err := wsRead(brw.Reader)
		if err != nil {
			return
		}
		if wsWrite(conn, "echo: "+msg, false) != nil {
			return
		}
	}
}

// wsDial opens a WebSocket to url (http://host/path) and checks the handshake.
func wsDial(t *testing.T, url string) (net.Conn, *bufio.Reader) {
	t.Helper()
	host := strings.TrimPrefix(url, "http://")
	path := "/"
	if i := strings.Index(host, "/"); i >= 0 {
		host, path = host[:i], host[i:]
	}
	conn, err := net.Dial("tcp", host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	key := base64.StdEncoding.EncodeToString([]byte("0123456789abcdef"))
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n", path, host, key)
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("handshake: status %d, want 101", resp.StatusCode)
	}
	if got := resp.Header.Get("Sec-WebSocket-Accept"); got != wsAccept(key) {
		t.Fatalf("handshake: Sec-WebSocket-Accept %q, want %q", got, wsAccept(key))
	}
	return conn, br
}

func wsWrite(w io.Writer, msg string, mask bool) error {
	if len(msg) > 125 {
		return errors.New("frame too long for this test")
	}
	frame := []byte{0x81, byte(len(msg))} // FIN, text
	payload := []byte(msg)
	if mask {
		key := []byte{1, 2, 3, 4}
		frame[1] |= 0x80
		frame = append(frame, key...)
		for i := range payload {
			payload[i] ^= key[i%4]
		}
	}
	_, err := w.Write(append(frame, payload...))
	return err
}

func wsRead(r io.Reader) (string, error) {
	var hdr [2]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return "", err
	}
	if hdr[0]&0x0f == 0x8 {
		return "", io.EOF // close frame
	}
	n := int(hdr[1] & 0x7f)
	if n > 125 {
		return "", errors.New("frame too long for this test")
	}
	var key [4]byte
	masked := hdr[1]&0x80 != 0
	if masked {
		if _, err := io.ReadFull(r, key[:]); err != nil {
			return "", err
		}
	}
	payload := make([]byte, n)
	if _, err := io.ReadFull(r, payload); err != nil {
		return "", err
	}
	if masked {
		for i := range payload {
			payload[i] ^= key[i%4]
		}
	}
	return string(payload), nil
}
