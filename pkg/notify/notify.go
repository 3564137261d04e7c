// Package notify tells a webhook of deploys: a JSON POST on start, success, failure and
// rollback, each attempt time-limited and retried, posted in order in the background.
package notify

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/shipdeploy/ship/pkg/version"
)

// Events of a Message.
const (
	Start    = "start"    // a deploy begins changing hosts
	Success  = "success"  // a deploy ended with every host on the release
	Failure  = "failure"  // a deploy failed on a host (which put its previous release back)
	Rollback = "rollback" // a rollback ended (Error says if it failed)
)

// Message is the JSON body POSTed to notify.webhook.
type Message struct {
	Event   string    `json:"event"`
	App     string    `json:"app"`
	Env     string    `json:"env"`
	SHA     string    `json:"sha"`
	Subject string    `json:"subject,omitempty"`
	Hosts   []string  `json:"hosts"`
	Results []Result  `json:"results,omitempty"`
	Who     string    `json:"who,omitempty"`
	Error   string    `json:"error,omitempty"`
	Time    time.Time `json:"time"`
}

// Result is one host's result in a Message.
type Result struct {
	Host    string `json:"host"`
	Result  string `json:"result"`
	Current string `json:"current,omitempty"`
	Error   string `json:"error,omitempty"`
}

// Defaults of Webhook.
const (
	DefaultTimeout  = 5 * time.Second
	DefaultAttempts = 3
	DefaultBackoff  = time.Second
)

// Webhook POSTs messages to a webhook: each attempt time-limited, a failed one
// (no answer, or an answer other than 2xx) tried again after a growing pause.
type Webhook struct {
	URL string
	// Client sends the requests; default http.DefaultClient's transport.
	Client *http.Client
	// Timeout bounds each attempt; default 5s.
	Timeout time.Duration
	// Attempts is how often to try; default 3.
	Attempts int
	// Backoff is the pause before the second attempt, doubled after each; default 1s.
	Backoff time.Duration
}

// Host is the webhook's host, for messages (its path could hold a token).
func (n *Webhook) Host() string {
	u, err := url.Parse(n.URL)
	if err != nil || u.Host == "" {
		return "the webhook"
	}
	return u.Host
}

// Send POSTs m, trying again as configured. Its error never repeats the URL's path or
// query, which can hold a token.
func (n *Webhook) Send(ctx context.Context, m Message) error {
	if m.Time.IsZero() {
		m.Time = time.Now().UTC()
	}
	if m.Hosts == nil {
		m.Hosts = []string{}
	}
	body, err := json.Marshal(m)
	if err != nil {
		return err
	}
	client := n.Client
	if client == nil {
		client = &http.Client{}
	}
	timeout, attempts, backoff := n.Timeout, n.Attempts, n.Backoff
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	if attempts <= 0 {
		attempts = DefaultAttempts
	}
	if backoff <= 0 {
		backoff = DefaultBackoff
	}
	var last error
	for i := range attempts {
		if i > 0 {
			select {
			case <-ctx.Done():
				return fmt.Errorf("notify %s of %s: %w (after %v)", n.Host(), m.Event, ctx.Err(), last)
			case <-time.After(backoff):
			}
			backoff *= 2
		}
		last = n.post(ctx, client, timeout, body)
		if last == nil {
			return nil
		}
	}
	return fmt.Errorf("notify %s of %s: %d attempts failed, the last: %w", n.Host(), m.Event, attempts, last)
}

func (n *Webhook) post(ctx context.Context, client *http.Client, timeout time.Duration, body []byte) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, n.URL, bytes.NewReader(body))
	if err != nil {
		return errors.New("the webhook URL is not valid")
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "shipctl/"+version.Version)
	resp, err := client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		if ctx.Err() != nil {
			return fmt.Errorf("no answer within %s", timeout)
		}
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("answered %s", resp.Status)
	}
	return nil
}
