package certs_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/shipdeploy/ship/pkg/proxy"
	"github.com/shipdeploy/ship/pkg/proxy/certs"
	"github.com/shipdeploy/ship/test/testenv"
)

// patience bounds waits for what happens unless the code is broken; never the event.
const patience = 2 * time.Minute

// front is shipd's front door in a test: a Router on a plain and a TLS listener (the
// :80 and :443 of a server, high ports here) with certificates from a Manager.
type front struct {
	certs         *certs.Manager
	router        *proxy.Router
	plain, secure *proxy.Listener
	issued        chan string // the host of each certificate issued
}

// listeners opens the plain and TLS sockets of a front.
func listeners(t *testing.T) (net.Listener, net.Listener) {
	t.Helper()
	var lns [2]net.Listener
	for i := range lns {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns[i] = ln
	}
	return lns[0], lns[1]
}

func port(ln net.Listener) int { return ln.Addr().(*net.TCPAddr).Port }

// startFront serves a front on the two sockets with cfg (Directory and HTTPClient from
// pebble, when given) and shuts it down at the end of the test.
func startFront(t *testing.T, plainLn, secureLn net.Listener, cfg certs.Config, pebble *testenv.PebbleServer) *front {
	t.Helper()
	f := &front{issued: make(chan string, 16)}
	if pebble != nil {
		cfg.Directory, cfg.HTTPClient = pebble.Directory, pebble.Client
	}
	cfg.Issued = func(host string, _ time.Time) { f.issued <- host }
	m, err := certs.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	f.certs = m
	f.router = proxy.NewRouter(proxy.RouterOptions{Challenge: m.HTTPHandler(), HTTPSPort: port(secureLn)})
	m.SetPolicy(f.router.TLSHost)
	f.plain = proxy.NewListener(plainLn, f.router, proxy.ListenerOptions{})
	f.secure = proxy.NewListener(secureLn, f.router, proxy.ListenerOptions{TLS: m.TLSConfig()})
	for _, l := range []*proxy.Listener{f.plain, f.secure} {
		done := make(chan error, 1)
		go func() { done <- l.Serve() }()
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), patience)
			defer cancel()
			if err := l.Shutdown(ctx); err != nil {
				t.Errorf("shutdown: %v", err)
			}
			if err := <-done; err != nil {
				t.Errorf("serve: %v", err)
			}
		})
	}
	return f
}

// route binds a listener-less route for hosts with TLS and deploys addr to it.
func (f *front) route(t *testing.T, owner, addr string, hosts ...string) *proxy.Route {
	t.Helper()
	r := proxy.NewRoute(owner, nil, proxy.RouteOptions{})
	if err := f.router.Set(proxy.Binding{Owner: owner, Hosts: hosts, TLS: true}, r); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		f.router.Remove(owner)
		ctx, cancel := context.WithTimeout(context.Background(), patience)
		defer cancel()
		r.Shutdown(ctx)
	})
	swap(t, r, addr)
	return r
}

var check = proxy.HealthCheck{Path: "/", Interval: 20 * time.Millisecond, Timeout: patience, Deadline: patience}

func swap(t *testing.T, r *proxy.Route, addr string) {
	t.Helper()
	if err := r.Deploy(context.Background(), addr, check, patience); err != nil {
		t.Fatal(err)
	}
}

// app is a backend answering its name and counting what it served.
func app(t *testing.T, name string) *httptest.Server {
	t.Helper()
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, name)
	}))
	t.Cleanup(s.Close)
	return s
}

// client is an HTTPS client that reaches every name at the front's TLS listener and
// trusts roots; fresh makes it open a connection per request.
func (f *front) client(roots *x509.CertPool, fresh bool) *http.Client {
	addr := f.secure.Addr().String()
	tr := &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: roots},
		ForceAttemptHTTP2: true,
		DisableKeepAlives: fresh,
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	}
	return &http.Client{Transport: tr, Timeout: patience}
}

// url is the HTTPS URL of path on host at the front.
func (f *front) url(host, path string) string {
	return "https://" + host + ":" + strconv.Itoa(f.secure.Addr().(*net.TCPAddr).Port) + path
}

// get does a GET and returns the response with its body read.
func get(t *testing.T, cl *http.Client, url string) (*http.Response, string) {
	t.Helper()
	resp, err := cl.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp, string(body)
}

// waitServed waits until a handshake for host verifies against roots: a renewed
// certificate is stored (Issued) a moment before autocert serves it.
func (f *front) waitServed(t *testing.T, roots *x509.CertPool, host string) {
	t.Helper()
	deadline := time.Now().Add(patience)
	for {
		conn, err := tls.Dial("tcp", f.secure.Addr().String(), &tls.Config{ServerName: host, RootCAs: roots})
		if err == nil {
			conn.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s is not served under a certificate from the CA: %v", host, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitIssued waits for the certificate of host to be issued.
func (f *front) waitIssued(t *testing.T, host string) {
	t.Helper()
	timer := time.NewTimer(patience)
	defer timer.Stop()
	for {
		select {
		case h := <-f.issued:
			if h == host {
				return
			}
		case <-timer.C:
			t.Fatalf("no certificate issued for %s", host)
		}
	}
}
