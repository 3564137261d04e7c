package certs_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/acme"

	"github.com/shipdeploy/ship/pkg/proxy/certs"
	"github.com/shipdeploy/ship/test/testenv"
)

// A certificate revoked at the CA is replaced without a restart: renewal information
// (RFC 9773) says renew now, a new order is made, handshakes get a new serial, and the
// log says why.
func TestRevokedCertificateIsReplaced(t *testing.T) {
	certs.SetRenewalInfoBounds(t, 50*time.Millisecond, 200*time.Millisecond)
	var logs lockedBuffer
	dir := filepath.Join(t.TempDir(), "certs")
	f, p := pebbleFront(t, certs.Config{Dir: dir, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	f.route(t, "shop/web", app(t, "shop").Listener.Addr().String(), "shop.test")
	cl := f.client(p.Roots, true)
	url := f.url("shop.test", "/")

	resp, _ := get(t, cl, url)
	first := resp.TLS.PeerCertificates[0]
	if n := p.Orders(); n != 1 {
		t.Fatalf("%d orders, want 1", n)
	}
	// Revoked with the certificate's own key, as after a key compromise.
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	ac := &acme.Client{DirectoryURL: p.Directory, HTTPClient: p.Client}
	if err := ac.RevokeCert(ctx, storedKey(t, filepath.Join(dir, "shop.test")), first.Raw, acme.CRLReasonUnspecified); err != nil {
		t.Fatalf("revoke: %v", err)
	}

	deadline := time.Now().Add(patience)
	for {
		resp, body := get(t, cl, url)
		if serial := resp.TLS.PeerCertificates[0].SerialNumber; serial.Cmp(first.SerialNumber) != 0 {
			if body != "shop" {
				t.Errorf("after the replacement: %q, want shop", body)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the revoked certificate (serial %x) is still served after %s; log:\n%s", first.SerialNumber, patience, logs.String())
		}
		time.Sleep(20 * time.Millisecond) // polling for the replacement, not ordering events
	}
	if n := p.Orders(); n != 2 {
		t.Errorf("%d orders, want 2 (the first and its replacement)", n)
	}
	if !strings.Contains(logs.String(), "revoked or replaced by the CA") {
		t.Errorf("the log does not say why the certificate was replaced:\n%s", logs.String())
	}
	// The replacement is what is stored: a restart serves it.
	data, err := os.ReadFile(filepath.Join(dir, "shop.test"))
	if err != nil {
		t.Fatal(err)
	}
	if leaf := storedLeaf(t, data); leaf.SerialNumber.Cmp(first.SerialNumber) == 0 {
		t.Errorf("the stored certificate is still the revoked one")
	}
}

// storedKey reads the private key autocert stored with a certificate.
func storedKey(t *testing.T, file string) crypto.Signer {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	for {
		var b *pem.Block
		if b, data = pem.Decode(data); b == nil {
			t.Fatalf("%s: no private key", file)
		}
		if b.Type == "EC PRIVATE KEY" {
			k, err := x509.ParseECPrivateKey(b.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			return k
		}
	}
}

func storedLeaf(t *testing.T, data []byte) *x509.Certificate {
	t.Helper()
	for {
		var b *pem.Block
		if b, data = pem.Decode(data); b == nil {
			t.Fatal("no certificate stored")
		}
		if b.Type == "CERTIFICATE" {
			c, err := x509.ParseCertificate(b.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			return c
		}
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// failingInfo fails every renewal information request with 503 and passes the rest on.
type failingInfo struct{ next http.RoundTripper }

func (f failingInfo) RoundTrip(req *http.Request) (*http.Response, error) {
	if strings.Contains(req.URL.Path, "renewalInfo") {
		return &http.Response{StatusCode: http.StatusServiceUnavailable, Status: "503 Service Unavailable",
			Body: io.NopCloser(strings.NewReader("")), Header: http.Header{}, Request: req}, nil
	}
	return f.next.RoundTrip(req)
}

// When the CA's renewal information cannot be read, the certificate is still served,
// nothing is ordered, and the log says so.
func TestRenewalInfoFailureKeepsServing(t *testing.T) {
	certs.SetRenewalInfoBounds(t, 50*time.Millisecond, 200*time.Millisecond)
	var logs lockedBuffer
	plainLn, secureLn := listeners(t)
	p := testenv.Pebble(t, testenv.PebbleOptions{HTTPPort: port(plainLn), TLSPort: port(secureLn)})
	cfg := certs.Config{
		Dir: t.TempDir(), Logger: slog.New(slog.NewTextHandler(&logs, nil)),
		Directory: p.Directory, HTTPClient: &http.Client{Transport: failingInfo{next: p.Client.Transport}},
	}
	f := startFront(t, plainLn, secureLn, cfg, nil)
	f.route(t, "shop/web", app(t, "shop").Listener.Addr().String(), "shop.test")
	cl := f.client(p.Roots, true)
	url := f.url("shop.test", "/")

	resp, _ := get(t, cl, url)
	first := resp.TLS.PeerCertificates[0].SerialNumber
	deadline := time.Now().Add(patience)
	for strings.Count(logs.String(), "renewal information not read") < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("no warning about the failed renewal information after %s; log:\n%s", patience, logs.String())
		}
		time.Sleep(20 * time.Millisecond) // polling the log
	}
	if resp, body := get(t, cl, url); body != "shop" || resp.TLS.PeerCertificates[0].SerialNumber.Cmp(first) != 0 {
		t.Errorf("after failed renewal information: %q with serial %x, want shop with %x", body, resp.TLS.PeerCertificates[0].SerialNumber, first)
	}
	if n := p.Orders(); n != 1 {
		t.Errorf("%d orders, want 1", n)
	}
	if !strings.Contains(logs.String(), "503") {
		t.Errorf("the warning does not say what failed:\n%s", logs.String())
	}
}
