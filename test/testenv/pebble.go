package testenv

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// PebbleVersion is the version of Let's Encrypt's test CA (github.com/letsencrypt/pebble/v2)
// that the tests build from the Go module proxy.
const PebbleVersion = "v2.10.3"

// PebbleOptions say where Pebble validates challenges and what it issues.
type PebbleOptions struct {
	// HTTPPort and TLSPort are the ports of 127.0.0.1 that Pebble connects to for
	// HTTP-01 and TLS-ALPN-01 (the proxy's plain and TLS listeners; 80 and 443 on a
	// real CA).
	HTTPPort, TLSPort int
	// Validity of the certificates it issues; 0: 90 days.
	Validity time.Duration
}

// PebbleServer is a running Pebble ACME server with its DNS test server
// (pebble-challtestsrv), which answers 127.0.0.1 for every name.
type PebbleServer struct {
	// Directory is the ACME directory URL.
	Directory string
	// Client trusts Pebble's API certificate: the ACME client's HTTP client.
	Client *http.Client
	// APIRoots is a PEM file of the CA of Pebble's API certificate, for an ACME client
	// in another process (shipd's acme.roots).
	APIRoots string
	// Roots holds the root Pebble issues certificates under: what an HTTPS client of
	// the proxy trusts.
	Roots *x509.CertPool

	orders    atomic.Int64
	challMgmt string
	logMu     sync.Mutex
	log       []string
}

// Orders returns how many orders Pebble has received.
func (p *PebbleServer) Orders() int { return int(p.orders.Load()) }

// SetA makes the DNS test server answer ip (not 127.0.0.1) for host, as for a name whose
// DNS does not point at this server.
func (p *PebbleServer) SetA(t testing.TB, host, ip string) {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"host": host, "addresses": []string{ip}})
	resp, err := http.Post("http://"+p.challMgmt+"/add-a", "application/json", strings.NewReader(string(body)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("pebble-challtestsrv add-a: %s", resp.Status)
	}
}

// Log returns Pebble's output so far.
func (p *PebbleServer) Log() string {
	p.logMu.Lock()
	defer p.logMu.Unlock()
	return strings.Join(p.log, "\n")
}

// Pebble builds (once, into the user's cache directory) and starts Pebble and
// pebble-challtestsrv on free ports of 127.0.0.1, and stops them when the test ends.
// Without Go and the module proxy the part is Missing.
func Pebble(t testing.TB, o PebbleOptions) *PebbleServer {
	t.Helper()
	bin, err := pebbleBinaries()
	if err != nil {
		Missing(t, "Pebble (ACME test server)", fmt.Sprintf("go install github.com/letsencrypt/pebble/v2/cmd/...@%s failed: %v", PebbleVersion, err))
	}
	dir := t.TempDir()
	// Pebble's HTTPS API, on 127.0.0.1 and localhost.
	certFile, keyFile, roots, err := WriteCert(dir, "api", CertOptions{Names: []string{"localhost"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}})
	if err != nil {
		t.Fatal(err)
	}
	apiCert := [2]string{certFile, keyFile}
	p := &PebbleServer{Client: &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}, APIRoots: filepath.Join(dir, "api-ca.pem")}
	free := freeAddrs(t, 4)
	dns, mgmt, listen, pmgmt := free[0], free[1], free[2], free[3]
	p.challMgmt = mgmt
	startProcess(t, p, filepath.Join(bin, "pebble-challtestsrv"), nil,
		"-defaultIPv4", "127.0.0.1", "-defaultIPv6", "", "-dnsserver", dns, "-management", mgmt,
		"-http01", "", "-https01", "", "-tlsalpn01", "", "-doh", "")
	waitHTTP(t, p, &http.Client{}, "http://"+mgmt+"/", "pebble-challtestsrv")
	waitTCP(t, p, dns, "pebble-challtestsrv's DNS")

	cfg := pebbleConfig(listen, pmgmt, apiCert, o)
	file := filepath.Join(dir, "pebble.json")
	if err := os.WriteFile(file, cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	env := []string{"PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0"}
	startProcess(t, p, filepath.Join(bin, "pebble"), env, "-config", file, "-dnsserver", dns)
	p.Directory = "https://" + listen + "/dir"
	waitHTTP(t, p, p.Client, p.Directory, "pebble")
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("pebble and pebble-challtestsrv output:\n%s", p.Log())
		}
	})

	resp, err := p.Client.Get("https://" + pmgmt + "/roots/0")
	if err != nil {
		t.Fatal(err)
	}
	root, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	p.Roots = x509.NewCertPool()
	if !p.Roots.AppendCertsFromPEM(root) {
		t.Fatalf("pebble root: not PEM: %q", root)
	}
	return p
}

// pebbleBinaries returns the directory of pebble and pebble-challtestsrv, built with go
// install at PebbleVersion into the user's cache directory the first time.
func pebbleBinaries() (string, error) {
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	dir := filepath.Join(cache, "ship-test", "pebble-"+PebbleVersion)
	if _, err := os.Stat(filepath.Join(dir, "pebble-challtestsrv")); err == nil {
		return dir, nil
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return "", err
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dir), "pebble-build-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	mod := "github.com/letsencrypt/pebble/v2/cmd/"
	cmd := exec.Command("go", "install", mod+"pebble@"+PebbleVersion, mod+"pebble-challtestsrv@"+PebbleVersion)
	cmd.Dir = tmp
	cmd.Env = append(os.Environ(), "GOBIN="+tmp, "CGO_ENABLED=0", "GOFLAGS=")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("%v\n%s", err, out)
	}
	// Another test process may have got there first: its binaries are as good.
	if err := os.Rename(tmp, dir); err != nil {
		if _, serr := os.Stat(filepath.Join(dir, "pebble-challtestsrv")); serr != nil {
			return "", err
		}
	}
	return dir, nil
}

func pebbleConfig(listen, mgmt string, apiCert [2]string, o PebbleOptions) []byte {
	validity := o.Validity
	if validity <= 0 {
		validity = 90 * 24 * time.Hour
	}
	cfg := map[string]any{"pebble": map[string]any{
		"listenAddress":                  listen,
		"managementListenAddress":        mgmt,
		"certificate":                    apiCert[0],
		"privateKey":                     apiCert[1],
		"httpPort":                       o.HTTPPort,
		"tlsPort":                        o.TLSPort,
		"ocspResponderURL":               "",
		"externalAccountBindingRequired": false,
		"retryAfter":                     map[string]int{"authz": 1, "order": 1},
		"keyAlgorithm":                   "ecdsa",
		"profiles": map[string]any{"default": map[string]any{
			"description": "ship tests", "validityPeriod": int(validity.Seconds()),
		}},
	}}
	data, _ := json.Marshal(cfg)
	return data
}

// startProcess starts bin, keeps its output in p's log (counting Pebble's orders) and
// stops it when the test ends.
func startProcess(t testing.TB, p *PebbleServer, bin string, env []string, args ...string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // killed with a test binary at its -timeout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if err := trackProc(cmd.Process.Pid); err != nil {
		cmd.Process.Kill()
		t.Fatal(err)
	}
	read := make(chan struct{})
	go func() {
		defer close(read)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			line := sc.Text()
			if strings.Contains(line, "Added order") {
				p.orders.Add(1)
			}
			p.logMu.Lock()
			p.log = append(p.log, filepath.Base(bin)+": "+line)
			p.logMu.Unlock()
		}
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-read
		cmd.Wait()
	})
}

// waitHTTP waits until url answers, or fails the test when the process has logged
// nothing new for a minute.
func waitHTTP(t testing.TB, p *PebbleServer, cl *http.Client, url, what string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), Scale(2*time.Minute))
	defer cancel()
	for {
		req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
		resp, err := cl.Do(req)
		if err == nil {
			resp.Body.Close()
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s did not answer at %s: %v\n%s", what, url, err, p.Log())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// freeAddrs returns n distinct addresses of 127.0.0.1 whose ports are free for both TCP
// and UDP (the DNS server takes both): each is held until all are picked.
func freeAddrs(t testing.TB, n int) []string {
	t.Helper()
	var addrs []string
	var closers []io.Closer
	defer func() {
		for _, c := range closers {
			c.Close()
		}
	}()
	for len(addrs) < n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		closers = append(closers, ln)
		pc, err := net.ListenPacket("udp", ln.Addr().String())
		if err != nil {
			continue // taken for UDP: try another
		}
		closers = append(closers, pc)
		addrs = append(addrs, ln.Addr().String())
	}
	return addrs
}

// waitTCP waits until addr accepts a TCP connection.
func waitTCP(t testing.TB, p *PebbleServer, addr, what string) {
	t.Helper()
	deadline := time.Now().Add(Scale(2 * time.Minute))
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not answer at %s: %v\n%s", what, addr, err, p.Log())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
