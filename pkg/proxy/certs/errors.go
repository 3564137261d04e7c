package certs

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/acme"
)

// IssueError is a certificate that could not be issued: the CA's reason and the fix.
type IssueError struct {
	Host string
	// Err is what the ACME client returned.
	Err error
	// Problem is the CA's reason for the failed validation of Host, as it reported it
	// ("tls-alpn-01: urn:ietf:params:acme:error:connection: ..."); "" if it gave none.
	Problem string
}

func (e *IssueError) Error() string {
	reason := e.Err.Error()
	if e.Problem != "" {
		reason = e.Problem
	}
	return fmt.Sprintf("certificate for %s could not be issued: %s; %s", e.Host, reason, e.Fix())
}

func (e *IssueError) Unwrap() error { return e.Err }

// Fix says what the user most likely has to do.
func (e *IssueError) Fix() string {
	text := strings.ToLower(e.Problem + " " + e.Err.Error())
	switch {
	case strings.Contains(text, ":ratelimited"):
		return "the CA's rate limit was reached: wait until it lifts, and use the staging directory while testing"
	case strings.Contains(text, ":caa"):
		return fmt.Sprintf("a CAA DNS record of %s forbids this CA: add one allowing it", e.Host)
	case strings.Contains(text, ":rejectedidentifier"):
		return fmt.Sprintf("the CA does not issue certificates for %s", e.Host)
	case strings.Contains(text, ":dns"):
		return fmt.Sprintf("%s does not resolve: point its DNS A (and AAAA) record at this server", e.Host)
	case strings.Contains(text, "no viable challenge"), strings.Contains(text, ":connection"),
		strings.Contains(text, ":unauthorized"), strings.Contains(text, ":incorrectresponse"), strings.Contains(text, ":tls"):
		return fmt.Sprintf("the CA could not reach this server as %s: check that its DNS A (and AAAA) record points here and that ports 80 and 443 are open to the internet", e.Host)
	}
	return fmt.Sprintf("check that the DNS of %s points to this server, that ports 80 and 443 are open to the internet, and that the ACME directory is reachable", e.Host)
}

// problems keeps the last failed validation the CA reported for each name.
type problems struct {
	mu sync.Mutex
	by map[string]problem
}

type problem struct {
	at     time.Time
	detail string
}

func newProblems() *problems { return &problems{by: map[string]problem{}} }

// since returns name's problem if it was reported at or after start.
func (p *problems) since(name string, start time.Time) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if pr, ok := p.by[name]; ok && !pr.at.Before(start) {
		return pr.detail
	}
	return ""
}

func (p *problems) add(name, detail string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	prev := p.by[name]
	if !prev.at.IsZero() && time.Since(prev.at) < time.Minute && !strings.Contains(prev.detail, detail) {
		// autocert tries TLS-ALPN-01, then HTTP-01: keep both reasons.
		detail = prev.detail + "; " + detail
	}
	p.by[name] = problem{at: time.Now(), detail: detail}
}

// recorder is the ACME client's transport. autocert keeps only "no viable challenge type
// found" when every challenge failed; the CA's reasons are in the invalid authorizations
// it fetched, which recorder reads on the way.
type recorder struct {
	next     http.RoundTripper
	problems *problems
}

// authorization is the part of an ACME authorization object (RFC 8555 7.1.4) read here.
type authorization struct {
	Status     string `json:"status"`
	Identifier struct {
		Value string `json:"value"`
	} `json:"identifier"`
	Challenges []struct {
		Type  string `json:"type"`
		Error *struct {
			Type   string `json:"type"`
			Detail string `json:"detail"`
		} `json:"error"`
	} `json:"challenges"`
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	next := r.next
	if next == nil {
		next = http.DefaultTransport
	}
	resp, err := next.RoundTrip(req)
	if err != nil || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") || resp.ContentLength > 1<<20 {
		return resp, err
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	var z authorization
	if json.Unmarshal(body, &z) != nil || z.Status != acme.StatusInvalid || z.Identifier.Value == "" {
		return resp, nil
	}
	for _, c := range z.Challenges {
		if c.Error != nil {
			r.problems.add(strings.ToLower(z.Identifier.Value), fmt.Sprintf("%s: %s: %s", c.Type, c.Error.Type, c.Error.Detail))
		}
	}
	return resp, nil
}

// IsIssueError reports whether err is a certificate that could not be issued.
func IsIssueError(err error) bool {
	var ie *IssueError
	return errors.As(err, &ie)
}
