package testenv

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// sshdPath is where Debian's openssh-server puts sshd. sshd re-executes itself and so
// must be started with an absolute path.
const sshdPath = "/usr/sbin/sshd"

// SSHServer is a real OpenSSH sshd running as the current user on a loopback address,
// with generated keys, that accepts the user key UserSigner for User.
type SSHServer struct {
	Addr           string        // "127.0.0.1:port"
	Host           string        // "127.0.0.1"
	Port           int           // the port sshd listens on
	User           string        // the current user's name; the only one that can log in
	UserKeyFile    string        // the user's private key (OpenSSH PEM, no passphrase)
	UserSigner     ssh.Signer    // the same key, parsed
	HostKey        ssh.PublicKey // the server's current host key
	KnownHostsFile string        // a known_hosts file with the host key sshd started with

	dir     string
	cfgFile string
	keyN    int
	log     *lockedBuffer // stdout and stderr of every run of sshd
	proc    *sshdProcess
	opts    sshdOptions
}

// SSHDOption changes how SSHDOn configures or starts sshd.
type SSHDOption func(*sshdOptions)

type sshdOptions struct {
	wrapper  []string
	settings [][2]string // sshd_config keyword and value, in order
}

// SSHDWrapper starts sshd through argv: a command that ends by executing the arguments
// that follow it, sshd's path and its own arguments (unshare(1), for a mount
// namespace of its own). The wrapper must exec sshd, not fork it: stopping sshd
// signals the process started.
func SSHDWrapper(argv ...string) SSHDOption {
	return func(o *sshdOptions) { o.wrapper = append([]string(nil), argv...) }
}

// SSHDSetting sets an sshd_config keyword: it replaces the line SSHDOn would write for
// that keyword (LogLevel VERBOSE, Subsystem sftp internal-sftp, ...), or is added.
// Example: SSHDSetting("LogLevel", "DEBUG1").
func SSHDSetting(keyword, value string) SSHDOption {
	return func(o *sshdOptions) { o.settings = append(o.settings, [2]string{keyword, value}) }
}

// sshdProcess is one run of sshd.
type sshdProcess struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
	err  error         // Wait's result, set before done is closed
	once sync.Once
}

// SSHD starts an sshd on 127.0.0.1 on a free port and stops it when the test ends.
// Without /usr/sbin/sshd the test fails in CI and is skipped elsewhere.
func SSHD(t testing.TB, opts ...SSHDOption) *SSHServer {
	t.Helper()
	return SSHDOn(t, "127.0.0.1", opts...)
}

// SSHDOn is SSHD on a given loopback address ("127.0.0.2", for a second "host"), with
// a free port, or with the port given in addr ("127.0.0.2:2222").
func SSHDOn(t testing.TB, addr string, opts ...SSHDOption) *SSHServer {
	t.Helper()
	if _, err := os.Stat(sshdPath); err != nil {
		Missing(t, "OpenSSH sshd", "run scripts/install-deps.sh (apt-get install openssh-server)")
		return nil
	}
	Sweep(nil)
	host, port := addr, 0
	if h, p, err := net.SplitHostPort(addr); err == nil {
		host = h
		if port, err = strconv.Atoi(p); err != nil {
			t.Fatalf("sshd address %q: bad port", addr)
		}
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		t.Fatalf("sshd address %q: want a loopback IP address", addr)
	}
	name, err := currentUser()
	if err != nil {
		t.Fatalf("sshd: %v", err)
	}
	if os.Geteuid() == 0 {
		// Privilege separation directory; minimal containers lack it and sshd
		// refuses to start without it.
		if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
			t.Fatalf("sshd: create /run/sshd: %v", err)
		}
	}

	s := &SSHServer{Host: host, User: name, dir: t.TempDir(), log: &lockedBuffer{}}
	for _, opt := range opts {
		opt(&s.opts)
	}
	s.UserKeyFile = filepath.Join(s.dir, "id_ed25519")
	userPub, signer := writeKey(t, s.UserKeyFile)
	s.UserSigner = signer
	if err := os.WriteFile(s.UserKeyFile+".pub", ssh.MarshalAuthorizedKey(userPub), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(s.dir, "authorized_keys"), ssh.MarshalAuthorizedKey(userPub), 0o600); err != nil {
		t.Fatal(err)
	}
	hostKeyFile := s.newHostKey(t)
	t.Cleanup(func() {
		s.stop()
		if t.Failed() {
			t.Logf("sshd on %s logged:\n%s", s.Addr, s.Log())
		}
	})

	// A free port can be taken by someone else between our probe and sshd's bind:
	// try a few times before giving up.
	for attempt := 1; ; attempt++ {
		p := port
		if p == 0 {
			p = freePort(t, host)
		}
		s.setPort(p)
		if err := os.WriteFile(filepath.Join(s.dir, "known_hosts"), []byte(s.KnownHostsLine()+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		s.KnownHostsFile = filepath.Join(s.dir, "known_hosts")
		logged := len(s.Log())
		err := s.start(t, hostKeyFile)
		if err == nil {
			return s
		}
		if port != 0 || attempt == 3 || !strings.Contains(s.Log()[logged:], "Address already in use") {
			t.Fatalf("%v (sshd's log is shown when the test ends)", err)
		}
	}
}

// KnownHostsLine is the known_hosts line for the server's current host key
// ("[127.0.0.1]:port ssh-ed25519 AAAA...").
func (s *SSHServer) KnownHostsLine() string {
	return knownhosts.Line([]string{knownhosts.Normalize(s.Addr)}, s.HostKey)
}

// HostKeyCallback checks host keys against KnownHostsFile.
func (s *SSHServer) HostKeyCallback() ssh.HostKeyCallback {
	cb, err := knownhosts.New(s.KnownHostsFile)
	if err != nil {
		return func(string, net.Addr, ssh.PublicKey) error {
			return fmt.Errorf("known_hosts %s: %w", s.KnownHostsFile, err)
		}
	}
	return cb
}

// ClientConfig is an ssh.ClientConfig for User with UserSigner, checking the host key
// against KnownHostsFile.
func (s *SSHServer) ClientConfig() *ssh.ClientConfig {
	return &ssh.ClientConfig{
		User:            s.User,
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(s.UserSigner)},
		HostKeyCallback: s.HostKeyCallback(),
		Timeout:         Scale(10 * time.Second),
	}
}

// RotateHostKey restarts sshd on the same port with a new host key. HostKey becomes
// the new key; KnownHostsFile keeps the old one, so a client checking it now sees a
// changed host key (KnownHostsLine gives the line for the new key).
func (s *SSHServer) RotateHostKey(t testing.TB) {
	t.Helper()
	s.stop()
	hostKeyFile := s.newHostKey(t)
	if err := s.start(t, hostKeyFile); err != nil {
		t.Fatalf("%v (sshd's log is shown when the test ends)", err)
	}
}

// Restart stops sshd and starts it again on the same port with the same host key, as
// `systemctl restart ssh` does: sessions already open keep their own processes; a
// connection attempted meanwhile is refused.
func (s *SSHServer) Restart(t testing.TB) {
	t.Helper()
	s.stop()
	if err := s.start(t, filepath.Join(s.dir, fmt.Sprintf("ssh_host_ed25519_key.%d", s.keyN))); err != nil {
		t.Fatalf("%v (sshd's log is shown when the test ends)", err)
	}
}

// Authorize lets key log in as User too, as with another line in authorized_keys: for
// one client key that reaches several servers.
func (s *SSHServer) Authorize(t testing.TB, key ssh.PublicKey) {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(s.dir, "authorized_keys"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(ssh.MarshalAuthorizedKey(key)); err != nil {
		t.Fatal(err)
	}
}

// PID is the process ID of the running sshd (0 when it is not running): with
// SSHDWrapper, of the wrapper, which became sshd.
func (s *SSHServer) PID() int {
	if s.proc == nil || s.proc.cmd.Process == nil {
		return 0
	}
	select {
	case <-s.proc.done:
		return 0
	default:
	}
	return s.proc.cmd.Process.Pid
}

func (s *SSHServer) setPort(port int) {
	s.Port = port
	s.Addr = net.JoinHostPort(s.Host, strconv.Itoa(port))
}

// newHostKey writes a fresh ed25519 host key and makes it HostKey.
func (s *SSHServer) newHostKey(t testing.TB) string {
	t.Helper()
	s.keyN++
	file := filepath.Join(s.dir, fmt.Sprintf("ssh_host_ed25519_key.%d", s.keyN))
	pub, _ := writeKey(t, file)
	s.HostKey = pub
	return file
}

// start writes the config for hostKeyFile, starts sshd and waits for its banner.
func (s *SSHServer) start(t testing.TB, hostKeyFile string) error {
	t.Helper()
	s.cfgFile = filepath.Join(s.dir, "sshd_config")
	lines := []string{
		"ListenAddress " + s.Host,
		"Port " + strconv.Itoa(s.Port),
		"HostKey " + hostKeyFile,
		"AuthorizedKeysFile " + filepath.Join(s.dir, "authorized_keys"),
		"PasswordAuthentication no",
		"KbdInteractiveAuthentication no",
		"PubkeyAuthentication yes",
		"StrictModes no",
		"UsePAM no",
		"PermitRootLogin prohibit-password",
		"PidFile " + filepath.Join(s.dir, "sshd.pid"),
		"AllowStreamLocalForwarding yes",
		"AllowTcpForwarding yes",
		"Subsystem sftp internal-sftp",
		"LogLevel VERBOSE",
	}
	lines = applySettings(lines, s.opts.settings)
	cfg := strings.Join(append(lines, ""), "\n")
	if err := os.WriteFile(s.cfgFile, []byte(cfg), 0o600); err != nil {
		return err
	}

	p := &sshdProcess{done: make(chan struct{})}
	argv := append(append([]string(nil), s.opts.wrapper...), sshdPath, "-D", "-e", "-f", s.cfgFile)
	p.cmd = exec.Command(argv[0], argv[1:]...)
	p.cmd.Stdout = s.log
	p.cmd.Stderr = s.log
	// Left in the test's process group on purpose: a Ctrl-C on `go test`, which
	// runs no cleanups, still takes sshd down with it. A test binary killed at its
	// -timeout takes it down too (Pdeathsig); the ledger is the backstop (Sweep).
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		return fmt.Errorf("start sshd: %w", err)
	}
	if err := trackProc(p.cmd.Process.Pid); err != nil {
		_ = p.cmd.Process.Kill()
		return fmt.Errorf("sshd: %w", err)
	}
	s.proc = p
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	// A backstop, not a window: waitBanner returns as soon as sshd answers or exits.
	if err := waitBanner(s.Addr, p, Scale(time.Minute)); err != nil {
		s.stop()
		return fmt.Errorf("sshd on %s: %w", s.Addr, err)
	}
	return nil
}

// applySettings replaces the lines of lines whose keyword a setting names (the first
// word, any case; for Subsystem, the first two) and adds the others at the end.
func applySettings(lines []string, settings [][2]string) []string {
	key := func(line string) string {
		f := strings.Fields(strings.ToLower(line))
		switch {
		case len(f) == 0:
			return ""
		case f[0] == "subsystem" && len(f) > 1:
			return f[0] + " " + f[1]
		}
		return f[0]
	}
	for _, kv := range settings {
		line := kv[0] + " " + kv[1]
		replaced := false
		for i, l := range lines {
			if key(l) == key(line) {
				lines[i], replaced = line, true
			}
		}
		if !replaced {
			lines = append(lines, line)
		}
	}
	return lines
}

// stop ends the running sshd, if any, and waits for it.
func (s *SSHServer) stop() {
	p := s.proc
	if p == nil {
		return
	}
	p.once.Do(func() {
		select {
		case <-p.done:
			return
		default:
		}
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(Scale(5 * time.Second)):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
}

// waitBanner waits until addr accepts connections and sends an SSH banner, or the
// process exits.
func waitBanner(addr string, p *sshdProcess, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		select {
		case <-p.done:
			return fmt.Errorf("sshd exited: %v", p.err)
		default:
		}
		banner, err := readBanner(addr)
		if err == nil && strings.HasPrefix(banner, "SSH-2.0-") {
			return nil
		}
		if err == nil {
			err = fmt.Errorf("unexpected banner %q", banner)
		}
		last = err
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("no SSH banner after %s: %v", timeout, last)
}

func readBanner(addr string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	// sshd sends its banner once it has forked for the connection, which a loaded
	// machine can take a while to do.
	_ = c.SetReadDeadline(time.Now().Add(Scale(30 * time.Second)))
	buf := make([]byte, 256)
	n, err := c.Read(buf)
	if n == 0 {
		return "", err
	}
	return strings.TrimSpace(string(buf[:n])), nil
}

// writeKey generates an ed25519 key, writes it to file in OpenSSH PEM form (mode 0600,
// as sshd demands of host keys) and returns its public half and a signer.
func writeKey(t testing.TB, file string) (ssh.PublicKey, ssh.Signer) {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return signer.PublicKey(), signer
}

// freePort asks the kernel for a free TCP port on host.
func freePort(t testing.TB, host string) int {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatalf("find a free port on %s: %v", host, err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func currentUser() (string, error) {
	if u, err := user.Current(); err == nil {
		return u.Username, nil
	}
	if name := os.Getenv("USER"); name != "" {
		return name, nil
	}
	return "", errors.New("cannot tell the current user's name")
}
