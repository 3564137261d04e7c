package deploy

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/types"

	"github.com/shipdeploy/ship/pkg/notify"
)

// hook is a webhook that records what it was sent; down makes it answer 500 to
// everything. How a webhook is posted and retried is pkg/notify's to test: these
// tests see what a deploy sends and what it makes of a webhook that fails.
type hook struct {
	mu   sync.Mutex
	got  []notify.Message
	raw  []string
	down bool
}

func (h *hook) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h.down {
		http.Error(w, "down", http.StatusInternalServerError)
		return
	}
	body, _ := io.ReadAll(r.Body)
	var m notify.Message
	if err := json.Unmarshal(body, &m); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	h.mu.Lock()
	h.got = append(h.got, m)
	h.raw = append(h.raw, string(body))
	h.mu.Unlock()
}

func (h *hook) events() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for _, m := range h.got {
		out = append(out, m.Event)
	}
	return out
}

func newHook(t *testing.T, h *hook) *notify.Webhook {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &notify.Webhook{URL: srv.URL + "/hook/s3cr3t-path", Timeout: 500 * time.Millisecond, Backoff: 10 * time.Millisecond}
}

func TestNotifications(t *testing.T) {
	t.Run("start and success", func(t *testing.T) {
		f := newFixture(t, "docker-compose.yml")
		h := &hook{}
		o := f.options(f.release(shaA))
		o.Notify = newHook(t, h)
		if _, err := Run(context.Background(), o); err != nil {
			t.Fatal(err)
		}
		if got := strings.Join(h.events(), ","); got != "start,success" {
			t.Fatalf("events = %s", got)
		}
		end := h.got[1]
		if end.App != "shop" || end.Env != "prod" || end.SHA != shaA || len(end.Hosts) != 1 || end.Results[0].Result != string(ResultDeployed) || end.Time.IsZero() || end.Who != "tester@laptop" {
			t.Errorf("success = %+v", end)
		}
	})
	t.Run("failure, redacted", func(t *testing.T) {
		f := newFixture(t, "docker-compose.yml")
		f.mustDeploy(f.release(shaA))
		f.hosts[0].unhealthy = func(s types.ServiceConfig) bool { return s.Image == ref(shaB) }
		h := &hook{}
		o := f.options(f.release(shaB))
		o.Notify = newHook(t, h)
		if _, err := Run(context.Background(), o); err == nil {
			t.Fatal("deploy succeeded")
		}
		if got := strings.Join(h.events(), ","); got != "start,failure" {
			t.Fatalf("events = %s", got)
		}
		end := h.got[1]
		if end.Error == "" || end.Results[0].Current != shaA || end.Results[0].Result != string(ResultFailed) {
			t.Errorf("failure = %+v", end)
		}
		for _, raw := range h.raw {
			if strings.Contains(raw, secret) {
				t.Errorf("a notification holds the secret: %s", raw)
			}
		}
	})
	t.Run("a dead webhook is a warning", func(t *testing.T) {
		f := newFixture(t, "docker-compose.yml")
		h := &hook{down: true}
		o := f.options(f.release(shaA))
		o.Notify = newHook(t, h)
		if _, err := Run(context.Background(), o); err != nil {
			t.Fatalf("a failed notification failed the deploy: %v", err)
		}
		text := f.eventText()
		if !strings.Contains(text, "notify 127.0.0.1") || !strings.Contains(text, "3 attempts failed, the last: answered 500") {
			t.Errorf("no warning:\n%s", text)
		}
		if strings.Contains(text, "s3cr3t-path") {
			t.Errorf("the warning shows the webhook's path:\n%s", text)
		}
	})
	t.Run("rollback", func(t *testing.T) {
		f := newFixture(t, "docker-compose.yml")
		f.mustDeploy(f.release(shaA))
		f.mustDeploy(f.release(shaB))
		h := &hook{}
		o := RollbackOptions{Target: f.target(), Notify: newHook(t, h)}
		if _, err := Rollback(context.Background(), o); err != nil {
			t.Fatal(err)
		}
		if got := strings.Join(h.events(), ","); got != "rollback" || h.got[0].SHA != shaA || h.got[0].Error != "" {
			t.Errorf("events = %s: %+v", got, h.got)
		}
	})
}
