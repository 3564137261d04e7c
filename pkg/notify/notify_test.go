package notify

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// hook is a webhook that records what it was sent: the first failures requests get a
// 500, and a request waits for release (when set) before it is answered.
type hook struct {
	mu       sync.Mutex
	got      []Message
	requests int
	failures int
	release  chan struct{}
}

func (h *hook) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	h.mu.Lock()
	h.requests++
	n := h.requests
	h.mu.Unlock()
	if h.release != nil {
		select {
		case <-h.release:
		case <-r.Context().Done():
			return
		}
	}
	if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" {
		http.Error(w, "want a JSON POST", http.StatusBadRequest)
		return
	}
	if n <= h.failures {
		http.Error(w, "down", http.StatusInternalServerError)
		return
	}
	var m Message
	if err := json.Unmarshal(body, &m); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	h.mu.Lock()
	h.got = append(h.got, m)
	h.mu.Unlock()
}

func newHook(t *testing.T, h *hook) *Webhook {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &Webhook{URL: srv.URL + "/hook/s3cr3t-path", Backoff: time.Millisecond}
}

func TestSend(t *testing.T) {
	t.Run("retried", func(t *testing.T) {
		h := &hook{failures: 2}
		w := newHook(t, h)
		if err := w.Send(context.Background(), Message{Event: Start, App: "shop"}); err != nil {
			t.Fatal(err)
		}
		if h.requests != 3 || len(h.got) != 1 || h.got[0].App != "shop" || h.got[0].Time.IsZero() || h.got[0].Hosts == nil {
			t.Errorf("%d requests, got %+v", h.requests, h.got)
		}
	})
	t.Run("given up, without the path", func(t *testing.T) {
		h := &hook{failures: 1000}
		w := newHook(t, h)
		err := w.Send(context.Background(), Message{Event: Failure})
		if err == nil || !strings.Contains(err.Error(), "notify 127.0.0.1") || !strings.Contains(err.Error(), "3 attempts failed, the last: answered 500") {
			t.Errorf("err = %v", err)
		}
		if err != nil && strings.Contains(err.Error(), "s3cr3t-path") {
			t.Errorf("the error shows the webhook's path: %v", err)
		}
	})
	t.Run("time-limited", func(t *testing.T) {
		// The webhook never answers: each attempt ends at its timeout.
		h := &hook{release: make(chan struct{})}
		w := newHook(t, h)
		t.Cleanup(func() { close(h.release) })
		w.Timeout, w.Attempts = 50*time.Millisecond, 2
		err := w.Send(context.Background(), Message{Event: Start})
		if err == nil || !strings.Contains(err.Error(), "no answer within 50ms") {
			t.Errorf("err = %v", err)
		}
	})
}

func TestQueue(t *testing.T) {
	h := &hook{release: make(chan struct{})}
	w := newHook(t, h)
	var mu sync.Mutex
	var reported []string
	q := NewQueue(w, func(s string) string { return strings.ReplaceAll(s, "hunter2", "[redacted]") },
		func(m Message, err error) {
			mu.Lock()
			defer mu.Unlock()
			reported = append(reported, m.Event)
			if err != nil {
				t.Errorf("%s: %v", m.Event, err)
			}
		})
	ctx, cancel := context.WithCancel(context.Background())
	q.Post(ctx, Message{Event: Start})
	q.Post(ctx, Message{Event: Failure, Error: "password hunter2", Results: []Result{{Host: "web1", Error: "hunter2 again"}}})
	// Cancelled after posting: the messages still go, in order.
	cancel()
	close(h.release)
	q.Wait()
	if len(h.got) != 2 || h.got[0].Event != Start || h.got[1].Event != Failure {
		t.Fatalf("got %+v", h.got)
	}
	if h.got[1].Error != "password [redacted]" || h.got[1].Results[0].Error != "[redacted] again" {
		t.Errorf("not scrubbed: %+v", h.got[1])
	}
	if strings.Join(reported, ",") != "start,failure" {
		t.Errorf("reported %v", reported)
	}

	// Without a URL nothing is sent, and Wait does not wait.
	NewQueue(nil, nil, func(Message, error) { t.Error("reported without a webhook") }).Post(ctx, Message{Event: Start})
	if err := (&Webhook{URL: "::", Backoff: time.Millisecond}).Send(context.Background(), Message{}); err == nil || errors.Unwrap(err) == nil {
		t.Errorf("an invalid URL: %v", err)
	}
}
