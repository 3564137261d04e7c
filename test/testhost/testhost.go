// Package testhost starts test servers for ship's tests: Debian bookworm containers
// with systemd as PID 1, sshd and a Docker engine of their own, on a Docker network of
// their own (scripts/testhost makes them). A test logs in to them over SSH, checking
// their host keys, as root or as the deploy user (in the docker group), and the inner
// engines pull from a test registry on this machine through a loopback port of each
// host.
//
// The hosts are slow to make (the image: minutes, once; a host: seconds), so the tests
// that use them run only when asked: SHIP_TEST_HOSTS=1 (make test-hosts). In CI
// (CI=true) a host that cannot be built or started fails the test.
package testhost

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/client"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/shipdeploy/ship/test/testenv"
)

// Enabled reports whether the host tests were asked for (SHIP_TEST_HOSTS=1).
func Enabled() bool {
	v := os.Getenv("SHIP_TEST_HOSTS")
	return v != "" && v != "0" && v != "false"
}

// DeployUser is the hosts' non-root user, in the docker group.
const DeployUser = "deploy"

// Cluster is a set of hosts on a network of their own, with the test registry
// reachable from their engines.
type Cluster struct {
	Name    string  // the network's name; host K is Name-K
	Hosts   []*Host //
	Gateway string  // this machine's address on the hosts' network
	// KeyFile is the private key (OpenSSH PEM) that logs in as root and as DeployUser;
	// KnownHostsFile lists every host's key by its IP address.
	KeyFile        string
	KnownHostsFile string
	// Registry is the test registry: Registry.Addr (127.0.0.1:port) is the same
	// address on this machine and on every host.
	Registry *testenv.RegistryServer

	cli    *client.Client
	signer ssh.Signer
}

// Host is one test server.
type Host struct {
	Name string // the container's name
	IP   string // its address on the cluster's network; sshd listens on port 22
	c    *Cluster
}

var (
	imageOnce sync.Once
	imageRef  string
	imageErr  error
	sweepOnce sync.Once
)

// Script is scripts/testhost.
func Script() string { return filepath.Join(testenv.RepoRoot(), "scripts", "testhost") }

// Image builds the host image when it is not cached (scripts/testhost image) and
// returns its reference, once per process. It says how long a build took.
func Image(t testing.TB) string {
	t.Helper()
	imageOnce.Do(func() {
		began := time.Now()
		var stderr bytes.Buffer
		cmd := exec.Command(Script(), "image")
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			imageErr = fmt.Errorf("scripts/testhost image: %v\n%s", err, stderr.String())
			return
		}
		imageRef = strings.TrimSpace(string(out))
		t.Logf("host image %s ready in %s%s", imageRef, time.Since(began).Round(time.Millisecond), indent(stderr.String()))
	})
	if imageErr != nil {
		testenv.Missing(t, "the test host image", imageErr.Error())
	}
	return imageRef
}

// Start starts n hosts and a registry they can pull from, and removes them when the
// test ends (their journals of shipd are logged first if it failed). Leftovers of a
// killed run are swept first.
func Start(t testing.TB, n int) *Cluster {
	t.Helper()
	cli := testenv.Docker(t)
	Image(t)
	sweepOnce.Do(func() {
		if out, err := exec.Command(Script(), "sweep").CombinedOutput(); err != nil {
			t.Logf("scripts/testhost sweep: %v\n%s", err, out)
		}
	})
	if os.Getenv("SHIP_TEST_HOSTS_DEBUG") == "" {
		testenv.RegistryLog(io.Discard)
	}
	reg := testenv.Registry(t)
	_, port, _ := net.SplitHostPort(reg.Addr)
	c := &Cluster{Name: "ship-testhost-" + randomHex(4), Registry: reg, cli: cli}
	keys := t.TempDir()
	c.KeyFile = filepath.Join(keys, "id_ed25519")
	c.KnownHostsFile = filepath.Join(keys, "known_hosts")

	began := time.Now()
	t.Cleanup(func() { c.remove(t) })
	var stderr bytes.Buffer
	cmd := exec.Command(Script(), "up", "-n", strconv.Itoa(n), "--name", c.Name, "--keys", keys,
		"--registry-port", port, "--owner-pid", strconv.Itoa(os.Getpid()))
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		testenv.Missing(t, "test hosts", fmt.Sprintf("scripts/testhost up: %v\n%s", err, stderr.String()))
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 2 {
			c.Hosts = append(c.Hosts, &Host{Name: f[0], IP: f[1], c: c})
		}
	}
	if len(c.Hosts) != n {
		t.Fatalf("scripts/testhost up printed %d hosts, want %d:\n%s", len(c.Hosts), n, out)
	}
	key, err := os.ReadFile(c.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	if c.signer, err = ssh.ParsePrivateKey(key); err != nil {
		t.Fatal(err)
	}
	res, err := cli.NetworkInspect(context.Background(), c.Name, client.NetworkInspectOptions{})
	nw := res.Network
	if err != nil || len(nw.IPAM.Config) == 0 {
		t.Fatalf("inspect network %s: %v", c.Name, err)
	}
	c.Gateway = nw.IPAM.Config[0].Gateway.String()
	forward(t, net.JoinHostPort(c.Gateway, port), reg.Addr)
	t.Logf("%d host(s) of %s up in %s: %s", n, c.Name, time.Since(began).Round(time.Millisecond), c)
	return c
}

func (c *Cluster) String() string {
	var names []string
	for _, h := range c.Hosts {
		names = append(names, h.Name+"="+h.IP)
	}
	return strings.Join(names, " ")
}

// remove logs shipd's journal of each host when the test failed, then removes them.
func (c *Cluster) remove(t testing.TB) {
	if t.Failed() {
		for _, h := range c.Hosts {
			out, err := h.Run("journalctl -b --no-pager -o cat -n 200 -u shipd")
			t.Logf("%s: journalctl -u shipd (%v):\n%s", h.Name, err, out)
		}
	}
	if os.Getenv("SHIP_TEST_HOSTS_KEEP") != "" {
		t.Logf("SHIP_TEST_HOSTS_KEEP: %s left running; scripts/testhost down %s removes them", c.Name, c.Name)
		return
	}
	if out, err := exec.Command(Script(), "down", c.Name).CombinedOutput(); err != nil {
		t.Errorf("scripts/testhost down %s: %v\n%s", c.Name, err, out)
	}
}

// KnownHosts is the content of KnownHostsFile.
func (c *Cluster) KnownHosts(t testing.TB) string {
	t.Helper()
	data, err := os.ReadFile(c.KnownHostsFile)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// Key is the private key's text (for SHIP_SSH_KEY).
func (c *Cluster) Key(t testing.TB) string {
	t.Helper()
	data, err := os.ReadFile(c.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// forward accepts connections on listen (the gateway's port, which the hosts'
// registry forwarders reach) and relays each to target (the registry on 127.0.0.1)
// until the test ends. It returns the address it listens on.
func forward(t testing.TB, listen, target string) string {
	t.Helper()
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		t.Fatalf("registry forwarder: %v", err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	track := func(c net.Conn, add bool) {
		mu.Lock()
		defer mu.Unlock()
		if add {
			conns[c] = true
		} else {
			delete(conns, c)
		}
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer in.Close()
				out, err := net.Dial("tcp", target)
				if err != nil {
					return
				}
				defer out.Close()
				track(in, true)
				track(out, true)
				defer track(in, false)
				defer track(out, false)
				done := make(chan struct{})
				go func() { _, _ = io.Copy(out, in); out.(*net.TCPConn).CloseWrite(); close(done) }()
				_, _ = io.Copy(in, out)
				in.(*net.TCPConn).CloseWrite()
				<-done
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

// Restart restarts the host's container (docker restart: a reboot of the server) and
// waits until systemd has booted and sshd answers. Its address may change: IP is
// updated.
func (h *Host) Restart(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if _, err := h.c.cli.ContainerRestart(ctx, h.Name, containerRestartOptions()); err != nil {
		t.Fatalf("restart %s: %v", h.Name, err)
	}
	res, err := h.c.cli.ContainerInspect(ctx, h.Name, client.ContainerInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ins := res.Container
	if ep := ins.NetworkSettings.Networks[h.c.Name]; ep != nil && ep.IPAddress.String() != h.IP {
		t.Logf("%s: address %s after the restart (was %s)", h.Name, ep.IPAddress, h.IP)
		h.IP = ep.IPAddress.String()
		h.c.trust(t)
	}
	WaitFor(t, h.Name+" answers over SSH after its restart", 2*time.Minute, func() error {
		_, err := h.Run("true")
		return err
	})
	out, err := h.Run("systemctl is-system-running --wait")
	if err != nil {
		t.Logf("%s: systemd is %s after the restart (%v); failed units:\n%s", h.Name, strings.TrimSpace(out), err, h.MustRun(t, "systemctl --failed --no-legend || true"))
	}
}

// trust rewrites KnownHostsFile for the hosts' current addresses, with the keys they
// made at their first boot (a host keeps its keys across restarts).
func (c *Cluster) trust(t testing.TB) {
	t.Helper()
	var b strings.Builder
	for _, h := range c.Hosts {
		pub, err := os.ReadFile(filepath.Join(filepath.Dir(c.KeyFile), h.Name+".pub"))
		if err != nil {
			t.Fatal(err)
		}
		for len(bytes.TrimSpace(pub)) > 0 {
			var key ssh.PublicKey
			key, _, _, pub, err = ssh.ParseAuthorizedKey(pub)
			if err != nil {
				t.Fatalf("%s's host keys: %v", h.Name, err)
			}
			b.WriteString(knownhosts.Line([]string{h.IP}, key) + "\n")
		}
	}
	if err := os.WriteFile(c.KnownHostsFile, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}

// WaitFor calls check until it returns nil, and fails the test with its last error
// when it has not within timeout (a bound for a broken host, not a pace).
func WaitFor(t testing.TB, what string, timeout time.Duration, check func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %s: %v", what, timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func indent(s string) string {
	s = strings.TrimSpace(s)
	if s == "" {
		return ""
	}
	return "\n  " + strings.ReplaceAll(s, "\n", "\n  ")
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}
