package certs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"slices"
	"strings"
	"time"

	"golang.org/x/crypto/acme/autocert"
)

// store is autocert's cache: the state directory (autocert.DirCache writes each file
// 0600 under a temporary name and renames it), and a note of each certificate stored.
type store struct {
	dir autocert.DirCache
	m   *Manager
}

func (s *store) Get(ctx context.Context, key string) ([]byte, error) { return s.dir.Get(ctx, key) }

func (s *store) Delete(ctx context.Context, key string) error { return s.dir.Delete(ctx, key) }

func (s *store) Put(ctx context.Context, key string, data []byte) error {
	if err := s.dir.Put(ctx, key, data); err != nil {
		return err
	}
	// Certificates are stored under their name (RSA ones with "+rsa"); challenge
	// tokens and the account key under names with another "+" suffix.
	host, rsa := strings.CutSuffix(key, "+rsa")
	if strings.Contains(host, "+") || strings.Contains(host, "/") {
		return nil
	}
	notAfter := leafNotAfter(data)
	s.m.mu.Lock()
	h := s.m.state(host)
	h.issued, h.notAfter, h.err = time.Now(), notAfter, nil
	s.m.mu.Unlock()
	s.m.log.Info("certificate issued", "host", host, "not_after", notAfter, "rsa", rsa)
	if s.m.cfg.Issued != nil {
		s.m.cfg.Issued(host, notAfter)
	}
	return nil
}

// leafNotAfter reads the expiry of the first certificate in a cache entry (a private key
// and the chain, in PEM).
func leafNotAfter(data []byte) time.Time {
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return time.Time{}
		}
		if b.Type == "CERTIFICATE" {
			c, err := x509.ParseCertificate(b.Bytes)
			if err != nil {
				return time.Time{}
			}
			return c.NotAfter
		}
	}
}

// customSet holds the certificates apps bring, by owner, with an index by name. It is
// replaced whole on a change.
type customSet struct {
	byOwner map[string]*tls.Certificate
	exact   map[string]*tls.Certificate
	wild    map[string]*tls.Certificate // "*.example.com" by "example.com"
}

func (s *customSet) lookup(name string) *tls.Certificate {
	if c := s.exact[name]; c != nil {
		return c
	}
	if i := strings.IndexByte(name, '.'); i > 0 {
		return s.wild[name[i+1:]]
	}
	return nil
}

// SetCustom serves the certificate and key in certFile and keyFile (PEM) for the names
// the certificate holds, on behalf of owner, in place of what owner had. The files are
// read once: call it again when they change.
func (m *Manager) SetCustom(owner, certFile, keyFile string) error {
	c, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return fmt.Errorf("custom certificate of %s: %w", owner, err)
	}
	if len(c.Leaf.DNSNames) == 0 {
		return fmt.Errorf("custom certificate of %s: %s names no host (no DNS subject alternative name)", owner, certFile)
	}
	if time.Now().After(c.Leaf.NotAfter) {
		return fmt.Errorf("custom certificate of %s: %s expired on %s", owner, certFile, c.Leaf.NotAfter.Format(time.DateOnly))
	}
	m.updateCustom(func(by map[string]*tls.Certificate) { by[owner] = &c })
	return nil
}

// RemoveCustom stops serving owner's custom certificate.
func (m *Manager) RemoveCustom(owner string) {
	m.updateCustom(func(by map[string]*tls.Certificate) { delete(by, owner) })
}

func (m *Manager) updateCustom(change func(map[string]*tls.Certificate)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	old := m.custom.Load()
	next := &customSet{byOwner: map[string]*tls.Certificate{}, exact: map[string]*tls.Certificate{}, wild: map[string]*tls.Certificate{}}
	for k, v := range old.byOwner {
		next.byOwner[k] = v
	}
	change(next.byOwner)
	owners := make([]string, 0, len(next.byOwner))
	for k := range next.byOwner {
		owners = append(owners, k)
	}
	slices.Sort(owners) // where two owners name one host, the first wins, always the same
	for _, o := range owners {
		c := next.byOwner[o]
		for _, n := range c.Leaf.DNSNames {
			n = strings.ToLower(n)
			idx, key := next.exact, n
			if rest, ok := strings.CutPrefix(n, "*."); ok {
				idx, key = next.wild, rest
			}
			if _, taken := idx[key]; !taken {
				idx[key] = c
			}
		}
	}
	m.custom.Store(next)
}

// Status is one name's certificate, for shipd's status report.
type Status struct {
	Host     string    `json:"host"`
	Custom   bool      `json:"custom,omitempty"` // brought by the app, not from ACME
	NotAfter time.Time `json:"not_after,omitzero"`
	Issued   time.Time `json:"issued,omitzero"` // when this process stored a new one
	Error    string    `json:"error,omitempty"` // why it could not be issued, with the fix
}

// Status reports the names this process has served or tried, sorted.
func (m *Manager) Status() []Status {
	custom := m.custom.Load()
	m.mu.Lock()
	out := make([]Status, 0, len(m.hosts))
	for name, h := range m.hosts {
		s := Status{Host: name, NotAfter: h.notAfter, Issued: h.issued}
		if h.err != nil {
			s.Error = h.err.Error()
		}
		out = append(out, s)
	}
	m.mu.Unlock()
	for name, c := range custom.exact {
		out = append(out, Status{Host: name, Custom: true, NotAfter: c.Leaf.NotAfter})
	}
	for name, c := range custom.wild {
		out = append(out, Status{Host: "*." + name, Custom: true, NotAfter: c.Leaf.NotAfter})
	}
	slices.SortFunc(out, func(a, b Status) int { return strings.Compare(a.Host, b.Host) })
	return out
}
