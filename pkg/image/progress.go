package image

import (
	"fmt"
	"strings"
	"time"

	controlapi "github.com/moby/buildkit/api/services/control"
	"github.com/moby/moby/api/types/jsonstream"
)

// tracker turns BuildKit's status updates into step events: BuildKit reports a vertex
// (a step) again each time something about it changes; a step is reported once when
// it has finished (and, with Live, also as it starts and moves on).
type tracker struct {
	service string
	o       Options
	steps   map[string]*vertex
	last    *vertex // the step that most recently wrote output or started
}

type vertex struct {
	step     Step
	reported bool   // its end was reported
	partial  []byte // output not yet ended by a newline
	tail     []string
}

func newTracker(service string, o Options) *tracker {
	return &tracker{service: service, o: o, steps: map[string]*vertex{}}
}

func (t *tracker) vertex(digest string) *vertex {
	v, ok := t.steps[digest]
	if !ok {
		v = &vertex{step: Step{ID: digest, State: StepRunning}}
		t.steps[digest] = v
	}
	return v
}

func (t *tracker) emitStep(v *vertex) {
	s := v.step
	t.o.emit(Event{Service: t.service, Kind: KindStep, Msg: s.Line(), Step: &s})
}

func (t *tracker) update(st *controlapi.StatusResponse) {
	for _, vx := range st.Vertexes {
		v := t.vertex(vx.Digest)
		if v.reported {
			continue
		}
		if vx.Name != "" {
			v.step.Name = vx.Name
		}
		wasStarted := !v.step.Started.IsZero()
		if vx.Started != nil && !wasStarted {
			v.step.Started = vx.Started.AsTime()
			t.last = v
		}
		switch {
		case vx.Error != "":
			v.step.State, v.step.Error = StepFailed, vx.Error
		case vx.Cached:
			v.step.State = StepCached
		}
		if vx.Completed == nil {
			if t.o.Live && vx.Started != nil && !wasStarted {
				t.emitStep(v)
			}
			continue
		}
		if v.step.State == StepRunning {
			v.step.State = StepDone
		}
		if !v.step.Started.IsZero() {
			v.step.Duration = vx.Completed.AsTime().Sub(v.step.Started)
		}
		t.flush(v)
		v.reported = true
		t.emitStep(v)
	}
	for _, vs := range st.Statuses {
		v := t.vertex(vs.Vertex)
		if v.reported || !t.o.Live {
			continue
		}
		v.step.Detail = statusDetail(vs)
		t.emitStep(v)
	}
	for _, l := range st.Logs {
		t.log(t.vertex(l.Vertex), l.Msg)
	}
	for _, w := range st.Warnings {
		msg := strings.TrimSpace(string(w.Short))
		if msg == "" {
			continue
		}
		if name := t.vertex(w.Vertex).step.Name; name != "" {
			msg = stepTitle(name) + ": " + msg
		}
		t.o.emit(Event{Service: t.service, Kind: KindWarning, Msg: msg})
	}
}

func statusDetail(vs *controlapi.VertexStatus) string {
	id := vs.ID
	if strings.HasPrefix(id, "sha256:") && len(id) > 19 {
		id = id[7:19]
	}
	switch {
	case vs.Completed != nil:
		return id + " done"
	case vs.Total > 0:
		return fmt.Sprintf("%s %s/%s", id, HumanBytes(vs.Current), HumanBytes(vs.Total))
	case vs.Current > 0:
		return fmt.Sprintf("%s %s", id, HumanBytes(vs.Current))
	}
	return id
}

// log splits a step's output into lines and reports each.
func (t *tracker) log(v *vertex, data []byte) {
	t.last = v
	v.partial = append(v.partial, data...)
	for {
		i := strings.IndexByte(string(v.partial), '\n')
		if i < 0 {
			return
		}
		t.line(v, strings.TrimRight(string(v.partial[:i]), "\r"))
		v.partial = v.partial[i+1:]
	}
}

func (t *tracker) flush(v *vertex) {
	if len(v.partial) > 0 {
		t.line(v, strings.TrimRight(string(v.partial), "\r"))
		v.partial = nil
	}
}

func (t *tracker) line(v *vertex, l string) {
	v.tail = append(v.tail, l)
	if len(v.tail) > tailLines {
		v.tail = v.tail[1:]
	}
	s := v.step
	t.o.emit(Event{Service: t.service, Kind: KindLog, Msg: l, Step: &s})
}

// failure is the error for the stream's error message: the failed step with its
// output, when BuildKit said which step failed.
func (t *tracker) failure(msg string) error {
	e := &BuildError{Service: t.service, Msg: strings.TrimSpace(msg)}
	var failed *vertex
	for _, v := range t.steps {
		if v.step.State == StepFailed && (failed == nil || v.step.Started.After(failed.step.Started)) {
			failed = v
		}
	}
	if failed == nil {
		// Not reported as failed (yet): the step last seen working is the best guess.
		if failed = t.last; failed != nil && failed.step.Finished() {
			failed = nil
		}
	}
	if failed != nil {
		t.flush(failed)
		e.Step, e.Tail = failed.step.Name, failed.tail
		if !failed.reported {
			failed.reported = true
			failed.step.State = StepFailed
			if failed.step.Error == "" {
				failed.step.Error = e.Msg
			}
			if !failed.step.Started.IsZero() {
				failed.step.Duration = time.Since(failed.step.Started)
			}
			t.emitStep(failed)
		}
	}
	return e
}

// engineMessage is one message of the engine's JSON progress stream (build, push).
type engineMessage struct {
	jsonstream.Message
	// ErrorMessage is the plain "error" field, which older engines send alone.
	ErrorMessage string `json:"error,omitempty"`
}

// failure returns the message's error, if it carries one.
func (m engineMessage) failure() (string, bool) {
	if m.Error != nil {
		return m.Error.Message, true
	}
	return m.ErrorMessage, m.ErrorMessage != ""
}

// pushResult is the aux part of the engine's push stream that names what was pushed.
type pushResult struct {
	Tag    string
	Digest string
	Size   int
}
