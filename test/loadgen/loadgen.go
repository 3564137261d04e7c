// Package loadgen sends HTTP load to a server on this machine and reports what it saw:
// requests, 2xx, non-2xx, connection errors, latency percentiles, the achieved rate and the
// longest time without a successful answer. It proves ship's zero-downtime claims and
// measures the proxy.
//
// Run sends at a fixed rate on a schedule (open loop: a slow answer does not slow the
// sending, so a stall of the server shows in the latency of every request sent during
// it). Latency runs from the moment a request is handed to the client, so the wait for a
// free keep-alive connection counts; how late the generator itself was against its
// schedule is reported apart (Go's timers wake about once a millisecond when idle). Each
// request goes either over one of a pool of keep-alive connections or over a fresh
// connection of its own, in a fixed mix. Saturate runs a closed loop of workers instead,
// to find the most a server can do.
//
// Every run is bounded: by its Duration (at most MaxDuration; requests still running
// then get Timeout more, after which they are cut) and by a number of requests. Only
// loopback addresses (127.0.0.0/8, ::1) are accepted, and every connection is checked
// against them when it is dialled.
package loadgen

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Bounds of every run.
const (
	MaxDuration = 10 * time.Minute
	MaxRequests = 5_000_000
	MaxRate     = 100_000
)

// ErrNotLoopback is returned for a URL whose host is not a loopback IP address.
var ErrNotLoopback = errors.New("only loopback addresses (127.0.0.0/8, ::1) may be targeted")

// Config describes a run.
type Config struct {
	// URL to GET, with a loopback IP as its host: http://127.0.0.1:8080/up.
	URL string
	// Rate is the number of requests per second that Run sends.
	Rate float64
	// Duration bounds the sending (required, at most MaxDuration).
	Duration time.Duration
	// Requests bounds the number of requests (Run: default and at most Rate×Duration;
	// Saturate: default MaxRequests).
	Requests int
	// Conns is the number of keep-alive connections (default 8).
	Conns int
	// Fresh is the share of requests sent on a fresh connection each, 0 to 1: one of
	// every 1/Fresh requests, evenly spread.
	Fresh float64
	// Workers is the number of closed-loop workers of Saturate (default Conns).
	Workers int
	// Timeout bounds one request, and how long requests still running when Duration
	// ends may go on (default 5s).
	Timeout time.Duration
	// MaxInFlight bounds the requests of Run running at once (default 1000); when it is
	// reached the schedule waits, and the wait shows as lag.
	MaxInFlight int
	// Host, when set, is sent as every request's Host header and, over https, as the
	// TLS server name (SNI): the URL keeps the loopback address that is dialed.
	Host string
	// RootCAs are the roots an https URL's certificate is verified against (nil: the
	// system's). Connections speak HTTP/1.1; a fresh one makes a full TLS handshake.
	RootCAs *x509.CertPool
}

func (c Config) check(saturate bool) (Config, *url.URL, error) {
	u, err := url.Parse(c.URL)
	if err != nil {
		return c, nil, fmt.Errorf("loadgen: url: %w", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return c, nil, fmt.Errorf("loadgen: url %q: only http and https are supported", c.URL)
	}
	if err := checkLoopbackHost(u.Hostname()); err != nil {
		return c, nil, fmt.Errorf("loadgen: url %q: %w", c.URL, err)
	}
	if c.Duration <= 0 || c.Duration > MaxDuration {
		return c, nil, fmt.Errorf("loadgen: duration %s: must be more than 0 and at most %s", c.Duration, MaxDuration)
	}
	if c.Conns <= 0 {
		c.Conns = 8
	}
	if c.Fresh < 0 || c.Fresh > 1 || math.IsNaN(c.Fresh) {
		return c, nil, fmt.Errorf("loadgen: fresh share %v: must be between 0 and 1", c.Fresh)
	}
	if c.Timeout <= 0 {
		c.Timeout = 5 * time.Second
	}
	if c.MaxInFlight <= 0 {
		c.MaxInFlight = 1000
	}
	if c.Requests < 0 || c.Requests > MaxRequests {
		return c, nil, fmt.Errorf("loadgen: requests %d: must be between 0 and %d", c.Requests, MaxRequests)
	}
	if saturate {
		if c.Workers <= 0 {
			c.Workers = c.Conns
		}
		if c.Requests == 0 {
			c.Requests = MaxRequests
		}
		return c, u, nil
	}
	if !(c.Rate > 0 && c.Rate <= MaxRate) {
		return c, nil, fmt.Errorf("loadgen: rate %v: must be more than 0 and at most %d", c.Rate, MaxRate)
	}
	planned := int(math.Ceil(c.Rate * c.Duration.Seconds()))
	if c.Requests == 0 || c.Requests > planned {
		c.Requests = planned
	}
	if c.Requests > MaxRequests {
		c.Requests = MaxRequests
	}
	return c, u, nil
}

// checkLoopbackHost accepts only a literal loopback IP: a name could resolve elsewhere.
func checkLoopbackHost(host string) error {
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("host %q: %w", host, ErrNotLoopback)
	}
	return nil
}

// dialer opens connections to loopback addresses only.
var dialer = &net.Dialer{
	Timeout: 5 * time.Second,
	Control: func(network, address string, _ syscall.RawConn) error {
		host, _, err := net.SplitHostPort(address)
		if err != nil {
			return err
		}
		return checkLoopbackHost(host)
	},
}

// clients holds the two kinds of connection a run uses.
type clients struct {
	keep, fresh *http.Client
	kt, ft      *http.Transport
}

func newClients(c Config) *clients {
	kt := &http.Transport{
		Proxy:               nil,
		DialContext:         dialer.DialContext,
		MaxIdleConnsPerHost: c.Conns,
		MaxConnsPerHost:     c.Conns,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
		TLSClientConfig:     &tls.Config{RootCAs: c.RootCAs, ServerName: c.Host},
	}
	ft := &http.Transport{
		Proxy:              nil,
		DialContext:        dialer.DialContext,
		DisableKeepAlives:  true,
		DisableCompression: true,
		TLSClientConfig:    &tls.Config{RootCAs: c.RootCAs, ServerName: c.Host},
	}
	noRedirect := func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &clients{
		keep:  &http.Client{Transport: kt, Timeout: c.Timeout, CheckRedirect: noRedirect},
		fresh: &http.Client{Transport: ft, Timeout: c.Timeout, CheckRedirect: noRedirect},
		kt:    kt,
		ft:    ft,
	}
}

func (cl *clients) close() {
	cl.kt.CloseIdleConnections()
	cl.ft.CloseIdleConnections()
}

// isFresh spreads the fresh-connection requests evenly: request i is fresh when the
// running count of share*i steps up.
func isFresh(i int, share float64) bool {
	if share <= 0 {
		return false
	}
	return math.Floor(float64(i+1)*share) > math.Floor(float64(i)*share)
}

// result of one request.
type result struct {
	lat    time.Duration // from its sending to the end of its body
	lag    time.Duration // how late it was sent against the schedule
	end    time.Duration // since the start of the run
	status int           // 0 when it failed before an answer
	kind   errKind
	fresh  bool
}

type errKind uint8

const (
	errNone errKind = iota
	errRefused
	errReset
	errEOF
	errTimeout
	errCut // still running at the hard stop
	errOther
)

var errKindNames = [...]string{"", "refused", "reset", "eof", "timeout", "cut at stop", "other"}

func classify(err error) errKind {
	var ne net.Error
	switch {
	case err == nil:
		return errNone
	case errors.Is(err, syscall.ECONNREFUSED):
		return errRefused
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return errReset
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return errEOF
	case errors.Is(err, context.Canceled): // only the hard stop (or the caller) cancels
		return errCut
	case errors.As(err, &ne) && ne.Timeout(), errors.Is(err, context.DeadlineExceeded):
		return errTimeout
	default:
		return errOther
	}
}

// do sends one GET and reads the whole body.
func do(ctx context.Context, cl *http.Client, u, host string, due, start time.Time, fresh bool) result {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return result{kind: errOther, fresh: fresh}
	}
	if host != "" {
		req.Host = host
	}
	req.Header.Set("User-Agent", "ship-loadgen")
	sent := time.Now()
	resp, err := cl.Do(req)
	if err == nil {
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	now := time.Now()
	r := result{lat: now.Sub(sent), lag: sent.Sub(due), end: now.Sub(start), fresh: fresh}
	if err != nil {
		r.kind = classify(err)
		return r
	}
	r.status = resp.StatusCode
	return r
}

// Run sends c.Rate requests per second for c.Duration (or until c.Requests have been
// sent, or ctx is done) and reports. It returns an error only for a bad Config.
func Run(ctx context.Context, c Config) (*Report, error) {
	c, u, err := c.check(false)
	if err != nil {
		return nil, err
	}
	cl := newClients(c)
	defer cl.close()

	// The hard stop: sending ends at Duration; what is still running gets Timeout more.
	hard, cancel := context.WithCancel(ctx)
	defer cancel()
	results := make([]result, c.Requests)
	sem := make(chan struct{}, c.MaxInFlight)
	var wg sync.WaitGroup
	interval := time.Duration(float64(time.Second) / c.Rate)
	start := time.Now()
	end := start.Add(c.Duration)
	timer := time.NewTimer(0)
	defer timer.Stop()
	sent := 0
	target := u.String()
send:
	for sent < c.Requests {
		due := start.Add(time.Duration(sent) * interval)
		if !due.Before(end) {
			break
		}
		if wait := time.Until(due); wait > 0 {
			timer.Reset(wait)
			select {
			case <-timer.C:
			case <-ctx.Done():
				break send
			}
		}
		// Everything due by now goes out: the schedule is kept even when a timer fires late.
		now := time.Now()
		for sent < c.Requests {
			due := start.Add(time.Duration(sent) * interval)
			if due.After(now) || !due.Before(end) {
				break
			}
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				break send
			}
			fresh := isFresh(sent, c.Fresh)
			client := cl.keep
			if fresh {
				client = cl.fresh
			}
			i := sent
			wg.Go(func() {
				defer func() { <-sem }()
				results[i] = do(hard, client, target, c.Host, due, start, fresh)
			})
			sent++
		}
	}
	sendEnd := time.Now()
	waitOrCut(&wg, c.Timeout, cancel)
	rep := newReport("rate", c, results[:sent], time.Since(start), sendEnd.Sub(start))
	rep.TargetRate = c.Rate
	return rep, nil
}

// Saturate runs c.Workers closed-loop workers, each sending its next request when the
// previous one has been answered, for c.Duration or c.Requests requests in all.
func Saturate(ctx context.Context, c Config) (*Report, error) {
	c, u, err := c.check(true)
	if err != nil {
		return nil, err
	}
	cl := newClients(c)
	defer cl.close()
	hard, cancel := context.WithCancel(ctx)
	defer cancel()
	var next atomic.Int64
	start := time.Now()
	end := start.Add(c.Duration)
	per := make([][]result, c.Workers)
	var wg sync.WaitGroup
	target := u.String()
	for w := range c.Workers {
		wg.Go(func() {
			var mine []result
			for ctx.Err() == nil {
				now := time.Now()
				if !now.Before(end) {
					break
				}
				i := int(next.Add(1) - 1)
				if i >= c.Requests {
					break
				}
				fresh := isFresh(i, c.Fresh)
				client := cl.keep
				if fresh {
					client = cl.fresh
				}
				mine = append(mine, do(hard, client, target, c.Host, now, start, fresh))
			}
			per[w] = mine
		})
	}
	// The workers stop sending at the end by themselves; past it, the requests still
	// running get Timeout more.
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	cut := time.NewTimer(time.Until(end) + c.Timeout)
	select {
	case <-done:
	case <-cut.C:
		cancel()
		<-done
	}
	cut.Stop()
	var all []result
	for _, m := range per {
		all = append(all, m...)
	}
	elapsed := time.Since(start)
	sendEnd := min(elapsed, c.Duration)
	return newReport("saturate", c, all, elapsed, sendEnd), nil
}

// waitOrCut waits for the requests still running, for at most grace, then cuts them.
func waitOrCut(wg *sync.WaitGroup, grace time.Duration, cancel context.CancelFunc) {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		cancel()
		<-done
	}
}

// Report is what a run saw.
type Report struct {
	Mode       string        // "rate" or "saturate"
	URL        string        //
	TargetRate float64       // requests per second asked for (rate mode)
	Conns      int           // keep-alive connections
	Workers    int           // closed-loop workers (saturate mode)
	FreshShare float64       // share of requests on fresh connections
	Elapsed    time.Duration // the whole run
	Requests   int           // sent
	Fresh      int           // of them, on a fresh connection
	OK         int           // answered 2xx
	Non2xx     int           // answered otherwise
	ConnErrors int           // no answer: refused, reset, closed, timed out...
	Cut        int           // still running at the hard stop (not in ConnErrors)
	Status     map[int]int   // answers by status code
	Errors     map[string]int
	Rate       float64       // answered requests per second over the sending time
	P50        time.Duration // latency of answered requests
	P90        time.Duration
	P99        time.Duration
	Max        time.Duration
	LongestGap time.Duration // the longest time in the run without a 2xx answer completing
	LagP99     time.Duration // rate mode: how late the generator sent against its schedule
	LagMax     time.Duration
}

// Failed returns the requests that did not get a 2xx answer.
func (r *Report) Failed() int { return r.Non2xx + r.ConnErrors + r.Cut }

func newReport(mode string, c Config, res []result, elapsed, sendTime time.Duration) *Report {
	r := &Report{
		Mode: mode, URL: c.URL, Conns: c.Conns, FreshShare: c.Fresh, Elapsed: elapsed,
		Requests: len(res), Status: map[int]int{}, Errors: map[string]int{},
	}
	if mode == "saturate" {
		r.Workers = c.Workers
	}
	lats := make([]time.Duration, 0, len(res))
	lags := make([]time.Duration, 0, len(res))
	oks := make([]time.Duration, 0, len(res))
	for _, x := range res {
		if x.fresh {
			r.Fresh++
		}
		lags = append(lags, x.lag)
		switch {
		case x.kind == errCut:
			r.Cut++
			r.Errors[errKindNames[x.kind]]++
			continue
		case x.kind != errNone:
			r.ConnErrors++
			r.Errors[errKindNames[x.kind]]++
			continue
		}
		r.Status[x.status]++
		lats = append(lats, x.lat)
		if x.status >= 200 && x.status <= 299 {
			r.OK++
			oks = append(oks, x.end)
		} else {
			r.Non2xx++
		}
	}
	if sendTime > 0 {
		r.Rate = float64(len(lats)) / sendTime.Seconds()
	}
	slices.Sort(lats)
	r.P50, r.P90, r.P99 = percentile(lats, 50), percentile(lats, 90), percentile(lats, 99)
	if len(lats) > 0 {
		r.Max = lats[len(lats)-1]
	}
	if mode == "rate" && len(lags) > 0 {
		slices.Sort(lags)
		r.LagP99, r.LagMax = percentile(lags, 99), lags[len(lags)-1]
	}
	// The gap includes the run's edges: a server down at the start or at the end counts.
	slices.Sort(oks)
	prev := time.Duration(0)
	for _, t := range oks {
		r.LongestGap = max(r.LongestGap, t-prev)
		prev = t
	}
	r.LongestGap = max(r.LongestGap, sendTime-prev)
	return r
}

// percentile by the nearest-rank method over sorted values.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	return sorted[max(rank, 1)-1]
}
