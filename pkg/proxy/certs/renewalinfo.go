package certs

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// How often a certificate's renewal information is asked for: the CA's Retry-After,
// held between these bounds. Tests shorten them.
var (
	renewalInfoMin = time.Hour
	renewalInfoMax = 24 * time.Hour
)

// reasonRenewNow is logged when the CA's renewal information asks for a new certificate
// now, which is what it answers for a revoked one.
const reasonRenewNow = "renewal information says renew now: revoked or replaced by the CA"

// renewalInfo asks the CA, by ACME Renewal Information (RFC 9773), whether a
// certificate should be replaced before autocert would renew it: a revoked certificate
// (Let's Encrypt no longer answers OCSP) or one the CA wants replaced (a mis-issuance).
// It never stops serving: a failed request is a warning, and the question is asked again.
type renewalInfo struct {
	m        *Manager
	min, max time.Duration

	mu    sync.Mutex
	dir   *directory // nil until fetched
	noARI atomic.Bool
}

// directory is the part of the ACME directory (RFC 8555 7.1.1) read here.
type directory struct {
	NewOrder    string `json:"newOrder"`
	RenewalInfo string `json:"renewalInfo"`
}

// window is the CA's answer (RFC 9773 4.2).
type window struct {
	SuggestedWindow struct {
		Start time.Time `json:"start"`
		End   time.Time `json:"end"`
	} `json:"suggestedWindow"`
	ExplanationURL string `json:"explanationURL"`
}

func newRenewalInfo(m *Manager) *renewalInfo {
	return &renewalInfo{m: m, min: renewalInfoMin, max: renewalInfoMax}
}

// watch asks about name's certificate now and then again at the CA's pace, while name
// is served with an ACME certificate.
func (r *renewalInfo) watch(name string) {
	for r.watched(name) {
		t := time.NewTimer(r.check(name))
		<-t.C
	}
}

// watched says whether name is still served with an ACME certificate, and ends its
// watch if not (served starts a new one).
func (r *renewalInfo) watched(name string) bool {
	m := r.m
	if m.allowed(name) && m.custom.Load().lookup(name) == nil {
		return true
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if h := m.hosts[name]; h != nil {
		h.checking = false
		h.leaf = nil // served checks the next certificate afresh
	}
	return false
}

// check asks about the certificate name is served with, replaces it if the CA says so,
// and returns when to ask again.
func (r *renewalInfo) check(name string) time.Duration {
	if r.noARI.Load() {
		return r.max
	}
	r.m.mu.Lock()
	var leaf *x509.Certificate
	if h := r.m.hosts[name]; h != nil {
		leaf = h.leaf
	}
	r.m.mu.Unlock()
	if leaf == nil {
		return r.min
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	w, retry, err := r.ask(ctx, leaf)
	if err != nil {
		r.warn(name, err)
		return r.min
	}
	if w == nil {
		return r.max
	}
	if time.Now().Before(w.SuggestedWindow.Start) {
		return r.bound(retry)
	}
	r.m.log.Warn("certificate replaced early", "host", name, "serial", leaf.SerialNumber.Text(16),
		"reason", reasonRenewNow, "explanation", w.ExplanationURL)
	dir, err := r.directory(ctx)
	if err != nil {
		r.warn(name, err)
		return r.min
	}
	r.m.reorder(name, leaf, dir.NewOrder)
	return r.min
}

func (r *renewalInfo) warn(name string, err error) {
	r.m.log.Warn("certificate renewal information not read; the certificate is still served", "host", name, "err", err)
}

func (r *renewalInfo) bound(d time.Duration) time.Duration {
	return min(max(d, r.min), r.max)
}

// ask returns the CA's window for leaf and its Retry-After; a nil window when the CA
// offers no renewal information or the certificate names no issuer key.
func (r *renewalInfo) ask(ctx context.Context, leaf *x509.Certificate) (*window, time.Duration, error) {
	dir, err := r.directory(ctx)
	if err != nil {
		return nil, 0, err
	}
	if dir.RenewalInfo == "" {
		r.noARI.Store(true)
		r.m.log.Info("the ACME server offers no renewal information; certificates are renewed by their expiry only")
		return nil, 0, nil
	}
	id, ok := certID(leaf)
	if !ok {
		return nil, 0, nil
	}
	var w window
	h, err := r.get(ctx, dir.RenewalInfo+"/"+id, &w)
	if err != nil {
		return nil, 0, err
	}
	if w.SuggestedWindow.Start.IsZero() {
		return nil, 0, errors.New("renewal information: no suggested window in the answer")
	}
	return &w, retryAfter(h.Get("Retry-After")), nil
}

func (r *renewalInfo) directory(ctx context.Context) (*directory, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.dir != nil {
		return r.dir, nil
	}
	var d directory
	if _, err := r.get(ctx, r.m.cfg.Directory, &d); err != nil {
		return nil, err
	}
	r.dir = &d
	return r.dir, nil
}

// get fetches url with the ACME client's HTTP client (trusting a private CA's roots)
// into v.
func (r *renewalInfo) get(ctx context.Context, url string, v any) (http.Header, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("User-Agent", "shipd")
	resp, err := r.m.hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	if err := json.Unmarshal(body, v); err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	return resp.Header, nil
}

// certID is the certificate's identifier in RFC 9773 4.1: its issuer's key identifier
// and its serial number's DER content octets, each base64url without padding.
func certID(leaf *x509.Certificate) (string, bool) {
	if len(leaf.AuthorityKeyId) == 0 || leaf.SerialNumber == nil || leaf.SerialNumber.Sign() <= 0 {
		return "", false
	}
	serial := leaf.SerialNumber.Bytes()
	if serial[0]&0x80 != 0 {
		serial = append([]byte{0}, serial...) // DER keeps a positive number positive
	}
	enc := base64.RawURLEncoding
	return enc.EncodeToString(leaf.AuthorityKeyId) + "." + enc.EncodeToString(serial), true
}

// retryAfter reads a Retry-After header, in seconds or as a date; 0 when absent.
func retryAfter(v string) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(v); err == nil {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return time.Until(t)
	}
	return 0
}

// reorder orders a new certificate for name, whose leaf the CA wants replaced, and
// serves it. autocert keeps the certificates it loaded and offers no way to drop one,
// so the stored one is removed and a new autocert.Manager takes over; the old one may
// make no new order (its renewal timers run on), so that no name is ordered twice.
func (m *Manager) reorder(name string, leaf *x509.Certificate, newOrder string) {
	m.mu.Lock()
	if h := m.hosts[name]; h == nil || h.leaf != leaf {
		m.mu.Unlock()
		return // replaced meanwhile
	}
	old := m.ac.Load()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, key := range []string{name, name + "+rsa"} {
		if err := old.ac.Cache.Delete(ctx, key); err != nil {
			m.log.Warn("stored certificate not removed", "host", name, "key", key, "err", err)
		}
	}
	m.ac.Store(m.newACME())
	old.gate.close(newOrder)
	m.mu.Unlock()
	if _, err := m.get(name, ecdsaHello(name)); err != nil {
		return // failed logged it; a handshake tries again after the retry wait
	}
}

// gate passes an autocert.Manager's ACME requests on, until it is closed to new orders.
type gate struct {
	next     http.RoundTripper
	newOrder atomic.Pointer[string]
}

var errRetired = errors.New("certificates: this ACME client was replaced; it makes no new order")

func (g *gate) close(newOrder string) { g.newOrder.Store(&newOrder) }

func (g *gate) RoundTrip(req *http.Request) (*http.Response, error) {
	if u := g.newOrder.Load(); u != nil && req.Method == http.MethodPost && req.URL.String() == *u {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, errRetired
	}
	return g.next.RoundTrip(req)
}
