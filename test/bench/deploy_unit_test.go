package bench

import (
	"bytes"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestCopyRenaming(t *testing.T) {
	renames := [][2]string{{"qzone0", "qzone3"}, {"qzfour0", "qzfour3"}}
	tests := []struct {
		name     string
		writes   []string // what the source writes, one write each
		want     string
		requests int64
	}{
		{"nothing to rename", []string{"GET /_ping HTTP/1.1\r\n\r\n"}, "GET /_ping HTTP/1.1\r\n\r\n", 1},
		{"in one read", []string{`GET /containers/json?label=project%3Dqzone0 HTTP/1.1` + "\r\n\r\n"},
			`GET /containers/json?label=project%3Dqzone3 HTTP/1.1` + "\r\n\r\n", 1},
		{"split across reads", []string{`{"Name":"qzf`, `our0_default","Labels":{"p":"qzo`, `ne0"}}`},
			`{"Name":"qzfour3_default","Labels":{"p":"qzone3"}}`, 0},
		{"request line split", []string{"POST /a HTT", "P/1.1\r\n\r\nGET /b HTTP/1.1\r\n", "\r\n"},
			"POST /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n", 2},
		// A message may end with what could start a name: it is sent all the same,
		// once nothing has followed for a moment.
		{"ends like a name", []string{"abc qz"}, "abc qz", 0},
		{"a name's start, then something else", []string{"qzon", "e1 qzone"}, "qzone1 qzone", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src, feed := net.Pipe()
			go func() {
				for _, w := range tt.writes {
					feed.Write([]byte(w))
					time.Sleep(time.Millisecond)
				}
			}()
			var out syncBuffer
			var requests atomic.Int64
			done := make(chan error, 1)
			go func() { done <- copyRenaming(&out, src, renames, &requests) }()
			deadline := time.Now().Add(5 * time.Second)
			for out.String() != tt.want && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond)
			}
			feed.Close()
			if err := <-done; err != nil && err != io.ErrClosedPipe {
				t.Fatalf("copyRenaming: %v", err)
			}
			if got := out.String(); got != tt.want {
				t.Errorf("copied %q, want %q", got, tt.want)
			}
			if got := requests.Load(); got != tt.requests {
				t.Errorf("counted %d requests, want %d", got, tt.requests)
			}
		})
	}
}

func TestPartial(t *testing.T) {
	marks := []string{"qzone0", " HTTP/1.1\r\n"}
	tests := []struct {
		in   string
		want int
	}{
		{"", 0},
		{"abc", 0},
		{"abc q", 1},
		{"abc qzone", 5},
		{"abc qzone0", 0}, // whole: nothing to wait for
		{"GET / HTTP/1.1\r", 10},
		{"GET / ", 1},
	}
	for _, tt := range tests {
		if got := partial([]byte(tt.in), marks); got != tt.want {
			t.Errorf("partial(%q) = %d, want %d", tt.in, got, tt.want)
		}
	}
}

func TestUnion(t *testing.T) {
	at := func(ms int) time.Time { return time.Unix(0, 0).Add(time.Duration(ms) * time.Millisecond) }
	tests := []struct {
		name  string
		spans []span
		want  time.Duration
	}{
		{"none", nil, 0},
		{"one", []span{{at(10), at(30)}}, 20 * time.Millisecond},
		{"apart", []span{{at(50), at(60)}, {at(10), at(30)}}, 30 * time.Millisecond},
		{"overlapping", []span{{at(10), at(30)}, {at(20), at(40)}}, 30 * time.Millisecond},
		{"nested", []span{{at(10), at(100)}, {at(20), at(40)}, {at(50), at(60)}}, 90 * time.Millisecond},
		{"touching", []span{{at(10), at(20)}, {at(20), at(30)}}, 20 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := union(tt.spans); got != tt.want {
				t.Errorf("union = %s, want %s", got, tt.want)
			}
		})
	}
}

// syncBuffer is a bytes.Buffer one goroutine writes while another reads it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
