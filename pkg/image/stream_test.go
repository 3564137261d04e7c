package image

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/types"
	controlapi "github.com/moby/buildkit/api/services/control"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// traceStream encodes status updates the way the engine sends them: JSON messages
// whose aux is the protobuf StatusResponse, base64-encoded.
func traceStream(t *testing.T, updates []*controlapi.StatusResponse, tail ...map[string]any) *bytes.Buffer {
	t.Helper()
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	for _, u := range updates {
		data, err := u.MarshalVT()
		if err != nil {
			t.Fatal(err)
		}
		if err := enc.Encode(map[string]any{"id": "moby.buildkit.trace", "aux": data}); err != nil {
			t.Fatal(err)
		}
	}
	for _, m := range tail {
		if err := enc.Encode(m); err != nil {
			t.Fatal(err)
		}
	}
	return &buf
}

func collect(events *[]Event) func(Event) {
	return func(e Event) { *events = append(*events, e) }
}

func lines(events []Event, kind string) []string {
	var out []string
	for _, e := range events {
		if e.Kind == kind {
			out = append(out, e.Msg)
		}
	}
	return out
}

func TestReadBuildKit(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	ts := func(d time.Duration) *timestamppb.Timestamp { return timestamppb.New(t0.Add(d)) }
	updates := []*controlapi.StatusResponse{
		{Vertexes: []*controlapi.Vertex{
			{Digest: "sha256:a", Name: "[internal] load build definition from Dockerfile", Started: ts(0)},
		}},
		{Vertexes: []*controlapi.Vertex{
			{Digest: "sha256:a", Name: "[internal] load build definition from Dockerfile", Started: ts(0), Completed: ts(20 * time.Millisecond)},
			{Digest: "sha256:b", Name: "[1/2] COPY app /app", Started: ts(0), Completed: ts(0), Cached: true},
			{Digest: "sha256:c", Name: "[build 2/2] RUN make", Started: ts(time.Second)},
		}},
		{
			Statuses: []*controlapi.VertexStatus{{ID: "transferring", Vertex: "sha256:c", Current: 2048, Total: 4096}},
			Logs: []*controlapi.VertexLog{
				{Vertex: "sha256:c", Msg: []byte("compiling\nlink")},
				{Vertex: "sha256:c", Msg: []byte("ing\r\n")},
			},
			Warnings: []*controlapi.VertexWarning{{Vertex: "sha256:c", Short: []byte("FromAsCasing: 'as' and 'FROM' keywords' casing do not match")}},
		},
		{Vertexes: []*controlapi.Vertex{
			{Digest: "sha256:c", Name: "[build 2/2] RUN make", Started: ts(time.Second), Completed: ts(3500 * time.Millisecond)},
			// Reported again after it ended: no second line.
			{Digest: "sha256:b", Name: "[1/2] COPY app /app", Started: ts(0), Completed: ts(0), Cached: true},
		}},
	}
	stream := traceStream(t, updates,
		map[string]any{"id": "moby.image.id", "aux": map[string]string{"ID": "sha256:beef"}},
		map[string]any{"stream": "Successfully tagged x:1\n"},
	)
	var events []Event
	if err := readBuildKit(stream, "web", Options{Progress: collect(&events)}); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"[internal] load build definition from Dockerfile  DONE 0.0s",
		"Step 1/2 : COPY app /app  CACHED",
		"Step 2/2 (build) : RUN make  DONE 2.5s",
	}
	if got := lines(events, KindStep); !reflect.DeepEqual(got, want) {
		t.Errorf("steps:\n got %q\nwant %q", got, want)
	}
	if got := lines(events, KindLog); !reflect.DeepEqual(got, []string{"compiling", "linking"}) {
		t.Errorf("logs: %q", got)
	}
	if got := lines(events, KindWarning); len(got) != 1 || !strings.HasPrefix(got[0], "Step 2/2 (build) : RUN make: FromAsCasing") {
		t.Errorf("warnings: %q", got)
	}
	if got := lines(events, KindImage); !reflect.DeepEqual(got, []string{"sha256:beef"}) {
		t.Errorf("image: %q", got)
	}
	for _, e := range events {
		if e.Service != "web" {
			t.Errorf("event without its service: %+v", e)
		}
	}

	// Live: the running step is reported as it starts and moves on.
	events = nil
	if err := readBuildKit(traceStream(t, updates), "web", Options{Live: true, Progress: collect(&events)}); err != nil {
		t.Fatal(err)
	}
	var running []string
	for _, e := range events {
		if e.Kind == KindStep && !e.Step.Finished() {
			running = append(running, e.Step.Name+" | "+e.Step.Detail)
		}
	}
	wantRunning := []string{
		"[internal] load build definition from Dockerfile | ",
		"[build 2/2] RUN make | ",
		"[build 2/2] RUN make | transferring 2.0kB/4.0kB",
	}
	if !reflect.DeepEqual(running, wantRunning) {
		t.Errorf("live steps:\n got %q\nwant %q", running, wantRunning)
	}
}

func TestReadBuildKitFailure(t *testing.T) {
	ts := timestamppb.Now()
	updates := []*controlapi.StatusResponse{
		{Vertexes: []*controlapi.Vertex{{Digest: "sha256:c", Name: "[2/2] RUN [\"/app\", \"bogus\"]", Started: ts}}},
		{Logs: []*controlapi.VertexLog{{Vertex: "sha256:c", Msg: []byte("app: unknown command \"bogus\"\n")}}},
		{Vertexes: []*controlapi.Vertex{{Digest: "sha256:c", Name: "[2/2] RUN [\"/app\", \"bogus\"]", Started: ts, Completed: ts,
			Error: "executor failed running [/app bogus]: exit code: 1"}}},
	}
	stream := traceStream(t, updates, map[string]any{"errorDetail": map[string]any{"message": "executor failed running [/app bogus]: exit code: 1"}})
	var events []Event
	err := readBuildKit(stream, "web", Options{Progress: collect(&events)})
	var be *BuildError
	if !errors.As(err, &be) || !errors.Is(err, ErrBuildFailed) {
		t.Fatalf("want a BuildError, got %v", err)
	}
	if be.Step != `[2/2] RUN ["/app", "bogus"]` || !reflect.DeepEqual(be.Tail, []string{`app: unknown command "bogus"`}) {
		t.Errorf("BuildError %+v", be)
	}
	msg := err.Error()
	for _, want := range []string{"build web: ", `Step 2/2 : RUN ["/app", "bogus"]`, "exit code: 1", `    app: unknown command "bogus"`} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q lacks %q", msg, want)
		}
	}
	if got := lines(events, KindStep); len(got) != 1 || !strings.Contains(got[0], "ERROR: executor failed") {
		t.Errorf("the failed step is reported once: %q", got)
	}

	// The stream's error before BuildKit marked any step: the step last at work.
	updates = updates[:2]
	err = readBuildKit(traceStream(t, updates, map[string]any{"errorDetail": map[string]any{"message": "boom"}}), "web", Options{})
	if !errors.As(err, &be) || be.Step != `[2/2] RUN ["/app", "bogus"]` || be.Msg != "boom" {
		t.Errorf("failure without a failed step: %+v", err)
	}
}

func TestReadClassic(t *testing.T) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	for _, m := range []map[string]any{
		{"stream": "Step 1/3 : FROM scratch\n"},
		{"stream": " ---> \n"},
		{"stream": "Step 2/3 : COPY app /app\n"},
		{"stream": " ---> Using cache\n"},
		{"stream": " ---> 1a2b3c\n"},
		{"stream": "Step 3/3 : RUN [\"/app\", \"bogus\"]\n"},
		{"stream": " ---> Running in 4d5e\n"},
		{"stream": "app: unknown command \"bogus\"\n"},
		{"errorDetail": map[string]any{"message": "The command '/app bogus' returned a non-zero code: 1"}, "error": "The command '/app bogus' returned a non-zero code: 1"},
	} {
		enc.Encode(m)
	}
	var events []Event
	err := readClassic(&buf, "web", Options{Progress: collect(&events)})
	var be *BuildError
	if !errors.As(err, &be) {
		t.Fatalf("want a BuildError, got %v", err)
	}
	if be.Step != `Step 3/3 : RUN ["/app", "bogus"]` || !reflect.DeepEqual(be.Tail, []string{`app: unknown command "bogus"`}) {
		t.Errorf("BuildError %+v", be)
	}
	steps := lines(events, KindStep)
	if len(steps) != 3 || !strings.HasPrefix(steps[0], "Step 1/3 : FROM scratch  DONE") || steps[1] != "Step 2/3 : COPY app /app  CACHED" ||
		!strings.HasPrefix(steps[2], `Step 3/3 : RUN ["/app", "bogus"]  ERROR: The command`) {
		t.Errorf("steps: %q", steps)
	}
	if got := lines(events, KindLog); !reflect.DeepEqual(got, []string{`app: unknown command "bogus"`}) {
		t.Errorf("logs: %q", got)
	}
}

func TestReadPush(t *testing.T) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	for _, m := range []map[string]any{
		{"status": "The push refers to repository [r/x]"},
		{"id": "aaa", "status": "Preparing"},
		{"id": "bbb", "status": "Preparing"},
		{"id": "aaa", "status": "Pushing", "progressDetail": map[string]any{"current": 512, "total": 1024}},
		{"id": "bbb", "status": "Layer already exists"},
		{"id": "aaa", "status": "Pushed"},
		{"id": "ccc", "status": "Mounted from other/repo"},
		{"status": "1: digest: sha256:abc size: 739"},
		{"aux": map[string]any{"Tag": "1", "Digest": "sha256:abc", "Size": 739}},
	} {
		enc.Encode(m)
	}
	var events []Event
	p, err := readPush(bytes.NewReader(buf.Bytes()), "r/x:1", PushOptions{Progress: collect(&events)})
	if err != nil {
		t.Fatal(err)
	}
	if p != (Pushed{Ref: "r/x:1", Digest: "sha256:abc", Size: 739, Sent: 1, Found: 2}) {
		t.Errorf("Pushed %+v", p)
	}
	want := []string{"bbb: Layer already exists", "aaa: Pushed", "ccc: Mounted from other/repo"}
	if got := lines(events, KindLayer); !reflect.DeepEqual(got, want) {
		t.Errorf("layers %q, want %q", got, want)
	}
	events = nil
	if _, err := readPush(bytes.NewReader(buf.Bytes()), "r/x:1", PushOptions{Live: true, Progress: collect(&events)}); err != nil {
		t.Fatal(err)
	}
	if n := len(lines(events, KindLayer)); n != 6 {
		t.Errorf("live: want every layer change (6), got %d", n)
	}

	_, err = readPush(strings.NewReader(`{"errorDetail":{"message":"denied: requested access to the resource is denied"}}`), "r/x:1", PushOptions{})
	if !errors.Is(err, ErrPushFailed) || !strings.Contains(err.Error(), "denied") {
		t.Errorf("push error: %v", err)
	}
}

func TestStepTitle(t *testing.T) {
	for in, want := range map[string]string{
		"[1/3] COPY app /app":               "Step 1/3 : COPY app /app",
		"[stage-1 2/3] RUN make":            "Step 2/3 : RUN make",
		"[build 2/3] RUN make":              "Step 2/3 (build) : RUN make",
		"[internal] load build context":     "[internal] load build context",
		"[auth] team/base:pull token for x": "[auth] team/base:pull token for x",
		"exporting to image":                "exporting to image",
		"Step 1/2 : FROM scratch":           "Step 1/2 : FROM scratch",
		"[a b/c] odd":                       "[a b/c] odd",
	} {
		if got := stepTitle(in); got != want {
			t.Errorf("stepTitle(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestBaseImageAuth(t *testing.T) {
	dir := t.TempDir()
	df := filepath.Join(dir, "Dockerfile")
	os.WriteFile(df, []byte(`ARG BASE=registry.example.com:5000/team/base
ARG TAG
FROM ${BASE}:${TAG} AS build
FROM --platform=linux/amd64 docker.io/library/alpine:3 AS other
FROM build
FROM scratch
FROM unknown.example.com/x
`), 0o644)
	kc := NewKeychain(loadConfig(t, "auths"))
	tag := "1"
	auths, err := baseImageAuth(context.Background(), df, types.MappingWithEquals{"TAG": &tag}, kc)
	if err != nil {
		t.Fatal(err)
	}
	var hosts []string
	for h, a := range auths {
		hosts = append(hosts, h+"="+a.Username)
	}
	want := map[string]bool{"registry.example.com:5000=alice": true, dockerHubKey + "=bob": true}
	if len(hosts) != len(want) {
		t.Errorf("auths for %q, want %v", hosts, want)
	}
	for _, h := range hosts {
		if !want[h] {
			t.Errorf("unexpected auth %s", h)
		}
	}
	if auths, _ := baseImageAuth(context.Background(), df, nil, nil); auths != nil {
		t.Errorf("no keychain, no auths: %v", auths)
	}
}
