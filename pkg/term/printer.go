package term

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"
)

// Printer writes a command's events: NDJSON with JSON, one plain line per event
// otherwise. It is safe for use from several goroutines.
type Printer struct {
	io    *IOStreams
	json  bool
	mu    sync.Mutex
	width int // widest prefix seen, for aligned log lines
}

// NewPrinter returns a Printer on io's streams; json writes NDJSON events.
func NewPrinter(io *IOStreams, json bool) *Printer { return &Printer{io: io, json: json} }

// Event writes one event. fields go into the JSON object; text is the plain line.
func (p *Printer) Event(kind string, fields map[string]any, text string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.event(kind, fields, text)
}

func (p *Printer) event(kind string, fields map[string]any, text string) {
	if p.json {
		obj := map[string]any{"time": time.Now().UTC().Format(time.RFC3339Nano), "event": kind}
		for k, v := range fields {
			obj[k] = v
		}
		b, err := json.Marshal(obj)
		if err == nil {
			fmt.Fprintln(p.io.Out, string(b))
		}
		return
	}
	fmt.Fprintln(p.io.Out, text)
}

// Service notes a prefix (a service's name), so that log lines line up from the
// first line on.
func (p *Printer) Service(name string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.width = max(p.width, len(name))
}

// LogLine writes a container's log line prefixed by its service, like docker compose.
func (p *Printer) LogLine(service, line string) {
	p.Prefixed("log", map[string]any{"service": service, "line": line}, service, line)
}

// Prefixed writes a line after prefix and " | ", prefixes aligned as Service notes
// them; with JSON it writes fields.
func (p *Printer) Prefixed(kind string, fields map[string]any, prefix, line string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.width = max(p.width, len(prefix))
	p.event(kind, fields, fmt.Sprintf("%-*s | %s", p.width, prefix, strings.TrimRight(line, "\r")))
}

// Warn writes a warning to stderr (and as an event with JSON, instead).
func (p *Printer) Warn(msg string) {
	if p.json {
		p.Event("warning", map[string]any{"msg": msg}, "")
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintln(p.io.ErrOut, "warning: "+msg)
}

// WarnLoud writes a warning to stderr, and with JSON as an event as well: for what
// must not go unseen in a CI log (an untested push).
func (p *Printer) WarnLoud(msg string) {
	p.Warn(msg)
	if p.json {
		p.mu.Lock()
		defer p.mu.Unlock()
		fmt.Fprintln(p.io.ErrOut, "warning: "+msg)
	}
}
