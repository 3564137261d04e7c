package testenv

import (
	"bytes"
	"strings"
	"sync"
	"testing"
	"time"
)

// Log is what sshd has written to its stderr so far (LogLevel VERBOSE).
func (s *SSHServer) Log() string {
	return s.log.String()
}

// logWaitLimit bounds WaitLog: a backstop for an sshd that never logs the line, far
// above any wait for a line that comes.
const logWaitLimit = time.Minute

// WaitLog waits until sshd has logged, at or after byte offset from of Log, a whole
// line that match accepts, and returns the log from offset from through that line.
// It wakes on each write of sshd's, not on a clock; it fails the test if the test's
// context ends or no such line comes within a minute.
func (s *SSHServer) WaitLog(t testing.TB, from int, match func(line string) bool) string {
	t.Helper()
	limit := time.NewTimer(Scale(logWaitLimit))
	defer limit.Stop()
	for {
		text, grew := s.log.snapshot()
		if from > len(text) {
			from = len(text)
		}
		rest := text[from:]
		// Only whole lines: sshd may be in the middle of writing the last one.
		lines := strings.SplitAfter(rest, "\n")
		n := 0
		for _, line := range lines {
			if !strings.HasSuffix(line, "\n") {
				break
			}
			n += len(line)
			// sshd -e ends its lines with \r\n.
			if match(strings.TrimRight(line, "\r\n")) {
				return rest[:n]
			}
		}
		select {
		case <-grew:
		case <-t.Context().Done():
			t.Fatalf("sshd on %s: the test ended before the line came; sshd logged:\n%s", s.Addr, rest)
		case <-limit.C:
			t.Fatalf("sshd on %s: no such line within %s; sshd logged:\n%s", s.Addr, Scale(logWaitLimit), rest)
		}
	}
}

// lockedBuffer is a bytes.Buffer that a process writes to while a test reads it.
type lockedBuffer struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	grew chan struct{} // closed by the next Write
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.grew != nil {
		close(b.grew)
		b.grew = nil
	}
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// snapshot is the text so far and a channel closed when more is written.
func (b *lockedBuffer) snapshot() (string, <-chan struct{}) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.grew == nil {
		b.grew = make(chan struct{})
	}
	return b.buf.String(), b.grew
}
