package term

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

func testIO(in string) (*IOStreams, *bytes.Buffer, *bytes.Buffer) {
	var out, errOut bytes.Buffer
	return &IOStreams{In: strings.NewReader(in), Out: &out, ErrOut: &errOut, Getenv: func(string) string { return "" }}, &out, &errOut
}

func TestPrinter(t *testing.T) {
	io, out, errOut := testIO("")
	p := NewPrinter(io, false)
	p.Service("worker")
	p.LogLine("web", "hello\r")
	p.Prefixed("log", nil, "web1 db", "ready")
	p.Event("x", map[string]any{"a": 1}, "==> done")
	p.Warn("careful")
	p.WarnLoud("loud")
	if want := "web    | hello\nweb1 db | ready\n==> done\n"; out.String() != want {
		t.Errorf("stdout:\n%q\nwant\n%q", out, want)
	}
	if errOut.String() != "warning: careful\nwarning: loud\n" {
		t.Errorf("stderr: %q", errOut)
	}

	io, out, errOut = testIO("")
	p = NewPrinter(io, true)
	p.Event("x", map[string]any{"a": 1}, "==> done")
	p.WarnLoud("loud")
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("stdout: %q", out)
	}
	var ev map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &ev); err != nil || ev["event"] != "x" || ev["a"] != 1.0 || ev["time"] == nil {
		t.Errorf("event %v, %v", ev, err)
	}
	if err := json.Unmarshal([]byte(lines[1]), &ev); err != nil || ev["event"] != "warning" || ev["msg"] != "loud" {
		t.Errorf("warning %v, %v", ev, err)
	}
	if errOut.String() != "warning: loud\n" {
		t.Errorf("a loud warning is on stderr with JSON too: %q", errOut)
	}
}

func TestLive(t *testing.T) {
	io, out, _ := testIO("")
	l := NewLive(io)
	l.Set("a", "step 1", time.Time{})
	l.Set("b", "step 2", time.Time{})
	l.Above(func() { io.Out.Write([]byte("--> finished\n")) })
	l.Remove("a")
	l.Close()
	s := out.String()
	for _, want := range []string{"step 1  ", "step 2  ", cursorUpClear(2) + "--> finished\n", "\x1b[1A\r\x1b[J"} {
		if !strings.Contains(s, want) {
			t.Errorf("output lacks %q:\n%q", want, s)
		}
	}
	// Closed: the region is cleared, and what remains above it is the finished line.
	if !strings.HasSuffix(s, cursorUpClear(1)) {
		t.Errorf("not cleared at the end:\n%q", s)
	}
	if got := truncate("abcdefghij", 6); got != "abcde…" {
		t.Errorf("truncate: %q", got)
	}
}

func TestAsk(t *testing.T) {
	io, _, errOut := testIO("yes\n")
	if ok, err := io.AskYesNo(context.Background(), "Go?"); !ok || err != nil || errOut.String() != "? Go? [y/N] " {
		t.Errorf("yes: %v, %v, %q", ok, err, errOut)
	}
	io, _, _ = testIO("\n")
	if ok, _ := io.AskYesNo(context.Background(), "Go?"); ok {
		t.Error("an empty answer is yes")
	}
	// Ctrl-C while it waits: In never answers.
	r, w := ioPipe()
	defer w.Close()
	io.In = r
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := io.AskYesNo(ctx, "Go?"); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}

	io, _, errOut = testIO("Bad\nshop\n")
	a := io.Asker()
	check := func(s string) error {
		if s != strings.ToLower(s) {
			return errors.New("lowercase, please")
		}
		return nil
	}
	if got := a.Ask("App", "def", check); got != "shop" || !strings.Contains(errOut.String(), "  lowercase, please\n") {
		t.Errorf("Ask = %q; stderr %q", got, errOut)
	}
	if got := a.Ask("Registry", "r:5000", check); got != "r:5000" {
		t.Errorf("at the end of input: %q", got)
	}
}

func TestPassphrase(t *testing.T) {
	io, _, errOut := testIO("s3cret\r\n")
	got, err := io.Passphrase("~/.ssh/id_ed25519")
	if err != nil || string(got) != "s3cret" || errOut.String() != "Passphrase for ~/.ssh/id_ed25519: \n" {
		t.Errorf("%q, %v; stderr %q", got, err, errOut)
	}
	io, _, _ = testIO("")
	if _, err := io.Passphrase("k"); err == nil {
		t.Error("no input: no error")
	}
}

func TestCountdown(t *testing.T) {
	io, _, errOut := testIO("")
	if err := io.Countdown(context.Background(), time.Millisecond, false); err != nil || errOut.Len() != 0 {
		t.Errorf("not live: %v, %q", err, errOut)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := io.Countdown(ctx, time.Hour, true); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
	if s := errOut.String(); !strings.HasPrefix(s, clearLine+"starting in 3600s (Ctrl-C cancels)") || !strings.HasSuffix(s, clearLine) {
		t.Errorf("live: %q", s)
	}
}

// ioPipe is an In that answers only when written to.
func ioPipe() (*pipeReader, *pipeReader) {
	r := &pipeReader{ch: make(chan struct{})}
	return r, r
}

type pipeReader struct{ ch chan struct{} }

func (p *pipeReader) Read([]byte) (int, error) { <-p.ch; return 0, errors.New("closed") }
func (p *pipeReader) Close() error             { close(p.ch); return nil }
