package sshx_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/shipdeploy/ship/pkg/sshx"
	"github.com/shipdeploy/ship/test/testenv"
)

// options are hermetic Options for s: a fresh home, no ssh config, no agent, s's
// known_hosts file and user key.
func options(t *testing.T, s *testenv.SSHServer) sshx.Options {
	t.Helper()
	return sshx.Options{
		HomeDir:         t.TempDir(),
		ConfigFile:      "none",
		AgentSocket:     "none",
		KnownHostsFiles: []string{s.KnownHostsFile},
		IdentityFiles:   []string{s.UserKeyFile},
		// A backstop, not a window: an encrypted key's bcrypt rounds under -race on
		// a loaded machine have taken more than 10s.
		DialTimeout: time.Minute,
		Logger:      testLogger(t),
	}
}

func dest(s *testenv.SSHServer) string { return s.User + "@" + s.Addr }

// dial dials and fails the test on error; the client is closed when the test ends.
func dial(t *testing.T, dest string, o sshx.Options) *sshx.Client {
	t.Helper()
	c, err := sshx.Dial(t.Context(), dest, o)
	if err != nil {
		t.Fatalf("dial %s: %v", dest, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// dialErr dials, expecting an error.
func dialErr(t *testing.T, dest string, o sshx.Options) error {
	t.Helper()
	c, err := sshx.Dial(t.Context(), dest, o)
	if err == nil {
		c.Close()
		t.Fatalf("dial %s succeeded, want an error", dest)
	}
	t.Logf("dial %s: %v", dest, err)
	return err
}

func run(t *testing.T, c *sshx.Client, cmd string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	out, errOut, err := c.Run(ctx, cmd)
	if err != nil {
		t.Fatalf("%v\n%s", err, errOut)
	}
	return string(out)
}

// testLogger collects debug logs and shows them if the test fails.
func testLogger(t *testing.T) *slog.Logger {
	t.Helper()
	buf := &lockedBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("sshx logged:\n%s", buf.String())
		}
	})
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// newKey makes an ed25519 key, returning its signer and its private key.
func newKey(t *testing.T) (ssh.Signer, ed25519.PrivateKey) {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return s, priv
}

// writeKeyFile writes priv in OpenSSH form, encrypted with passphrase if not empty.
func writeKeyFile(t *testing.T, file string, priv ed25519.PrivateKey, passphrase string) {
	t.Helper()
	var block *pem.Block
	var err error
	if passphrase == "" {
		block, err = ssh.MarshalPrivateKey(priv, "")
	} else {
		block, err = ssh.MarshalPrivateKeyWithPassphrase(priv, "", []byte(passphrase))
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
}

// noAuthAttempted waits for sshd to log that a connection made since offset ended
// before authentication, and fails if sshd logged an authentication attempt first.
func noAuthAttempted(t *testing.T, s *testenv.SSHServer, offset int) {
	t.Helper()
	// Lines of connections older than offset (the port probe of a restart, say) may
	// still come after it: only ports sshd greeted since offset count.
	ports := map[string]bool{}
	log := s.WaitLog(t, offset, func(line string) bool {
		if m := connFrom.FindStringSubmatch(line); m != nil {
			ports[m[1]] = true
			return false
		}
		if authWord(line) != "" {
			return true // fail now rather than wait for an end that may never say [preauth]
		}
		// "Connection closed by 127.0.0.1 port 40076 [preauth]", or reset, or
		// "Unable to negotiate with ...": sshd's own word that it ended before auth.
		m := preauthEnd.FindStringSubmatch(line)
		return m != nil && ports[m[1]]
	})
	for _, line := range strings.Split(log, "\n") {
		if w := authWord(line); w != "" {
			t.Fatalf("sshd logged %q before the connection ended, so authentication was attempted:\n%s", w, log)
		}
	}
}

var (
	connFrom   = regexp.MustCompile(`^Connection from \S+ port (\d+) on `)
	preauthEnd = regexp.MustCompile(`^(?:Connection closed by|Connection reset by|Disconnected from|Unable to negotiate with) \S+ port (\d+)\b.*\[preauth\]$`)
)

// authWord is the word of line that shows an authentication attempt, if any.
func authWord(line string) string {
	for _, word := range []string{"publickey", "Accepted", "Failed", "Postponed", "authenticat"} {
		if strings.Contains(line, word) {
			return word
		}
	}
	return ""
}

func TestDialRun(t *testing.T) {
	t.Parallel()
	s := testenv.SSHD(t)
	c := dial(t, dest(s), options(t, s))
	if c.Host() != dest(s) {
		t.Errorf("Host() = %q, want %q", c.Host(), dest(s))
	}

	t.Run("echo", func(t *testing.T) {
		if got := run(t, c, "echo hi"); got != "hi\n" {
			t.Fatalf("echo hi printed %q", got)
		}
	})
	t.Run("quoting", func(t *testing.T) {
		args := []string{"a b", "it's", "$HOME", "", `"q"`, "x;y", "`id`"}
		got := run(t, c, "printf '%s|' "+sshx.ShellQuote(args...))
		if want := strings.Join(args, "|") + "|"; got != want {
			t.Fatalf("printed %q, want %q", got, want)
		}
	})
	t.Run("exit status", func(t *testing.T) {
		out, errOut, err := c.Run(t.Context(), "echo out; echo err >&2; exit 3")
		var exit *ssh.ExitError
		if !errors.As(err, &exit) || exit.ExitStatus() != 3 {
			t.Fatalf("err = %v, want exit status 3", err)
		}
		if string(out) != "out\n" || string(errOut) != "err\n" {
			t.Fatalf("stdout %q, stderr %q", out, errOut)
		}
		if !strings.Contains(err.Error(), dest(s)) {
			t.Fatalf("error %q does not name the host", err)
		}
	})
	t.Run("cancel", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, _, err := c.Run(ctx, "sleep 30")
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v, want the deadline", err)
		}
		// Well before the command would have ended by itself: the cancel ended it.
		if d := time.Since(start); d > 20*time.Second {
			t.Fatalf("Run returned %s after it started, as if it waited for sleep 30", d)
		}
		// The connection is still good.
		if got := run(t, c, "echo still"); got != "still\n" {
			t.Fatalf("after a cancelled Run: %q", got)
		}
	})
}

func TestKnownHosts(t *testing.T) {
	t.Parallel()
	s := testenv.SSHD(t)
	key := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(s.HostKey)))

	t.Run("hashed entry in the user's file", func(t *testing.T) {
		o := options(t, s)
		o.KnownHostsFiles = nil
		file := filepath.Join(o.HomeDir, ".ssh", "known_hosts")
		if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
			t.Fatal(err)
		}
		line := knownhosts.HashHostname(knownhosts.Normalize(s.Addr)) + " " + key
		if !strings.HasPrefix(line, "|1|") {
			t.Fatalf("not a hashed line: %s", line)
		}
		other, _ := newKey(t)
		text := "# hosts\n" + knownhosts.Line([]string{"elsewhere"}, other.PublicKey()) + "\n" + line + "\n"
		if err := os.WriteFile(file, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		c := dial(t, dest(s), o)
		if got := run(t, c, "echo ok"); got != "ok\n" {
			t.Fatalf("got %q", got)
		}
	})

	t.Run("unknown host", func(t *testing.T) {
		o := options(t, s)
		o.KnownHostsFiles = []string{filepath.Join(t.TempDir(), "missing")}
		offset := len(s.Log())
		err := dialErr(t, dest(s), o)
		if !errors.Is(err, sshx.ErrUnknownHost) || errors.Is(err, sshx.ErrHostKeyChanged) {
			t.Fatalf("err = %v, want ErrUnknownHost", err)
		}
		msg := err.Error()
		for _, want := range []string{dest(s), sshx.Fingerprint(s.HostKey), s.KnownHostsLine(), "--accept-new-host-key", "ssh-ed25519"} {
			if !strings.Contains(msg, want) {
				t.Errorf("error does not say %q:\n%s", want, msg)
			}
		}
		var hkErr *sshx.HostKeyError
		if !errors.As(err, &hkErr) || hkErr.Line != s.KnownHostsLine() {
			t.Fatalf("HostKeyError = %+v, want Line %q", hkErr, s.KnownHostsLine())
		}
		if _, err := os.Stat(filepath.Join(o.HomeDir, ".ssh", "known_hosts")); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("the refusal wrote known_hosts (%v)", err)
		}
		noAuthAttempted(t, s, offset)
	})

	t.Run("accept new host key", func(t *testing.T) {
		o := options(t, s)
		o.KnownHostsFiles = nil
		o.AcceptNewHostKey = true
		file := filepath.Join(o.HomeDir, ".ssh", "known_hosts")
		c := dial(t, dest(s), o)
		run(t, c, "true")

		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		if want := s.KnownHostsLine() + "\n"; string(data) != want {
			t.Fatalf("known_hosts = %q, want %q", data, want)
		}
		for path, mode := range map[string]os.FileMode{file: 0o600, filepath.Dir(file): 0o700} {
			st, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if st.Mode().Perm() != mode {
				t.Errorf("%s has mode %o, want %o", path, st.Mode().Perm(), mode)
			}
		}

		o.AcceptNewHostKey = false
		c2 := dial(t, dest(s), o)
		run(t, c2, "true")
	})

	t.Run("accept new host key appends", func(t *testing.T) {
		o := options(t, s)
		o.KnownHostsFiles = nil
		o.AcceptNewHostKey = true
		o.UserKnownHosts = filepath.Join(t.TempDir(), "mine")
		if err := os.WriteFile(o.UserKnownHosts, []byte("# no newline"), 0o600); err != nil {
			t.Fatal(err)
		}
		dial(t, dest(s), o)
		data, err := os.ReadFile(o.UserKnownHosts)
		if err != nil {
			t.Fatal(err)
		}
		if want := "# no newline\n" + s.KnownHostsLine() + "\n"; string(data) != want {
			t.Fatalf("known_hosts = %q, want %q", data, want)
		}
	})
}

// countingAgent is an ssh-agent that counts every use.
type countingAgent struct {
	agent.Agent
	uses atomic.Int32
}

func (a *countingAgent) List() ([]*agent.Key, error) {
	a.uses.Add(1)
	return a.Agent.List()
}

func (a *countingAgent) Sign(key ssh.PublicKey, data []byte) (*ssh.Signature, error) {
	a.uses.Add(1)
	return a.Agent.Sign(key, data)
}

func (a *countingAgent) Signers() ([]ssh.Signer, error) {
	a.uses.Add(1)
	return a.Agent.Signers()
}

// serveAgent serves a on a unix socket until the test ends and returns its path.
func serveAgent(t *testing.T, a agent.Agent) string {
	t.Helper()
	// Unix socket paths are short: t.TempDir's can be too long.
	dir, err := os.MkdirTemp("", "sshx-agent-")
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "agent.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		l.Close()
		wg.Wait()
		os.RemoveAll(dir)
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer conn.Close()
				_ = agent.ServeAgent(a, conn)
			}()
		}
	}()
	return sock
}

func userKeyring(t *testing.T, s *testenv.SSHServer) agent.Agent {
	t.Helper()
	data, err := os.ReadFile(s.UserKeyFile)
	if err != nil {
		t.Fatal(err)
	}
	priv, err := ssh.ParseRawPrivateKey(data)
	if err != nil {
		t.Fatal(err)
	}
	ring := agent.NewKeyring()
	if err := ring.Add(agent.AddedKey{PrivateKey: priv, Comment: "test user"}); err != nil {
		t.Fatal(err)
	}
	return ring
}

func TestHostKeyChanged(t *testing.T) {
	t.Parallel()
	s := testenv.SSHD(t)
	oldKey := s.HostKey
	dial(t, dest(s), options(t, s)).Close()

	s.RotateHostKey(t)
	ag := &countingAgent{Agent: userKeyring(t, s)}
	var asked atomic.Int32
	o := options(t, s)
	o.AgentSocket = serveAgent(t, ag)
	o.AcceptNewHostKey = true // never for a changed key
	o.Passphrase = func(string) ([]byte, error) { asked.Add(1); return nil, errors.New("no") }
	offset := len(s.Log())

	err := dialErr(t, dest(s), o)
	if !errors.Is(err, sshx.ErrHostKeyChanged) || errors.Is(err, sshx.ErrUnknownHost) {
		t.Fatalf("err = %v, want ErrHostKeyChanged", err)
	}
	msg := err.Error()
	for _, want := range []string{
		"WARNING", dest(s), sshx.Fingerprint(oldKey), sshx.Fingerprint(s.HostKey),
		s.KnownHostsFile + ":1", "before authentication",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("error does not say %q:\n%s", want, msg)
		}
	}
	if n := ag.uses.Load(); n != 0 {
		t.Errorf("the agent was used %d times after the host key was refused", n)
	}
	if n := asked.Load(); n != 0 {
		t.Errorf("a passphrase was asked for %d times", n)
	}
	if _, err := os.Stat(filepath.Join(o.HomeDir, ".ssh", "known_hosts")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("AcceptNewHostKey wrote known_hosts for a changed key (%v)", err)
	}
	noAuthAttempted(t, s, offset)

	// Only an RSA key known, and the host has none: refused as a changed key, not
	// as a handshake failure.
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rsaPub, err := ssh.NewPublicKey(&rsaKey.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	o.KnownHostsFiles = []string{filepath.Join(t.TempDir(), "known_hosts")}
	line := knownhosts.Line([]string{knownhosts.Normalize(s.Addr)}, rsaPub) + "\n"
	if err := os.WriteFile(o.KnownHostsFiles[0], []byte(line), 0o600); err != nil {
		t.Fatal(err)
	}
	offset = len(s.Log())
	err = dialErr(t, dest(s), o)
	if !errors.Is(err, sshx.ErrHostKeyChanged) || !strings.Contains(err.Error(), "none of the key types") {
		t.Fatalf("err = %v, want ErrHostKeyChanged for a host without the known key type", err)
	}
	if n := ag.uses.Load(); n != 0 {
		t.Errorf("the agent was used %d times", n)
	}
	noAuthAttempted(t, s, offset)
}

func TestSSHConfig(t *testing.T) {
	t.Parallel()
	s := testenv.SSHD(t)
	o := options(t, s)
	o.ConfigFile = "" // the default: ~/.ssh/config under HomeDir
	o.IdentityFiles = nil
	sshDir := filepath.Join(o.HomeDir, ".ssh")
	if err := os.MkdirAll(sshDir, 0o700); err != nil {
		t.Fatal(err)
	}
	key, err := os.ReadFile(s.UserKeyFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(sshDir, "deploy_key"), key, 0o600); err != nil {
		t.Fatal(err)
	}
	config := fmt.Sprintf(`
Host web
  HostName %s
  Port %d
  User %s
  IdentityFile ~/.ssh/deploy_key

Host *
  User nobody-at-all
`, s.Host, s.Port, s.User)
	if err := os.WriteFile(filepath.Join(sshDir, "config"), []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}

	c := dial(t, "web", o)
	if c.Host() != "web" {
		t.Errorf("Host() = %q", c.Host())
	}
	if got, want := run(t, c, "id -un"), s.User+"\n"; got != want {
		t.Errorf("logged in as %q, want %q", got, want)
	}

	// The destination's port beats the config's.
	err = dialErr(t, "web:1", o)
	if !strings.Contains(err.Error(), s.Host+":1") {
		t.Errorf("dial web:1: %v, want a connection to port 1", err)
	}
	// A config that does not parse is an error naming it.
	bad := filepath.Join(t.TempDir(), "config")
	if err := os.WriteFile(bad, []byte("Match exec \"true\"\n  User x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	o.ConfigFile = bad
	if err := dialErr(t, "web", o); !strings.Contains(err.Error(), bad) {
		t.Errorf("err = %v, want it to name %s", err, bad)
	}
}

func TestProxyJump(t *testing.T) {
	t.Parallel()
	target := testenv.SSHD(t)
	jump1 := testenv.SSHDOn(t, "127.0.0.2")
	jump2 := testenv.SSHDOn(t, "127.0.0.3")
	for _, j := range []*testenv.SSHServer{jump1, jump2} {
		j.Authorize(t, target.UserSigner.PublicKey())
	}
	o := options(t, target)
	o.KnownHostsFiles = []string{target.KnownHostsFile, jump1.KnownHostsFile, jump2.KnownHostsFile}
	o.ConfigFile = filepath.Join(t.TempDir(), "config")
	config := fmt.Sprintf(`
Host app
  HostName %s
  Port %d
  ProxyJump j1,%s@%s

Host j1
  HostName %s
  Port %d
`, target.Host, target.Port, jump2.User, jump2.Addr, jump1.Host, jump1.Port)
	if err := os.WriteFile(o.ConfigFile, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}

	c := dial(t, "app", o)
	if got := run(t, c, "echo through"); got != "through\n" {
		t.Fatalf("got %q", got)
	}
	for name, s := range map[string]*testenv.SSHServer{"first jump": jump1, "second jump": jump2, "target": target} {
		if !strings.Contains(s.Log(), "Accepted publickey") {
			t.Errorf("the %s logged no login:\n%s", name, s.Log())
		}
	}
	sc, err := c.SFTP()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sc.RealPath(t.Context(), "."); err != nil {
		t.Fatalf("sftp through the jumps: %v", err)
	}

	// Every hop's host key is checked.
	o.KnownHostsFiles = []string{target.KnownHostsFile, jump1.KnownHostsFile}
	err = dialErr(t, "app", o)
	if !errors.Is(err, sshx.ErrUnknownHost) || !strings.Contains(err.Error(), jump2.Addr) {
		t.Fatalf("err = %v, want the second jump host's key unknown", err)
	}
}

func TestAgent(t *testing.T) {
	t.Parallel()
	s := testenv.SSHD(t)
	o := options(t, s)
	o.IdentityFiles = nil // and HomeDir has no keys
	o.AgentSocket = serveAgent(t, userKeyring(t, s))
	c := dial(t, dest(s), o)
	run(t, c, "true")

	// An agent with another key only.
	_, other := newKey(t)
	ring := agent.NewKeyring()
	if err := ring.Add(agent.AddedKey{PrivateKey: other}); err != nil {
		t.Fatal(err)
	}
	o.AgentSocket = serveAgent(t, ring)
	err := dialErr(t, dest(s), o)
	if !errors.Is(err, sshx.ErrAuth) || !strings.Contains(err.Error(), "ssh-agent (1 key)") {
		t.Fatalf("err = %v, want ErrAuth naming the agent", err)
	}
}

func TestEncryptedKey(t *testing.T) {
	t.Parallel()
	s := testenv.SSHD(t)
	dir := t.TempDir()
	signer, priv := newKey(t)
	s.Authorize(t, signer.PublicKey())
	encrypted := filepath.Join(dir, "id_encrypted")
	writeKeyFile(t, encrypted, priv, "correct horse")

	passphrase := func(answer string, asked *[]string) func(string) ([]byte, error) {
		var mu sync.Mutex
		return func(file string) ([]byte, error) {
			mu.Lock()
			defer mu.Unlock()
			*asked = append(*asked, file)
			return []byte(answer), nil
		}
	}

	t.Run("no passphrase prompt", func(t *testing.T) {
		o := options(t, s)
		o.IdentityFiles = []string{encrypted}
		err := dialErr(t, dest(s), o)
		if !errors.Is(err, sshx.ErrAuth) {
			t.Fatalf("err = %v, want ErrAuth", err)
		}
		for _, want := range []string{encrypted, "encrypted", "ssh-agent", "SHIP_SSH_KEY", dest(s)} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error does not say %q: %v", want, err)
			}
		}
	})
	t.Run("passphrase", func(t *testing.T) {
		var asked []string
		o := options(t, s)
		o.IdentityFiles = []string{encrypted}
		o.Passphrase = passphrase("correct horse", &asked)
		run(t, dial(t, dest(s), o), "true")
		if len(asked) != 1 || asked[0] != encrypted {
			t.Fatalf("asked for %q, want once for %s", asked, encrypted)
		}
	})
	t.Run("wrong passphrase", func(t *testing.T) {
		var asked []string
		o := options(t, s)
		o.IdentityFiles = []string{encrypted}
		o.Passphrase = passphrase("wrong", &asked)
		err := dialErr(t, dest(s), o)
		if !errors.Is(err, sshx.ErrAuth) || !strings.Contains(err.Error(), "wrong passphrase") {
			t.Fatalf("err = %v, want a wrong passphrase", err)
		}
		if len(asked) != 3 {
			t.Fatalf("asked %d times, want 3", len(asked))
		}
	})
	t.Run("not asked for a key the host refuses", func(t *testing.T) {
		_, stranger := newKey(t)
		refused := filepath.Join(dir, "id_refused")
		writeKeyFile(t, refused, stranger, "whatever")
		var asked []string
		o := options(t, s)
		o.IdentityFiles = []string{refused, s.UserKeyFile}
		o.Passphrase = passphrase("whatever", &asked)
		run(t, dial(t, dest(s), o), "true")
		if len(asked) != 0 {
			t.Fatalf("asked for the passphrase of %q, which the host does not accept", asked)
		}
	})
}

func TestKeyText(t *testing.T) {
	t.Parallel()
	s := testenv.SSHD(t)
	text, err := os.ReadFile(s.UserKeyFile)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("key text", func(t *testing.T) {
		o := options(t, s)
		o.IdentityFiles = nil
		o.KeyText = string(text)
		run(t, dial(t, dest(s), o), "true")
	})
	t.Run("escaped newlines", func(t *testing.T) {
		o := options(t, s)
		o.IdentityFiles = nil
		o.KeyText = strings.ReplaceAll(strings.TrimSpace(string(text)), "\n", `\n`)
		run(t, dial(t, dest(s), o), "true")
	})
	t.Run("refused key", func(t *testing.T) {
		_, other := newKey(t)
		block, err := ssh.MarshalPrivateKey(other, "")
		if err != nil {
			t.Fatal(err)
		}
		keyText := string(pem.EncodeToMemory(block))
		o := options(t, s)
		o.IdentityFiles = nil
		o.KeyText = keyText
		err = dialErr(t, dest(s), o)
		if !errors.Is(err, sshx.ErrAuth) {
			t.Fatalf("err = %v, want ErrAuth", err)
		}
		msg := err.Error()
		if !strings.Contains(msg, dest(s)) || !strings.Contains(msg, "SHIP_SSH_KEY") {
			t.Errorf("error does not name the user@host and the methods tried: %s", msg)
		}
		body := strings.Split(strings.TrimSpace(keyText), "\n")[1]
		if strings.Contains(msg, "PRIVATE KEY") || strings.Contains(msg, body[:20]) {
			t.Errorf("error shows key material: %s", msg)
		}
	})
	t.Run("not a key", func(t *testing.T) {
		o := options(t, s)
		o.KeyText = "hunter2-secret"
		err := dialErr(t, dest(s), o)
		if !strings.Contains(err.Error(), "SHIP_SSH_KEY") || strings.Contains(err.Error(), "hunter2") {
			t.Fatalf("err = %v", err)
		}
	})
}

func TestIPv6(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		testenv.Missing(t, "an IPv6 loopback address (::1)", "enable IPv6 on lo (sysctl net.ipv6.conf.lo.disable_ipv6=0): "+err.Error())
		return
	}
	l.Close()
	s := testenv.SSHDOn(t, "::1")
	if !strings.HasPrefix(s.Addr, "[::1]:") {
		t.Fatalf("Addr = %q", s.Addr)
	}
	c := dial(t, dest(s), options(t, s))
	if got := run(t, c, "echo v6"); got != "v6\n" {
		t.Fatalf("got %q", got)
	}
}
