package agent

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"syscall"
	"testing"
)

// journalFile is a file and the JOURNAL_STREAM that names it.
func journalFile(t *testing.T) (*os.File, string) {
	t.Helper()
	f, err := os.Create(t.TempDir() + "/journal")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	return f, fmt.Sprintf("%d:%d", st.Dev, st.Ino)
}

func TestNewLogger(t *testing.T) {
	f, stream := journalFile(t)
	for _, tc := range []struct {
		name, stream string
		want         []string
	}{
		{"the journal", stream, []string{`<7>{`, `<6>{`, `<4>{`, `<3>{`}},
		{"another stream", "1:2", []string{`{`, `{`, `{`, `{`}},
		{"no journal", "", []string{`{`, `{`, `{`, `{`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("JOURNAL_STREAM", tc.stream)
			if err := f.Truncate(0); err != nil {
				t.Fatal(err)
			}
			if _, err := f.Seek(0, 0); err != nil {
				t.Fatal(err)
			}
			log := NewLogger(f, slog.LevelDebug).With("app", "shop")
			log.Debug("d")
			log.Info("i")
			log.Warn("w")
			log.Error("e", "err", "boom")
			data, err := os.ReadFile(f.Name())
			if err != nil {
				t.Fatal(err)
			}
			lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
			if len(lines) != len(tc.want) {
				t.Fatalf("lines:\n%s", data)
			}
			for i, l := range lines {
				if !strings.HasPrefix(l, tc.want[i]) || !strings.Contains(l, `"app":"shop"`) {
					t.Errorf("line %d = %s, want it to start with %s and carry app", i, l, tc.want[i])
				}
			}
		})
	}
	var buf bytes.Buffer
	t.Setenv("JOURNAL_STREAM", stream)
	NewLogger(&buf, slog.LevelInfo).Error("e")
	if !strings.HasPrefix(buf.String(), "{") {
		t.Errorf("a writer that is not a file: %s, want a plain JSON line", buf.String())
	}
}
