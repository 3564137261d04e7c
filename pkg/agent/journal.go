package agent

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"syscall"
)

// NewLogger is shipd's logger: JSON lines on w at level and above. When w is the
// journal's stream (systemd's JOURNAL_STREAM names it), each line starts with its
// syslog priority, "<3>" for an error to "<7>" for debug, which journald takes off and
// keeps as the entry's PRIORITY: `journalctl -u shipd -p warning` shows the warnings
// and errors, not every line at the default, info.
func NewLogger(w io.Writer, level slog.Leveler) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if !isJournal(w, os.Getenv("JOURNAL_STREAM")) {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	var h priorityHandler
	for i, p := range []string{"<7>", "<6>", "<4>", "<3>"} {
		h[i] = slog.NewJSONHandler(prefixWriter{prefix: []byte(p), w: w}, opts)
	}
	return slog.New(h)
}

// isJournal reports whether w is the file that JOURNAL_STREAM ("DEVICE:INODE") names.
func isJournal(w io.Writer, stream string) bool {
	f, ok := w.(*os.File)
	if !ok || stream == "" {
		return false
	}
	fi, err := f.Stat()
	if err != nil {
		return false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && fmt.Sprintf("%d:%d", st.Dev, st.Ino) == stream
}

// priorityHandler sends a record to the handler of its level: debug, info, warn and
// error, each writing with its priority.
type priorityHandler [4]slog.Handler

func (h priorityHandler) pick(l slog.Level) slog.Handler {
	switch {
	case l >= slog.LevelError:
		return h[3]
	case l >= slog.LevelWarn:
		return h[2]
	case l >= slog.LevelInfo:
		return h[1]
	}
	return h[0]
}

func (h priorityHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.pick(l).Enabled(ctx, l)
}

func (h priorityHandler) Handle(ctx context.Context, r slog.Record) error {
	return h.pick(r.Level).Handle(ctx, r)
}

func (h priorityHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	var out priorityHandler
	for i := range h {
		out[i] = h[i].WithAttrs(attrs)
	}
	return out
}

func (h priorityHandler) WithGroup(name string) slog.Handler {
	var out priorityHandler
	for i := range h {
		out[i] = h[i].WithGroup(name)
	}
	return out
}

// prefixWriter writes prefix and a line in one write, so that lines written at once
// by several handlers do not interleave.
type prefixWriter struct {
	prefix []byte
	w      io.Writer
}

func (p prefixWriter) Write(b []byte) (int, error) {
	line := make([]byte, 0, len(p.prefix)+len(b))
	line = append(append(line, p.prefix...), b...)
	if _, err := p.w.Write(line); err != nil {
		return 0, err
	}
	return len(b), nil
}
