// Package certs gives shipd's HTTPS listeners their certificates, picked by SNI: custom
// ones (a certificate and key file an app brings) and ACME ones, issued on demand or
// ahead (Obtain) by golang.org/x/crypto/acme/autocert with HTTP-01 (served on :80 by
// the Router's Challenge handler) and TLS-ALPN-01 (answered by GetCertificate on :443).
//
// Certificates and the ACME account key are files under the state directory (mode 0600,
// directory 0700), written to a temporary name and renamed. A Manager started on the
// same directory serves what is there: a restart, an upgrade or a handover never orders
// a certificate again. A certificate is renewed ahead of its expiry (RenewBefore, else a
// third of its lifetime, at most 30 days) while it is in use; an expired one is ordered
// anew at its next handshake. One the CA revoked or wants replaced is ordered anew when
// its ACME Renewal Information (RFC 9773, asked for when it is loaded or issued and then
// at the CA's pace) says its window has started (renewalinfo.go).
//
// When a certificate cannot be issued the error (an *IssueError) carries the CA's own
// reason, which autocert drops, recovered from the ACME responses, and the likely fix:
// DNS not pointing here, port 80 or 443 closed. After a failure a name is not tried again
// before Config.Retry has passed (the CA's rate limits count failures), but Obtain, which
// a deploy calls, always tries.
//
// See pkg/proxy's doc for why autocert and not certmagic.
package certs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/acme"
	"golang.org/x/crypto/acme/autocert"
)

// ACME directories of Let's Encrypt.
const (
	LetsEncrypt        = acme.LetsEncryptURL
	LetsEncryptStaging = "https://acme-staging-v02.api.letsencrypt.org/directory"
)

// DefaultRetry is how long a name whose certificate could not be issued waits before a
// handshake tries again.
const DefaultRetry = 5 * time.Minute

// Config says where certificates come from and where they are kept.
type Config struct {
	// Dir holds the certificates and the ACME account key (created 0700; files 0600).
	Dir string
	// Directory is the ACME directory URL; "" means Let's Encrypt, or its staging
	// directory with Staging.
	Directory string
	Staging   bool
	// Email is the ACME account's contact (expiry and policy notices); optional.
	Email string
	// RenewBefore is how long before expiry a certificate is renewed; 0: a third of
	// its lifetime (autocert caps it at 30 days).
	RenewBefore time.Duration
	// Retry is how long after a failed issuance a handshake may try again (DefaultRetry).
	Retry time.Duration
	// HTTPClient talks to the ACME server; nil: http.DefaultClient's transport. Tests
	// pass one trusting their CA's root.
	HTTPClient *http.Client
	// Issued, when set, is called after a certificate was issued and stored.
	Issued func(host string, notAfter time.Time)
	// Logger receives issuance events; nil discards them.
	Logger *slog.Logger
}

// Manager serves certificates by SNI. Its methods may be called concurrently.
type Manager struct {
	cfg      Config
	ac       atomic.Pointer[acmeState]
	hc       *http.Client // the ACME client's, with the recorder
	wantHTTP atomic.Bool  // HTTPHandler was asked for: HTTP-01 is tried
	ari      *renewalInfo
	log      *slog.Logger
	problems *problems
	allow    atomic.Pointer[func(string) bool]
	custom   atomic.Pointer[customSet]

	mu    sync.Mutex
	hosts map[string]*hostState
}

type hostState struct {
	cert     *tls.Certificate // last served
	leaf     *x509.Certificate
	checking bool // a renewal information loop runs for this name
	notAfter time.Time
	issued   time.Time // when this process last stored a new one
	err      error     // the last failure, until a success
	failedAt time.Time
}

// New returns a Manager keeping its files in cfg.Dir. It serves no ACME name until
// SetPolicy allows it.
func New(cfg Config) (*Manager, error) {
	if cfg.Dir == "" {
		return nil, errors.New("certificates: no state directory")
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("certificates: %w", err)
	}
	if err := os.Chmod(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("certificates: %w", err)
	}
	if cfg.Directory == "" {
		cfg.Directory = LetsEncrypt
		if cfg.Staging {
			cfg.Directory = LetsEncryptStaging
		}
	}
	if cfg.Retry <= 0 {
		cfg.Retry = DefaultRetry
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	m := &Manager{cfg: cfg, log: cfg.Logger, problems: newProblems(), hosts: map[string]*hostState{}}
	m.custom.Store(&customSet{})
	base := cfg.HTTPClient
	if base == nil {
		base = &http.Client{}
	}
	hc := *base
	hc.Transport = &recorder{next: base.Transport, problems: m.problems}
	m.hc = &hc
	m.ari = newRenewalInfo(m)
	m.ac.Store(m.newACME())
	return m, nil
}

// acmeState is one autocert.Manager with the gate of its ACME requests. It is replaced
// whole when a certificate must be ordered again before autocert would (renewal
// information says so): autocert offers no way to drop a certificate it holds.
type acmeState struct {
	ac   *autocert.Manager
	gate *gate
	http http.Handler
}

func (m *Manager) newACME() *acmeState {
	g := &gate{next: m.hc.Transport}
	hc := *m.hc
	hc.Transport = g
	ac := &autocert.Manager{
		Prompt:      autocert.AcceptTOS,
		Cache:       &store{dir: autocert.DirCache(m.cfg.Dir), m: m},
		HostPolicy:  m.hostPolicy,
		RenewBefore: m.cfg.RenewBefore,
		Email:       m.cfg.Email,
		Client:      &acme.Client{DirectoryURL: m.cfg.Directory, HTTPClient: &hc, UserAgent: "shipd"},
	}
	st := &acmeState{ac: ac, gate: g}
	if m.wantHTTP.Load() {
		st.http = ac.HTTPHandler(http.NotFoundHandler())
	}
	return st
}

// SetPolicy sets which names may get an ACME certificate (shipd: Router.TLSHost). A
// name outside it gets no certificate, so that a client cannot make shipd order one for
// any name that points here.
func (m *Manager) SetPolicy(allow func(host string) bool) { m.allow.Store(&allow) }

func (m *Manager) allowed(host string) bool {
	p := m.allow.Load()
	return p != nil && (*p)(host)
}

func (m *Manager) hostPolicy(_ context.Context, host string) error {
	if m.allowed(host) {
		return nil
	}
	return fmt.Errorf("certificate for %s: no TLS route serves this name", host)
}

// TLSConfig returns a server configuration that picks certificates with GetCertificate
// and offers HTTP/2, HTTP/1.1 and the TLS-ALPN-01 protocol.
func (m *Manager) TLSConfig() *tls.Config {
	return &tls.Config{
		GetCertificate: m.GetCertificate,
		NextProtos:     []string{"h2", "http/1.1", acme.ALPNProto},
		MinVersion:     tls.VersionTLS12,
	}
}

// HTTPHandler answers ACME HTTP-01 challenges (RouterOptions.Challenge); other requests
// get 404.
func (m *Manager) HTTPHandler() http.Handler {
	m.mu.Lock()
	m.wantHTTP.Store(true)
	if st := m.ac.Load(); st.http == nil {
		st.http = st.ac.HTTPHandler(http.NotFoundHandler())
	}
	m.mu.Unlock()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m.ac.Load().http.ServeHTTP(w, r)
	})
}

// GetCertificate is tls.Config's: a custom certificate for the name if there is one,
// else the ACME one (loaded from the state directory, or issued now).
func (m *Manager) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	name := strings.TrimSuffix(strings.ToLower(hello.ServerName), ".")
	if isChallenge(hello) {
		return m.ac.Load().ac.GetCertificate(hello)
	}
	if c := m.custom.Load().lookup(name); c != nil {
		return c, nil
	}
	if name == "" {
		return nil, errors.New("no certificate: the client sent no server name (SNI)")
	}
	if !m.allowed(name) {
		return nil, fmt.Errorf("no certificate for %s: no TLS route serves this name", name)
	}
	if err := m.waiting(name); err != nil {
		return nil, err
	}
	return m.get(name, hello)
}

func (m *Manager) get(name string, hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	start := time.Now()
	c, err := m.ac.Load().ac.GetCertificate(hello)
	if err != nil {
		return nil, m.failed(name, start, err)
	}
	m.served(name, c)
	return c, nil
}

// Obtain makes sure name has a certificate, issuing one now if none is stored: a deploy
// calls it so that the first visitor does not wait for the CA, and so that a failure is
// shown where the user looks. It ignores the retry wait. ctx bounds the wait, not the
// issuance, which goes on.
func (m *Manager) Obtain(ctx context.Context, name string) error {
	name = strings.TrimSuffix(strings.ToLower(name), ".")
	if m.custom.Load().lookup(name) != nil {
		return nil
	}
	if !m.allowed(name) {
		return fmt.Errorf("certificate for %s: no TLS route serves this name", name)
	}
	done := make(chan error, 1)
	go func() {
		_, err := m.get(name, ecdsaHello(name))
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("certificate for %s: %w", name, ctx.Err())
	}
}

// ecdsaHello is a ClientHello that autocert takes as able to use ECDSA, which is what
// every current client offers.
func ecdsaHello(name string) *tls.ClientHelloInfo {
	return &tls.ClientHelloInfo{
		ServerName:        name,
		CipherSuites:      []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256},
		SignatureSchemes:  []tls.SignatureScheme{tls.ECDSAWithP256AndSHA256},
		SupportedCurves:   []tls.CurveID{tls.CurveP256},
		SupportedVersions: []uint16{tls.VersionTLS13, tls.VersionTLS12},
	}
}

func isChallenge(hello *tls.ClientHelloInfo) bool {
	return len(hello.SupportedProtos) == 1 && hello.SupportedProtos[0] == acme.ALPNProto
}

// waiting returns the last failure of name while its retry wait lasts.
func (m *Manager) waiting(name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if h := m.hosts[name]; h != nil && h.err != nil && time.Since(h.failedAt) < m.cfg.Retry {
		return h.err
	}
	return nil
}

// failed records a failed issuance of name that started at start and returns it as an
// *IssueError with the CA's reason.
func (m *Manager) failed(name string, start time.Time, err error) error {
	ie := &IssueError{Host: name, Err: err, Problem: m.problems.since(name, start)}
	m.mu.Lock()
	h := m.state(name)
	h.err, h.failedAt = ie, time.Now()
	m.mu.Unlock()
	m.log.Error("certificate not issued", "host", name, "err", ie)
	return ie
}

// served notes the certificate served for name.
func (m *Manager) served(name string, c *tls.Certificate) {
	m.mu.Lock()
	defer m.mu.Unlock()
	h := m.state(name)
	if h.leaf == c.Leaf && h.err == nil {
		return
	}
	h.cert, h.leaf, h.err = c, c.Leaf, nil
	if c.Leaf != nil {
		h.notAfter = c.Leaf.NotAfter
	}
	if !h.checking {
		h.checking = true
		go m.ari.watch(name)
	}
}

func (m *Manager) state(name string) *hostState {
	h := m.hosts[name]
	if h == nil {
		h = &hostState{}
		m.hosts[name] = h
	}
	return h
}
