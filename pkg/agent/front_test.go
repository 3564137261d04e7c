package agent_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shipdeploy/ship/pkg/agentapi"
	"github.com/shipdeploy/ship/test/loadgen"
	"github.com/shipdeploy/ship/test/testenv"
)

// frontRelease writes a release of app a: one web service with the x-ship keys xship
// (a flow mapping's content, e.g. "host: shop.test, tls: true") and env's variables
// ("FAIL_HEALTH: '1'").
func frontRelease(t *testing.T, a *app, sha, xship string, env ...string) {
	t.Helper()
	var more strings.Builder
	for _, e := range env {
		more.WriteString("      " + e + "\n")
	}
	yaml := fmt.Sprintf(`services:
  web:
    image: %s
%s    environment:
      VERSION: %s
%s    stop_grace_period: 2s
    x-ship: {port: 8080, health: /up, drain: 2s, %s}
`, a.image, a.pull, sha, more.String(), xship)
	dir := filepath.Join(a.path, "releases", sha)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "docker-compose.yml"), []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
}

// frontClient sends requests to addr whatever the URL's host, over HTTPS trusting roots
// (HTTP/2 offered).
func frontClient(addr string, roots *x509.CertPool) *http.Client {
	dial := func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}
	tr := &http.Transport{DialContext: dial, TLSClientConfig: &tls.Config{RootCAs: roots}, ForceAttemptHTTP2: true}
	return &http.Client{Transport: tr, Timeout: 30 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}
}

// get GETs url through c and returns the response with its body read.
func get(t *testing.T, c *http.Client, url string) (*http.Response, string) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

func versionOf(t *testing.T, body string) string {
	t.Helper()
	var v struct{ Version string }
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		t.Fatalf("not a /version answer: %q", body)
	}
	return v.Version
}

// serial is the serial number of the certificate served for name on addr.
func serial(t *testing.T, addr, name string, roots *x509.CertPool) string {
	t.Helper()
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 30 * time.Second}, "tcp", addr, &tls.Config{ServerName: name, RootCAs: roots})
	if err != nil {
		t.Fatalf("TLS to %s as %s: %v", addr, name, err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber.String()
}

// TestFrontDoor runs two apps behind one shipd front door (one plain HTTP listener
// shared, one HTTPS listener) with a certificate from Pebble: routing by host, the
// redirect to HTTPS, a conflicting third app refused before anything runs, a swap of
// one app under HTTPS load while the other serves, a restart (fd store) and a handover
// that serve the stored certificate without a new order.
func TestFrontDoor(t *testing.T) {
	plain, secure := freeAddr(t), freeAddr(t)
	_, tlsPort, _ := net.SplitHostPort(secure)
	_, httpPort, _ := net.SplitHostPort(plain)
	hp, _ := strconv.Atoi(httpPort)
	tp, _ := strconv.Atoi(tlsPort)
	pebble := testenv.Pebble(t, testenv.PebbleOptions{HTTPPort: hp, TLSPort: tp})

	d := newDaemon(t)
	f, err := os.OpenFile(d.config, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, "acme:\n  directory: %s\n  roots: %s\n  email: ops@example.com\n", pebble.Directory, pebble.APIRoots)
	f.Close()
	d.start(false)

	// docs is made here, not in its subtest: the restarts find it whole.
	shop, blog, docs := newApp(t), newApp(t), newApp(t)
	var docsRoots *x509.CertPool // the CA of docs' own certificate
	shopX := fmt.Sprintf("host: shop.test, tls: true, listen: [%q, %q]", plain, secure)
	blogX := fmt.Sprintf("host: blog.test, listen: %q", plain)
	frontRelease(t, shop, "v1", shopX)
	frontRelease(t, blog, "v1", blogX)
	res, ev, err := shop.deploy(d, shop.request("v1", 10*time.Second))
	if err != nil || res.Result != agentapi.ResultDeployed {
		t.Fatalf("deploy shop: %+v %v\n%s", res, err, ev)
	}
	if !strings.Contains(ev.String(), "certificate for shop.test: issued") {
		t.Errorf("the deploy does not report the certificate:\n%s", ev)
	}
	blog.mustDeploy(d, "v1")
	orders := pebble.Orders()
	if orders != 1 {
		t.Errorf("pebble orders: %d, want 1", orders)
	}

	hc := frontClient(plain, nil)
	sc := frontClient(secure, pebble.Roots)
	httpsURL := "https://shop.test:" + tlsPort
	t.Run("routing", func(t *testing.T) {
		resp, body := get(t, sc, httpsURL+"/version")
		if resp.StatusCode != 200 || versionOf(t, body) != "v1" || resp.Proto != "HTTP/2.0" {
			t.Errorf("https shop: %s %s %q", resp.Proto, resp.Status, body)
		}
		resp, body = get(t, hc, "http://blog.test/version")
		if resp.StatusCode != 200 || versionOf(t, body) != "v1" {
			t.Errorf("http blog: %s %q", resp.Status, body)
		}
		resp, _ = get(t, hc, "http://shop.test/version?x=1")
		if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusMovedPermanently || loc != httpsURL+"/version?x=1" {
			t.Errorf("plain HTTP to the TLS host: %s, Location %q; want 301 to %s/version?x=1", resp.Status, loc, httpsURL)
		}
		resp, _ = get(t, hc, "http://nobody.test/version")
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("unknown host: %s, want 404", resp.Status)
		}
		st := d.status()
		var found bool
		for _, c := range st.Certs {
			if c.Host == "shop.test" && c.Error == "" && c.NotAfter.After(time.Now()) {
				found = true
			}
		}
		if !found {
			t.Errorf("status certs: %+v", st.Certs)
		}
		info, err := os.Stat(filepath.Join(filepath.Dir(d.state), "certs", "shop.test"))
		if err != nil || info.Mode().Perm() != 0o600 {
			t.Errorf("stored certificate: %v %v", info, err)
		}
	})

	t.Run("a conflicting app is refused before anything runs", func(t *testing.T) {
		other := newApp(t)
		frontRelease(t, other, "v1", blogX)
		res, ev, err := other.deploy(d, other.request("v1", 10*time.Second))
		if err == nil || !strings.Contains(err.Error(), "host blog.test path /") || !strings.Contains(err.Error(), blog.name+"/web") {
			t.Fatalf("deploy of a second app on blog.test: %+v, %v\n%s", res, err, ev)
		}
		if cs := other.containers(); len(cs) != 0 {
			t.Errorf("containers of the refused app: %v", cs)
		}
		if _, body := get(t, hc, "http://blog.test/version"); versionOf(t, body) != "v1" {
			t.Errorf("blog after the refusal: %q", body)
		}
	})

	t.Run("the app's own certificate", func(t *testing.T) {
		frontRelease(t, docs, "v1", fmt.Sprintf("host: docs.test, tls: true, listen: [%q, %q]", plain, secure))
		// As shipctl uploads ship.yaml's environment tls: {cert, key}.
		certFile, keyFile, roots, err := testenv.WriteCert(t.TempDir(), "docs", testenv.CertOptions{Names: []string{"docs.test"}})
		if err != nil {
			t.Fatal(err)
		}
		docsRoots = roots
		for from, to := range map[string]string{certFile: "tls-cert.pem", keyFile: "tls-key.pem"} {
			data, _ := os.ReadFile(from)
			if err := os.WriteFile(filepath.Join(docs.path, "releases", "v1", to), data, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		res, ev, err := docs.deploy(d, docs.request("v1", 10*time.Second))
		if err != nil || res.Result != agentapi.ResultDeployed {
			t.Fatalf("deploy docs: %+v %v\n%s", res, err, ev)
		}
		if !strings.Contains(ev.String(), "certificate for docs.test: the app's own") {
			t.Errorf("the deploy does not report the app's certificate:\n%s", ev)
		}
		resp, body := get(t, frontClient(secure, roots), "https://docs.test:"+tlsPort+"/version")
		if resp.StatusCode != 200 || versionOf(t, body) != "v1" {
			t.Errorf("https docs: %s %q", resp.Status, body)
		}
		if n := pebble.Orders(); n != orders {
			t.Errorf("pebble orders: %d, want %d: the app's own certificate needs none", n, orders)
		}
	})

	// loads sends requests to both apps for dur; the function it returns waits for them
	// and checks that every one was answered 2xx (with lost, that none was refused or
	// answered otherwise: a SIGKILL loses the requests in flight in the killed process).
	loads := func(dur time.Duration, lost ...bool) func() {
		run := func(url, host string, roots *x509.CertPool) chan *loadgen.Report {
			out := make(chan *loadgen.Report, 1)
			go func() {
				rep, err := loadgen.Run(context.Background(), loadgen.Config{
					URL: url, Host: host, RootCAs: roots, Rate: 100, Duration: dur, Conns: 4, Fresh: 0.3, Timeout: loadTimeout,
				})
				if err != nil {
					t.Error(err)
				}
				out <- rep
			}()
			return out
		}
		s := run("https://"+secure+"/version", "shop.test", pebble.Roots)
		b := run("http://"+plain+"/version", "blog.test", nil)
		return func() {
			t.Helper()
			for what, ch := range map[string]chan *loadgen.Report{"shop over HTTPS": s, "blog over HTTP": b} {
				rep := <-ch
				if rep == nil {
					t.FailNow()
				}
				t.Logf("%s: %d requests, %d 2xx, %d failed %v", what, rep.Requests, rep.OK, rep.Failed(), rep.Errors)
				if len(lost) > 0 {
					if rep.Errors["refused"] != 0 || rep.Non2xx != 0 || rep.Requests == 0 {
						t.Errorf("%s: %d requests, %d refused, %d non-2xx", what, rep.Requests, rep.Errors["refused"], rep.Non2xx)
					}
					continue
				}
				noFailures(t, what, rep)
			}
		}
	}

	t.Run("swap under HTTPS load", func(t *testing.T) {
		wait := loads(6 * time.Second)
		frontRelease(t, shop, "v2", shopX)
		shop.mustDeploy(d, "v2")
		wait()
		if _, body := get(t, sc, httpsURL+"/version"); versionOf(t, body) != "v2" {
			t.Errorf("shop after the swap: %q", body)
		}
		if _, body := get(t, hc, "http://blog.test/version"); versionOf(t, body) != "v1" {
			t.Errorf("blog after shop's swap: %q", body)
		}
	})

	t.Run("a failing version, then SIGKILL, under load on the front door", func(t *testing.T) {
		wait := loads(10*time.Second, true)
		frontRelease(t, shop, "bad", shopX, `FAIL_HEALTH: "1"`)
		res, ev, err := shop.deploy(d, shop.request("bad", 3*time.Second))
		if err == nil && res.Result == agentapi.ResultDeployed {
			t.Errorf("a version that fails its health check was deployed:\n%s", ev)
		}
		d.stop(syscall.SIGKILL)
		time.Sleep(100 * time.Millisecond) // systemd's RestartSec
		d.start(true)
		wait()
		if _, body := get(t, sc, httpsURL+"/version"); versionOf(t, body) != "v2" {
			t.Errorf("shop after the failed deploy and SIGKILL: %q", body)
		}
		if _, body := get(t, hc, "http://blog.test/version"); versionOf(t, body) != "v1" {
			t.Errorf("blog after SIGKILL: %q", body)
		}
	})

	t.Run("restart serves the stored certificate", func(t *testing.T) {
		before := serial(t, secure, "shop.test", pebble.Roots)
		wait := loads(4 * time.Second)
		d.stop(syscall.SIGTERM)
		d.start(true)
		wait()
		if after := serial(t, secure, "shop.test", pebble.Roots); after != before {
			t.Errorf("certificate serial %s after the restart, was %s", after, before)
		}
		if docsRoots != nil {
			// testenv.WriteCert's certificates have serial 2.
			if got := serial(t, secure, "docs.test", docsRoots); got != "2" {
				t.Errorf("docs.test after the restart: serial %s, want the app's own (2)", got)
			}
		}
		if n := pebble.Orders(); n != orders {
			t.Errorf("pebble orders after the restart: %d, want %d", n, orders)
		}
	})

	t.Run("handover serves the stored certificate", func(t *testing.T) {
		before := serial(t, secure, "shop.test", pebble.Roots)
		old := d.cmd.Process.Pid
		wait := loads(4 * time.Second)
		d.signal(syscall.SIGHUP)
		select {
		case <-d.exited:
		case <-time.After(30 * time.Second):
			t.Fatal("the old shipd did not exit after the handover")
		}
		st := d.status()
		if st.PID == old {
			t.Fatalf("still pid %d after the handover", old)
		}
		successor := st.PID
		t.Cleanup(func() { killPid(t, successor) })
		wait()
		if after := serial(t, secure, "shop.test", pebble.Roots); after != before {
			t.Errorf("certificate serial %s after the handover, was %s", after, before)
		}
		if n := pebble.Orders(); n != orders {
			t.Errorf("pebble orders after the handover: %d, want %d", n, orders)
		}
		if _, body := get(t, hc, "http://blog.test/version"); versionOf(t, body) != "v1" {
			t.Errorf("blog after the handover: %q", body)
		}
	})
}

// TestFrontDoorIssueError: a name whose DNS points elsewhere gets no certificate; the
// deploy's output and the status say why, with the fix, and the app still deploys.
func TestFrontDoorIssueError(t *testing.T) {
	plain, secure := freeAddr(t), freeAddr(t)
	_, httpPort, _ := net.SplitHostPort(plain)
	_, tlsPort, _ := net.SplitHostPort(secure)
	hp, _ := strconv.Atoi(httpPort)
	tp, _ := strconv.Atoi(tlsPort)
	pebble := testenv.Pebble(t, testenv.PebbleOptions{HTTPPort: hp, TLSPort: tp})
	// shipd listens on 127.0.0.1 only: the CA finds nothing at 127.0.0.2.
	pebble.SetA(t, "elsewhere.test", "127.0.0.2")
	d := newDaemon(t)
	f, err := os.OpenFile(d.config, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, "acme:\n  directory: %s\n  roots: %s\n", pebble.Directory, pebble.APIRoots)
	f.Close()
	d.start(false)

	a := newApp(t)
	frontRelease(t, a, "v1", fmt.Sprintf("host: elsewhere.test, tls: true, listen: [%q, %q]", plain, secure))
	res, ev, err := a.deploy(d, a.request("v1", 10*time.Second))
	if err != nil || res.Result != agentapi.ResultDeployed {
		t.Fatalf("deploy: %+v %v\n%s", res, err, ev)
	}
	const why = "certificate for elsewhere.test could not be issued"
	const fix = "check that its DNS A (and AAAA) record points here and that ports 80 and 443 are open"
	if out := ev.String(); !strings.Contains(out, why) || !strings.Contains(out, fix) {
		t.Errorf("the deploy's output does not say why and what to do:\n%s", out)
	}
	var found bool
	for _, c := range d.status().Certs {
		if c.Host == "elsewhere.test" && strings.Contains(c.Error, why) && strings.Contains(c.Error, fix) {
			found = true
		}
	}
	if !found {
		t.Errorf("status certs: %+v", d.status().Certs)
	}

	// Moved to another address: the listeners it leaves, which no route uses, close.
	other := freeAddr(t)
	frontRelease(t, a, "v2", fmt.Sprintf("host: elsewhere.test, listen: %q", other))
	a.mustDeploy(d, "v2")
	if resp, body := get(t, frontClient(other, nil), "http://elsewhere.test/version"); resp.StatusCode != 200 || versionOf(t, body) != "v2" {
		t.Errorf("on %s: %s %q", other, resp.Status, body)
	}
	for _, addr := range []string{plain, secure} {
		if c, err := net.DialTimeout("tcp", addr, 5*time.Second); err == nil {
			c.Close()
			t.Errorf("%s still accepts connections: no route uses it", addr)
		}
	}

	// An address another program holds fails the deploy before anything changes.
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	frontRelease(t, a, "v3", fmt.Sprintf("host: elsewhere.test, listen: %q", taken.Addr()))
	res, ev, err = a.deploy(d, a.request("v3", 10*time.Second))
	if err == nil && res.Result == agentapi.ResultDeployed || !strings.Contains(ev.String()+fmt.Sprint(res, err), "address already in use") {
		t.Errorf("deploy on a taken address: %+v %v\n%s", res, err, ev)
	}
	if _, body := get(t, frontClient(other, nil), "http://elsewhere.test/version"); versionOf(t, body) != "v2" {
		t.Errorf("after the refused deploy: %q, want v2 still served", body)
	}
}
