package term

import (
	"fmt"
	"io"
	"sync"
	"time"
)

// Control sequences of a terminal, used only by this package.
const (
	clearLine = "\r\x1b[K" // to the start of the line, and erase it
)

// cursorUpClear moves the cursor up n lines and erases to the end of the screen.
func cursorUpClear(n int) string { return fmt.Sprintf("\x1b[%dA\r\x1b[J", n) }

// Live is a few lines at the bottom of a terminal, redrawn in place (steps and layers
// under way, each with its elapsed time), with finished lines written above it. It
// redraws itself now and then, so that elapsed times move, until Close. Safe for use
// from several goroutines.
type Live struct {
	mu     sync.Mutex
	region region
	stop   chan struct{}
	done   chan struct{}
}

// NewLive starts a live region at the bottom of io.Out, which must be a terminal.
func NewLive(io *IOStreams) *Live {
	l := &Live{region: region{w: io.Out, width: io.Width()}, stop: make(chan struct{}), done: make(chan struct{})}
	go l.tick()
	return l
}

func (l *Live) tick() {
	defer close(l.done)
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
			l.mu.Lock()
			l.region.redraw()
			l.mu.Unlock()
		}
	}
}

// Close stops the redrawing and clears the region; l must not be used afterwards.
func (l *Live) Close() {
	close(l.stop)
	<-l.done
	l.mu.Lock()
	defer l.mu.Unlock()
	l.region.clear()
}

// Above runs write, which writes finished lines, with the region out of the way: the
// lines end up above it.
func (l *Live) Above(write func()) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.region.clear()
	write()
	l.region.draw()
}

// Set shows text on the region's line key (a new line at the bottom when there is
// none); started is when the thing began (zero: now, or as before).
func (l *Live) Set(key, text string, started time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.region.set(key, text, started)
}

// Remove takes the line key off the region.
func (l *Live) Remove(key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.region.remove(key)
}

// region is the lines of a Live and what is on the screen of them.
type region struct {
	w     io.Writer
	width int
	lines []liveLine
	drawn int // lines on the screen now
}

type liveLine struct {
	key, text string
	started   time.Time
}

// maxLive is how many lines the region shows; the oldest ones beyond it are hidden.
const maxLive = 12

func (r *region) set(key, text string, started time.Time) {
	for i := range r.lines {
		if r.lines[i].key == key {
			r.lines[i].text = text
			if !started.IsZero() {
				r.lines[i].started = started
			}
			r.redraw()
			return
		}
	}
	if started.IsZero() {
		started = time.Now()
	}
	r.lines = append(r.lines, liveLine{key: key, text: text, started: started})
	r.redraw()
}

func (r *region) remove(key string) {
	for i := range r.lines {
		if r.lines[i].key == key {
			r.lines = append(r.lines[:i], r.lines[i+1:]...)
			r.redraw()
			return
		}
	}
}

func (r *region) redraw() {
	r.clear()
	r.draw()
}

// clear erases the region: up to its first line, and to the end of the screen.
func (r *region) clear() {
	if r.drawn > 0 {
		fmt.Fprint(r.w, cursorUpClear(r.drawn))
		r.drawn = 0
	}
}

func (r *region) draw() {
	lines := r.lines
	if len(lines) > maxLive {
		lines = lines[len(lines)-maxLive:]
	}
	for _, l := range lines {
		text := fmt.Sprintf("%s  %.1fs", l.text, time.Since(l.started).Seconds())
		fmt.Fprintln(r.w, truncate(text, r.width-1))
	}
	r.drawn = len(lines)
}

func truncate(s string, width int) string {
	if width < 4 {
		return s
	}
	r := []rune(s)
	if len(r) <= width {
		return s
	}
	return string(r[:width-1]) + "…"
}
