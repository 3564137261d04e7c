package certs_test

import (
	"crypto/x509"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shipdeploy/ship/pkg/proxy/certs"
	"github.com/shipdeploy/ship/test/testenv"
)

// customCert writes a certificate for names signed by a new CA, valid until notAfter,
// and its key; it returns the files and the CA.
func customCert(t *testing.T, notAfter time.Time, names ...string) (string, string, *x509.CertPool) {
	t.Helper()
	certFile, keyFile, roots, err := testenv.WriteCert(t.TempDir(), "custom", testenv.CertOptions{Names: names, NotAfter: notAfter})
	if err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile, roots
}

// An app's own certificate is served by SNI, wildcards too, with no ACME server at all.
func TestCustomCertificate(t *testing.T) {
	plainLn, secureLn := listeners(t)
	// Nothing listens at this directory: no ACME request may be made.
	f := startFront(t, plainLn, secureLn, certs.Config{Dir: t.TempDir(), Directory: "https://127.0.0.1:1/dir"}, nil)
	certFile, keyFile, roots := customCert(t, time.Now().Add(time.Hour), "custom.test", "*.wild.test")
	if err := f.certs.SetCustom("shop/web", certFile, keyFile); err != nil {
		t.Fatal(err)
	}
	f.route(t, "shop/web", app(t, "shop").Listener.Addr().String(), "custom.test", "*.wild.test")

	cl := f.client(roots, true)
	for _, host := range []string{"custom.test", "a.wild.test"} {
		if resp, body := get(t, cl, f.url(host, "/")); resp.StatusCode != 200 || body != "shop" {
			t.Errorf("%s: %d %q, want 200 shop", host, resp.StatusCode, body)
		}
	}
	st := f.certs.Status()
	if len(st) != 2 || !st[0].Custom || st[0].Host != "*.wild.test" || st[1].Host != "custom.test" {
		t.Errorf("status %+v, want the two custom names", st)
	}

	f.certs.RemoveCustom("shop/web")
	if _, err := f.client(roots, true).Get(f.url("custom.test", "/")); err == nil {
		t.Error("custom.test served after RemoveCustom")
	}

	old, oldKey, _ := customCert(t, time.Now().Add(-time.Minute), "old.test")
	if err := f.certs.SetCustom("old/web", old, oldKey); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Errorf("expired certificate: %v, want an error saying so", err)
	}
	if err := f.certs.SetCustom("x/web", filepath.Join(t.TempDir(), "none.pem"), keyFile); err == nil {
		t.Error("missing file: no error")
	}
}
