package cli

import (
	"fmt"
	"strings"
	"time"

	"github.com/shipdeploy/ship/pkg/image"
	"github.com/shipdeploy/ship/pkg/term"
)

// progressView renders build and push events: NDJSON with --json; on a terminal the
// steps and layers under way are redrawn in place (term.Live) below the finished ones;
// otherwise one line per finished step or layer (a step's output only with --debug).
type progressView struct {
	g        *Globals
	p        *term.Printer
	live     *term.Live // nil: not a terminal
	builders map[string]bool
}

func newProgressView(g *Globals, p *term.Printer) *progressView {
	v := &progressView{g: g, p: p, builders: map[string]bool{}}
	if g.IO.OutTTY && !g.JSON {
		v.live = term.NewLive(g.IO)
	}
	return v
}

// isLive reports whether the view redraws in place (image.Options.Live).
func (v *progressView) isLive() bool { return v.live != nil }

// close clears what is drawn in place; the view must not be used afterwards.
func (v *progressView) close() {
	if v.live != nil {
		v.live.Close()
	}
}

// line writes a finished line: above the region on a terminal.
func (v *progressView) line(kind string, fields map[string]any, text string) {
	if v.live == nil {
		v.p.Event(kind, fields, text)
		return
	}
	v.live.Above(func() { v.p.Event(kind, fields, text) })
}

// warn writes a warning to stderr, or as an event with --json.
func (v *progressView) warn(msg string) {
	if v.live == nil {
		v.p.Warn(msg)
		return
	}
	v.live.Above(func() { v.p.Warn(msg) })
}

func (v *progressView) setLive(key, text string, started time.Time) {
	if v.live != nil {
		v.live.Set(key, text, started)
	}
}

func (v *progressView) dropLive(key string) {
	if v.live != nil {
		v.live.Remove(key)
	}
}

// show renders one event of a build or a push.
func (v *progressView) show(e image.Event) {
	switch e.Kind {
	case image.KindBuilder, image.KindBuild, image.KindStep, image.KindLog, image.KindWarning, image.KindStatus, image.KindImage:
		v.showBuild(e)
	default:
		v.showPush(e)
	}
}

// with is the JSON fields of an event about e's service.
func with(e image.Event, kv ...any) map[string]any {
	m := map[string]any{}
	if e.Service != "" {
		m["service"] = e.Service
	}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i].(string)] = kv[i+1]
	}
	return m
}

func (v *progressView) showBuild(e image.Event) {
	switch e.Kind {
	case image.KindBuilder:
		if v.builders[e.Msg] {
			return
		}
		v.builders[e.Msg] = true
		builder, reason, _ := strings.Cut(strings.TrimPrefix(e.Msg, "builder: "), " (")
		fields := map[string]any{"builder": builder}
		if reason != "" {
			fields["reason"] = strings.TrimSuffix(reason, ")")
		}
		v.line("builder", fields, "==> "+e.Msg)
	case image.KindBuild:
		if e.Built == nil {
			v.line("build_image_start", with(e, "image", e.Ref), fmt.Sprintf("==> %s: building %s", e.Service, e.Ref))
			return
		}
		v.line("build_image", with(e, "image", e.Ref, "id", e.Built.ID, "seconds", round(e.Built.Duration)),
			fmt.Sprintf("==> %s: built %s in %.1fs", e.Service, e.Ref, e.Built.Duration.Seconds()))
	case image.KindStep:
		v.showStep(e)
	case image.KindLog:
		v.showLog(e)
	case image.KindWarning:
		msg := e.Msg
		if e.Service != "" {
			msg = e.Service + ": " + msg
		}
		v.warn(msg)
	case image.KindStatus, image.KindImage:
		if v.g.Debug && !v.g.JSON {
			v.line("", nil, fmt.Sprintf("    %s: %s", e.Service, e.Msg))
		}
	}
}

func (v *progressView) showStep(e image.Event) {
	s := e.Step
	key := e.Service + "\x00" + s.ID
	if !s.Finished() {
		text := e.Service + ": " + s.Line()
		if s.Detail != "" {
			text += "  " + s.Detail
		}
		v.setLive(key, text, s.Started)
		return
	}
	v.dropLive(key)
	fields := with(e, "step", s.Name, "status", string(s.State), "seconds", round(s.Duration))
	if s.Error != "" {
		fields["error"] = s.Error
	}
	v.line("build_step", fields, fmt.Sprintf("--> %s: %s", e.Service, s.Line()))
}

func (v *progressView) showLog(e image.Event) {
	step := ""
	if e.Step != nil {
		step = e.Step.Name
	}
	switch {
	case v.g.JSON:
		v.p.Event("build_log", with(e, "step", step, "line", e.Msg), "")
	case v.g.Debug:
		v.line("build_log", nil, fmt.Sprintf("    %s | %s", e.Service, e.Msg))
	case v.live != nil && e.Step != nil:
		v.setLive(e.Service+"\x00"+e.Step.ID, e.Service+": "+e.Step.Line()+"  "+e.Msg, e.Step.Started)
	}
}

func (v *progressView) showPush(e image.Event) {
	switch e.Kind {
	case image.KindRegistry:
		v.line("registry", map[string]any{"registry": e.Ref, "msg": e.Msg}, "==> "+e.Msg)
	case image.KindPush:
		if e.Pushed == nil {
			v.line("push_image_start", map[string]any{"image": e.Ref}, "==> pushing "+e.Ref)
			return
		}
		pu := e.Pushed
		v.line("push_image", map[string]any{"image": e.Ref, "digest": pu.Digest, "size": pu.Size, "layers_sent": pu.Sent, "layers_found": pu.Found},
			fmt.Sprintf("==> pushed %s: %d layer(s) sent, %d already in the registry", e.Ref, pu.Sent, pu.Found))
	case image.KindLayer:
		l := e.Layer
		key := l.Ref + "\x00" + l.ID
		if !l.Done() {
			text := l.ID + ": " + l.Status
			if l.Total > 0 {
				text += fmt.Sprintf(" %s %s/%s", bar(l.Current, l.Total, 20), image.HumanBytes(l.Current), image.HumanBytes(l.Total))
			}
			v.setLive(key, text, time.Time{})
			return
		}
		v.dropLive(key)
		v.line("push_layer", map[string]any{"image": l.Ref, "layer": l.ID, "status": l.Status, "sent": l.Sent()}, "--> "+l.ID+": "+l.Status)
	case image.KindVerified:
		v.line("push_verified", map[string]any{"image": e.Ref, "digest": e.Pushed.Digest},
			fmt.Sprintf("==> %s is in the registry (%s)", e.Ref, e.Pushed.Digest))
	}
}

func round(d time.Duration) float64 { return d.Round(10 * time.Millisecond).Seconds() }

func bar(cur, total int64, width int) string {
	n := int(float64(width) * float64(cur) / float64(total))
	n = max(0, min(n, width))
	return "[" + strings.Repeat("=", n) + strings.Repeat(" ", width-n) + "]"
}
