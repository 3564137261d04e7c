package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"
)

// ErrUnhealthy is returned (wrapped) by Route.Swap and Route.Deploy when the new target
// did not pass its health check before the deadline. The route is untouched: the old
// target keeps serving.
var ErrUnhealthy = errors.New("target unhealthy")

// Health-check defaults, the same as kamal-proxy's.
const (
	DefaultHealthInterval = 1 * time.Second
	DefaultHealthTimeout  = 5 * time.Second
	DefaultHealthDeadline = 30 * time.Second
)

// HealthCheck says how a new target is checked before it receives traffic. The first
// attempt starts at once; further attempts follow every Interval until one passes or
// Deadline has passed since the first.
type HealthCheck struct {
	// Path is the HTTP path to GET (for example "/up"); any 2xx answer passes. An empty
	// Path checks only that a TCP connection can be opened.
	Path string
	// Host, when set, is sent as the Host header of the HTTP check.
	Host string
	// Interval between the starts of two attempts (default 1s).
	Interval time.Duration
	// Timeout of one attempt (default 5s).
	Timeout time.Duration
	// Deadline for the whole check (default 30s).
	Deadline time.Duration
}

func (hc HealthCheck) withDefaults() HealthCheck {
	if hc.Interval <= 0 {
		hc.Interval = DefaultHealthInterval
	}
	if hc.Timeout <= 0 {
		hc.Timeout = DefaultHealthTimeout
	}
	if hc.Deadline <= 0 {
		hc.Deadline = DefaultHealthDeadline
	}
	return hc
}

// String describes the check for logs and errors.
func (hc HealthCheck) String() string {
	if hc.Path == "" {
		return "tcp connect"
	}
	return "GET " + hc.Path
}

// Wait checks addr until it passes (nil), the deadline passes (an error that Is
// ErrUnhealthy, carrying the last failure) or ctx is done (ctx's error).
func (hc HealthCheck) Wait(ctx context.Context, addr string) error {
	hc = hc.withDefaults()
	if hc.Path != "" && !strings.HasPrefix(hc.Path, "/") {
		return fmt.Errorf("health check path %q: must start with /", hc.Path)
	}
	deadline := time.Now().Add(hc.Deadline)
	// A fresh connection per attempt, none kept: a check must not leave connections behind
	// or reuse one that a previous attempt opened to an older process on the same address.
	tr := &http.Transport{
		DialContext:       (&net.Dialer{}).DialContext,
		DisableKeepAlives: true,
		Proxy:             nil,
	}
	defer tr.CloseIdleConnections()
	tick := time.NewTicker(hc.Interval)
	defer tick.Stop()
	attempts := 0
	for {
		attempts++
		last := hc.attempt(ctx, tr, addr)
		if last == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if !time.Now().Before(deadline) {
			return fmt.Errorf("%w: %s %s: %d attempts in %s, last: %v", ErrUnhealthy, hc, addr, attempts, hc.Deadline, last)
		}
		wait := time.NewTimer(time.Until(deadline))
		select {
		case <-ctx.Done():
			wait.Stop()
			return ctx.Err()
		case <-tick.C:
		case <-wait.C:
			// One last attempt at the deadline itself gives a slow starter every chance.
		}
		wait.Stop()
	}
}

func (hc HealthCheck) attempt(ctx context.Context, tr *http.Transport, addr string) error {
	// An attempt started just before the deadline may run past it by up to Timeout.
	actx, cancel := context.WithTimeout(ctx, hc.Timeout)
	defer cancel()
	if hc.Path == "" {
		var d net.Dialer
		conn, err := d.DialContext(actx, "tcp", addr)
		if err != nil {
			return err
		}
		return conn.Close()
	}
	req, err := http.NewRequestWithContext(actx, http.MethodGet, "http://"+addr+hc.Path, nil)
	if err != nil {
		return err
	}
	if hc.Host != "" {
		req.Host = hc.Host
	}
	req.Header.Set("User-Agent", "shipd-health")
	resp, err := tr.RoundTrip(req)
	if err != nil {
		return err
	}
	// The status decides; the body is not read (the connection is not kept anyway).
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}
