package certs_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shipdeploy/ship/pkg/proxy"
	"github.com/shipdeploy/ship/pkg/proxy/certs"
	"github.com/shipdeploy/ship/test/testenv"
)

// pebbleFront starts Pebble validating at a new front's listeners, and the front.
func pebbleFront(t *testing.T, cfg certs.Config) (*front, *testenv.PebbleServer) {
	t.Helper()
	plainLn, secureLn := listeners(t)
	p := testenv.Pebble(t, testenv.PebbleOptions{HTTPPort: port(plainLn), TLSPort: port(secureLn)})
	if cfg.Dir == "" {
		cfg.Dir = filepath.Join(t.TempDir(), "certs")
	}
	return startFront(t, plainLn, secureLn, cfg, p), p
}

// Two apps on one TLS listener get a certificate each from Pebble; HTTPS verifies
// against Pebble's root, over HTTP/2; plain HTTP redirects; the files are private.
func TestTwoHostsGetCertificates(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	f, p := pebbleFront(t, certs.Config{Dir: dir})
	f.route(t, "shop/web", app(t, "shop").Listener.Addr().String(), "shop.test")
	f.route(t, "blog/web", app(t, "blog").Listener.Addr().String(), "blog.test", "www.blog.test")

	cl := f.client(p.Roots, false)
	for host, want := range map[string]string{"shop.test": "shop", "blog.test": "blog", "WWW.blog.test": "blog"} {
		resp, body := get(t, cl, f.url(host, "/"))
		if resp.StatusCode != 200 || body != want || resp.Proto != "HTTP/2.0" {
			t.Errorf("%s: %d %q over %s, want 200 %q over HTTP/2.0", host, resp.StatusCode, body, resp.Proto, want)
		}
	}
	if n := p.Orders(); n != 3 {
		t.Errorf("pebble received %d orders, want 3 (one per name)", n)
	}

	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	req, _ := http.NewRequest("GET", "http://"+f.plain.Addr().String()+"/cart?x=1", nil)
	req.Host = "shop.test"
	resp, err := noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if want := f.url("shop.test", "/cart?x=1"); resp.StatusCode != http.StatusMovedPermanently || resp.Header.Get("Location") != want {
		t.Errorf("plain HTTP: %d to %q, want 301 to %q", resp.StatusCode, resp.Header.Get("Location"), want)
	}

	if st, err := os.Stat(dir); err != nil || st.Mode().Perm() != 0o700 {
		t.Errorf("state directory: %v %v, want mode 0700", st.Mode(), err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil || len(entries) == 0 {
		t.Fatalf("state directory: %d entries, %v", len(entries), err)
	}
	for _, e := range entries {
		info, err := e.Info()
		if err != nil || info.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v (%v), want 0600", e.Name(), info.Mode().Perm(), err)
		}
	}
	// An unknown name gets no certificate, and no order.
	if _, err := f.client(p.Roots, true).Get(f.url("unknown.test", "/")); err == nil {
		t.Error("unknown.test: a handshake succeeded")
	}
	if n := p.Orders(); n != 3 {
		t.Errorf("pebble received %d orders after an unknown name, want 3", n)
	}
}

// httpsLoad sends GETs for host until stopped, on keep-alive and fresh connections, and
// counts answers that are not 200 from one of want.
type httpsLoad struct {
	stop     chan struct{}
	wg       sync.WaitGroup
	ok       atomic.Int64
	mu       sync.Mutex
	failures []string
}

func startHTTPSLoad(f *front, roots *x509.CertPool, url string) *httpsLoad {
	l := &httpsLoad{stop: make(chan struct{})}
	for i := range 4 {
		cl := f.client(roots, i >= 3)
		l.wg.Go(func() {
			for {
				select {
				case <-l.stop:
					return
				default:
				}
				resp, err := cl.Get(url)
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if err == nil && resp.StatusCode != 200 {
						err = fmt.Errorf("status %d", resp.StatusCode)
					}
				}
				if err != nil {
					l.mu.Lock()
					l.failures = append(l.failures, err.Error())
					l.mu.Unlock()
					continue
				}
				l.ok.Add(1)
			}
		})
	}
	return l
}

func (l *httpsLoad) waitOK(t *testing.T, n int64) {
	t.Helper()
	from := l.ok.Load()
	deadline := time.Now().Add(patience)
	for l.ok.Load() < from+n {
		if time.Now().After(deadline) {
			t.Fatalf("load: %d answers in %s", l.ok.Load()-from, patience)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (l *httpsLoad) halt(t *testing.T) {
	t.Helper()
	close(l.stop)
	l.wg.Wait()
	t.Logf("HTTPS load: %d answered 200, %d failed", l.ok.Load(), len(l.failures))
	if len(l.failures) > 0 {
		t.Errorf("HTTPS load: %d failed (first: %q)", len(l.failures), l.failures[:min(5, len(l.failures))])
	}
}

// A blue-green swap under HTTPS load fails no request.
func TestSwapUnderHTTPSLoad(t *testing.T) {
	f, p := pebbleFront(t, certs.Config{})
	blue := app(t, "blue")
	r := f.route(t, "shop/web", blue.Listener.Addr().String(), "shop.test")
	if err := f.certs.Obtain(context.Background(), "shop.test"); err != nil {
		t.Fatal(err)
	}
	l := startHTTPSLoad(f, p.Roots, f.url("shop.test", "/"))
	l.waitOK(t, 50)
	green := app(t, "green")
	swap(t, r, green.Listener.Addr().String())
	blue.Close()
	l.waitOK(t, 50)
	blue2 := app(t, "blue2")
	swap(t, r, blue2.Listener.Addr().String())
	green.Close()
	l.waitOK(t, 50)
	l.halt(t)
	if _, body := get(t, f.client(p.Roots, false), f.url("shop.test", "/")); body != "blue2" {
		t.Errorf("after the swaps: %q, want blue2", body)
	}
}

// A new Manager on the same state directory (shipd restarted, its sockets handed over)
// serves the stored certificate without a new order.
func TestRestartServesStoredCertificate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	plainLn, secureLn := listeners(t)
	p := testenv.Pebble(t, testenv.PebbleOptions{HTTPPort: port(plainLn), TLSPort: port(secureLn)})
	// The second front gets duplicates of the sockets, as a successor does.
	var dups [2]net.Listener
	for i, ln := range []net.Listener{plainLn, secureLn} {
		file, err := proxy.ListenerFile(ln)
		if err != nil {
			t.Fatal(err)
		}
		dups[i], err = net.FileListener(file)
		file.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
	backend := app(t, "shop").Listener.Addr().String()

	first := startFront(t, plainLn, secureLn, certs.Config{Dir: dir}, p)
	first.route(t, "shop/web", backend, "shop.test")
	resp, _ := get(t, first.client(p.Roots, true), first.url("shop.test", "/"))
	serial := resp.TLS.PeerCertificates[0].SerialNumber
	if p.Orders() != 1 {
		t.Fatalf("%d orders, want 1", p.Orders())
	}
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	if err := first.plain.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := first.secure.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}

	second := startFront(t, dups[0], dups[1], certs.Config{Dir: dir}, p)
	second.route(t, "shop/web2", backend, "shop.test")
	resp, body := get(t, second.client(p.Roots, true), second.url("shop.test", "/"))
	if body != "shop" || resp.TLS.PeerCertificates[0].SerialNumber.Cmp(serial) != 0 {
		t.Errorf("after the restart: %q with serial %v, want shop with the stored %v", body, resp.TLS.PeerCertificates[0].SerialNumber, serial)
	}
	if n := p.Orders(); n != 1 {
		t.Errorf("%d orders after the restart, want still 1", n)
	}
}

// writeCert stores a self-signed certificate for host, valid until notAfter, where
// autocert keeps host's certificate.
func writeCert(t *testing.T, dir, host string, notAfter time.Time) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: host}, DNSNames: []string{host},
		NotBefore: notAfter.Add(-48 * time.Hour), NotAfter: notAfter,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	data := append(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, host), data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// A stored certificate near its expiry is renewed; an expired one is replaced at the
// next handshake. Both are then served from Pebble.
func TestExpiringCertificatesAreReplaced(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	writeCert(t, dir, "soon.test", time.Now().Add(time.Hour))
	writeCert(t, dir, "gone.test", time.Now().Add(-time.Hour))
	f, p := pebbleFront(t, certs.Config{Dir: dir, RenewBefore: 24 * time.Hour})
	backend := app(t, "shop").Listener.Addr().String()
	f.route(t, "shop/web", backend, "soon.test", "gone.test")

	// Loading the stored one starts its renewal, which is due.
	if err := f.certs.Obtain(context.Background(), "soon.test"); err != nil {
		t.Fatal(err)
	}
	f.waitIssued(t, "soon.test")
	f.waitServed(t, p.Roots, "soon.test")
	cl := f.client(p.Roots, true)
	for _, host := range []string{"soon.test", "gone.test"} {
		if resp, body := get(t, cl, f.url(host, "/")); body != "shop" || resp.TLS.PeerCertificates[0].SerialNumber.Cmp(big.NewInt(7)) == 0 {
			t.Errorf("%s: %q, want shop under a certificate from Pebble", host, body)
		}
	}
	if n := p.Orders(); n != 2 {
		t.Errorf("%d orders, want 2", n)
	}
}

// A name whose DNS points elsewhere gets an error with the CA's reason and the fix; a
// handshake meanwhile gets the same error without a new order.
func TestIssueErrorSaysWhyAndTheFix(t *testing.T) {
	f, p := pebbleFront(t, certs.Config{})
	p.SetA(t, "elsewhere.test", "127.0.0.2")
	f.route(t, "shop/web", app(t, "shop").Listener.Addr().String(), "elsewhere.test")

	err := f.certs.Obtain(context.Background(), "elsewhere.test")
	var ie *certs.IssueError
	if !errors.As(err, &ie) {
		t.Fatalf("Obtain: %v, want an IssueError", err)
	}
	msg := err.Error()
	for _, want := range []string{"elsewhere.test", "127.0.0.2", ":connection", "DNS", "ports 80 and 443"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not say %q", msg, want)
		}
	}
	orders := p.Orders()
	if _, err := f.client(p.Roots, true).Get(f.url("elsewhere.test", "/")); err == nil {
		t.Error("a handshake for elsewhere.test succeeded")
	}
	if p.Orders() != orders {
		t.Errorf("a handshake during the retry wait made an order")
	}
	st := f.certs.Status()
	if len(st) != 1 || st[0].Host != "elsewhere.test" || !strings.Contains(st[0].Error, "ports 80 and 443") {
		t.Errorf("status %+v, want elsewhere.test with the error", st)
	}
}

// With :443 closed to the CA, the certificate comes by HTTP-01, answered on the plain
// listener through the Router's Challenge handler.
func TestHTTP01ThroughTheRouter(t *testing.T) {
	plainLn, secureLn := listeners(t)
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedPort := port(closed)
	closed.Close()
	p := testenv.Pebble(t, testenv.PebbleOptions{HTTPPort: port(plainLn), TLSPort: closedPort})
	f := startFront(t, plainLn, secureLn, certs.Config{Dir: t.TempDir()}, p)
	f.route(t, "shop/web", app(t, "shop").Listener.Addr().String(), "shop.test")

	if err := f.certs.Obtain(context.Background(), "shop.test"); err != nil {
		t.Fatal(err)
	}
	if resp, body := get(t, f.client(p.Roots, true), f.url("shop.test", "/")); resp.StatusCode != 200 || body != "shop" {
		t.Errorf("HTTPS after HTTP-01: %d %q", resp.StatusCode, body)
	}
	if !strings.Contains(p.Log(), "w/ HTTP: http://shop.test:"+fmt.Sprint(port(plainLn))+proxy.ChallengePrefix) {
		t.Errorf("pebble's log shows no http-01 validation:\n%s", p.Log())
	}
}
