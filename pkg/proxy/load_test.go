package proxy

import (
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
)

// loader keeps GET requests going to a route until it is stopped: a closed loop of
// workers, some over keep-alive connections and some over a fresh connection per
// request. A test stops it when the events it waits for have happened (a backend has
// served so many requests), not after a time, so a slow machine only makes it longer.
type loader struct {
	stop     chan struct{}
	host     string
	wg       sync.WaitGroup
	ok       atomic.Int64
	mu       sync.Mutex
	failures []string
}

// Workers of a loader: over keep-alive connections, and over fresh ones.
const (
	keepAliveWorkers = 4
	freshWorkers     = 2
)

// startLoad starts a loader on url; the test must call stopLoad (a cleanup stops it
// otherwise).
func startLoad(t *testing.T, url string) *loader {
	t.Helper()
	return startHostLoad(t, url, "")
}

// startHostLoad is startLoad with host as each request's Host header ("": the URL's).
func startHostLoad(t *testing.T, url, host string) *loader {
	t.Helper()
	l := &loader{stop: make(chan struct{}), host: host}
	keep := &http.Client{Timeout: patience, Transport: &http.Transport{MaxIdleConnsPerHost: keepAliveWorkers}}
	fresh := &http.Client{Timeout: patience, Transport: &http.Transport{DisableKeepAlives: true}}
	for i := range keepAliveWorkers + freshWorkers {
		cl := keep
		if i >= keepAliveWorkers {
			cl = fresh
		}
		kind := "keep-alive"
		if i >= keepAliveWorkers {
			kind = "fresh"
		}
		l.wg.Go(func() { l.run(cl, kind, url) })
	}
	t.Cleanup(func() {
		l.halt()
		keep.CloseIdleConnections()
	})
	return l
}

func (l *loader) run(cl *http.Client, kind, url string) {
	for {
		select {
		case <-l.stop:
			return
		default:
		}
		req, err := http.NewRequest("GET", url, nil)
		if err != nil {
			panic(err)
		}
		if l.host != "" {
			req.Host = l.host
		}
		resp, err := cl.Do(req)
		if err == nil {
			_, err = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		switch {
		case err != nil:
			l.fail(kind + ": " + err.Error())
		case resp.StatusCode != http.StatusOK:
			l.fail(fmt.Sprintf("%s: status %d", kind, resp.StatusCode))
		default:
			l.ok.Add(1)
		}
	}
}

func (l *loader) fail(what string) {
	l.mu.Lock()
	l.failures = append(l.failures, what)
	l.mu.Unlock()
}

// halt stops the workers once their requests in flight have been answered.
func (l *loader) halt() {
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	l.wg.Wait()
}

// stopLoad stops l and fails the test unless every request got 200.
func stopLoad(t *testing.T, l *loader) {
	t.Helper()
	l.halt()
	ok := l.ok.Load()
	t.Logf("load: %d requests answered 200, %d failed", ok, len(l.failures))
	if len(l.failures) > 0 || ok == 0 {
		t.Errorf("load: %d answered 200, %d failed (first: %q); want all 200", ok, len(l.failures), first(l.failures, 5))
	}
}

func first(s []string, n int) []string { return s[:min(n, len(s))] }

// waitServed waits until b has served n more requests than it had at the call's start.
func waitServed(t *testing.T, b *backend, n int64) {
	t.Helper()
	from := b.served.Load()
	waitFor(t, fmt.Sprintf("%s to serve %d requests", b.name, n), func() bool { return b.served.Load() >= from+n })
}
