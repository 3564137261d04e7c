package cli

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"
)

// printer writes a command's events: NDJSON with --json, one plain line per event
// otherwise. It is safe for use from several goroutines.
type printer struct {
	g     *Globals
	mu    sync.Mutex
	width int // widest service name seen, for aligned log prefixes
}

func newPrinter(g *Globals) *printer { return &printer{g: g} }

// event writes one event. fields go into the JSON object; text is the plain line.
func (p *printer) event(kind string, fields map[string]any, text string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.g.JSON {
		obj := map[string]any{"time": time.Now().UTC().Format(time.RFC3339Nano), "event": kind}
		for k, v := range fields {
			obj[k] = v
		}
		b, err := json.Marshal(obj)
		if err == nil {
			fmt.Fprintln(p.g.IO.Out, string(b))
		}
		return
	}
	fmt.Fprintln(p.g.IO.Out, text)
}

// service notes a service name, so that log prefixes line up from the first line on.
func (p *printer) service(name string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(name) > p.width {
		p.width = len(name)
	}
}

// logLine writes a container's log line prefixed by its service, like docker compose.
func (p *printer) logLine(service, line string) {
	p.service(service)
	p.mu.Lock()
	w := p.width
	p.mu.Unlock()
	p.event("log", map[string]any{"service": service, "line": line},
		fmt.Sprintf("%-*s | %s", w, service, strings.TrimRight(line, "\r")))
}

// warn writes a warning to stderr (and as an event with --json).
func (p *printer) warn(msg string) {
	if p.g.JSON {
		p.event("warning", map[string]any{"msg": msg}, "")
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintln(p.g.IO.ErrOut, "warning: "+msg)
}
