package bench

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// engineProxy makes one Docker engine look like several: each benchmark "host" reaches
// the engine through a proxy of its own, on a unix socket at the path every host's
// docker_socket names (each sshd sees its own, in its mount namespace). The proxy
// renames the compose projects as the bytes pass, with names of the same length, so
// that no HTTP framing changes: towards the engine "qzone0" becomes "qzone3" on host
// 3, and back again in the engine's answers. Four hosts deploying the app "qzone0"
// are then four projects on the one engine, as they would be on four machines.
//
// It also counts what goes through: connections (one per SSH channel to the socket)
// and HTTP requests (each one round trip to the engine).
type engineProxy struct {
	ln      net.Listener
	engine  string      // the engine's socket
	renames [][2]string // what the client says, what the engine sees

	conns    atomic.Int64
	requests atomic.Int64
	wg       sync.WaitGroup
	mu       sync.Mutex
	open     map[net.Conn]struct{}
}

// requestMark ends every HTTP/1.1 request line, and nothing else a Docker client sends.
const requestMark = " HTTP/1.1\r\n"

// heldFor is how long a copy holds back bytes that may be the start of a name split
// across two reads before it sends them as they are.
const heldFor = 20 * time.Millisecond

func startEngineProxy(socket, engine string, renames [][2]string) (*engineProxy, error) {
	for _, r := range renames {
		if len(r[0]) != len(r[1]) {
			return nil, errors.New("engine proxy: renames must keep the length")
		}
	}
	ln, err := net.Listen("unix", socket)
	if err != nil {
		return nil, err
	}
	p := &engineProxy{ln: ln, engine: engine, renames: renames, open: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.serve()
	return p, nil
}

// engineSocket is the engine's unix socket: DOCKER_HOST's when it names one.
func engineSocket() string {
	if h, ok := strings.CutPrefix(os.Getenv("DOCKER_HOST"), "unix://"); ok {
		return h
	}
	return "/var/run/docker.sock"
}

func (p *engineProxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.conns.Add(1)
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.handle(c)
		}()
	}
}

func (p *engineProxy) track(c net.Conn, on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if on {
		p.open[c] = struct{}{}
	} else {
		delete(p.open, c)
	}
}

func (p *engineProxy) handle(client net.Conn) {
	defer client.Close()
	engine, err := net.Dial("unix", p.engine)
	if err != nil {
		return
	}
	defer engine.Close()
	p.track(client, true)
	p.track(engine, true)
	defer p.track(client, false)
	defer p.track(engine, false)

	back := make([][2]string, len(p.renames))
	for i, r := range p.renames {
		back[i] = [2]string{r[1], r[0]}
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		_ = copyRenaming(engine, client, p.renames, &p.requests)
		closeWrite(engine)
	}()
	go func() {
		defer wg.Done()
		_ = copyRenaming(client, engine, back, nil)
		closeWrite(client)
	}()
	wg.Wait()
}

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
}

// Close stops the proxy and the connections through it.
func (p *engineProxy) Close() {
	p.ln.Close()
	p.mu.Lock()
	for c := range p.open {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// copyRenaming copies src to dst, replacing each renames[i][0] with renames[i][1],
// also when a name is split across two reads; with requests set, it counts the
// request lines that go by.
func copyRenaming(dst io.Writer, src net.Conn, renames [][2]string, requests *atomic.Int64) error {
	marks := make([]string, 0, len(renames)+1)
	for _, r := range renames {
		marks = append(marks, r[0])
	}
	if requests != nil {
		marks = append(marks, requestMark)
	}
	buf := make([]byte, 0, 64<<10)
	chunk := make([]byte, 32<<10)
	for {
		n, err := src.Read(chunk)
		timedOut := false
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			timedOut, err = true, nil
		}
		buf = append(buf, chunk[:n]...)
		for _, r := range renames {
			rename(buf, r[0], r[1])
		}
		keep := 0
		if err == nil && !timedOut {
			keep = partial(buf, marks)
		}
		out := buf[:len(buf)-keep]
		if requests != nil {
			requests.Add(int64(bytes.Count(out, []byte(requestMark))))
		}
		if len(out) > 0 {
			if _, werr := dst.Write(out); werr != nil {
				return werr
			}
		}
		buf = append(buf[:0], buf[len(buf)-keep:]...)
		// Bytes held back are sent as they are if nothing follows soon: a message
		// may well end with what looks like the start of a name.
		if keep > 0 {
			_ = src.SetReadDeadline(time.Now().Add(heldFor))
		} else {
			_ = src.SetReadDeadline(time.Time{})
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}

// rename replaces every old in b with new, of the same length, in place.
func rename(b []byte, old, new string) {
	for i := 0; ; {
		j := bytes.Index(b[i:], []byte(old))
		if j < 0 {
			return
		}
		copy(b[i+j:], new)
		i += j + len(old)
	}
}

// partial is the length of the longest end of b that is the start (not the whole)
// of one of marks.
func partial(b []byte, marks []string) int {
	best := 0
	for _, m := range marks {
		for n := min(len(m)-1, len(b)); n > best; n-- {
			if bytes.HasSuffix(b, []byte(m[:n])) {
				best = n
				break
			}
		}
	}
	return best
}
