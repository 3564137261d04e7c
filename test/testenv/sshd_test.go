package testenv

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/moby/moby/client"
	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

func dialSSH(t *testing.T, s *SSHServer) *ssh.Client {
	t.Helper()
	c, err := ssh.Dial("tcp", s.Addr, s.ClientConfig())
	if err != nil {
		t.Fatalf("dial %s: %v", s.Addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestSSHD(t *testing.T) {
	t.Parallel()
	s := SSHD(t)
	c := dialSSH(t, s)

	tests := []struct {
		name string
		run  func(t *testing.T)
	}{
		{"exec", func(t *testing.T) {
			sess, err := c.NewSession()
			if err != nil {
				t.Fatal(err)
			}
			defer sess.Close()
			out, err := sess.CombinedOutput("echo hello")
			if err != nil {
				t.Fatalf("echo hello: %v\n%s", err, out)
			}
			if string(out) != "hello\n" {
				t.Fatalf("output = %q, want %q", out, "hello\n")
			}
		}},
		{"sftp", func(t *testing.T) {
			sc, err := sftp.NewClient(c)
			if err != nil {
				t.Fatalf("sftp: %v", err)
			}
			defer sc.Close()
			name := filepath.Join(t.TempDir(), "hello.txt")
			f, err := sc.Create(name)
			if err != nil {
				t.Fatalf("create %s: %v", name, err)
			}
			if _, err := f.Write([]byte("over sftp\n")); err != nil {
				t.Fatal(err)
			}
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
			f, err = sc.Open(name)
			if err != nil {
				t.Fatalf("open %s: %v", name, err)
			}
			defer f.Close()
			got, err := io.ReadAll(f)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != "over sftp\n" {
				t.Fatalf("read back %q", got)
			}
		}},
		{"docker socket forward", func(t *testing.T) {
			Docker(t) // skips (fails in CI) without an engine
			sock := DockerSocket(t)
			cli, err := client.New(
				client.WithHost("unix://"+sock),
				client.WithDialContext(func(ctx context.Context, _, _ string) (net.Conn, error) {
					return c.DialContext(ctx, "unix", sock)
				}),
			)
			if err != nil {
				t.Fatal(err)
			}
			defer cli.Close()
			ping, err := cli.Ping(t.Context(), client.PingOptions{NegotiateAPIVersion: true})
			if err != nil {
				t.Fatalf("docker ping through ssh: %v", err)
			}
			if ping.APIVersion == "" {
				t.Fatalf("ping answered without an API version: %+v", ping)
			}
		}},
		{"changed host key", func(t *testing.T) {
			cfg := s.ClientConfig()
			cfg.HostKeyCallback = otherKnownHosts(t, s.Addr)
			_, err := ssh.Dial("tcp", s.Addr, cfg)
			assertKeyMismatch(t, err)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, tt.run)
	}
}

func TestSSHDRotateHostKey(t *testing.T) {
	t.Parallel()
	s := SSHD(t)
	dialSSH(t, s).Close()
	old, addr := s.HostKey, s.Addr

	s.RotateHostKey(t)
	if s.Addr != addr {
		t.Fatalf("address changed: %s -> %s", addr, s.Addr)
	}
	if string(s.HostKey.Marshal()) == string(old.Marshal()) {
		t.Fatal("host key did not change")
	}
	_, err := ssh.Dial("tcp", s.Addr, s.ClientConfig())
	assertKeyMismatch(t, err)

	cfg := s.ClientConfig()
	cfg.HostKeyCallback = ssh.FixedHostKey(s.HostKey)
	c, err := ssh.Dial("tcp", s.Addr, cfg)
	if err != nil {
		t.Fatalf("dial with the new key: %v", err)
	}
	c.Close()
}

func TestSSHDOn(t *testing.T) {
	t.Parallel()
	first := SSHD(t)
	for _, host := range []string{"127.0.0.2", "127.0.0.3"} {
		t.Run(host, func(t *testing.T) {
			t.Parallel()
			s := SSHDOn(t, host)
			if s.Host != host || !strings.HasPrefix(s.Addr, host+":") {
				t.Fatalf("Host %q Addr %q, want %s", s.Host, s.Addr, host)
			}
			known, err := os.ReadFile(s.KnownHostsFile)
			if err != nil {
				t.Fatal(err)
			}
			if want := "[" + host + "]:"; !strings.HasPrefix(string(known), want) {
				t.Fatalf("known_hosts %q does not start with %q", known, want)
			}
			dialSSH(t, s).Close()

			// One client key for several hosts.
			s.Authorize(t, first.UserSigner.PublicKey())
			cfg := s.ClientConfig()
			cfg.Auth = []ssh.AuthMethod{ssh.PublicKeys(first.UserSigner)}
			c, err := ssh.Dial("tcp", s.Addr, cfg)
			if err != nil {
				t.Fatalf("dial %s with another server's user key: %v", s.Addr, err)
			}
			c.Close()
		})
	}
}

// otherKnownHosts is a known_hosts callback that expects a freshly made key for addr.
func otherKnownHosts(t *testing.T, addr string) ssh.HostKeyCallback {
	t.Helper()
	dir := t.TempDir()
	pub, _ := writeKey(t, filepath.Join(dir, "other_key"))
	file := filepath.Join(dir, "known_hosts")
	line := knownhosts.Line([]string{knownhosts.Normalize(addr)}, pub) + "\n"
	if err := os.WriteFile(file, []byte(line), 0o600); err != nil {
		t.Fatal(err)
	}
	cb, err := knownhosts.New(file)
	if err != nil {
		t.Fatal(err)
	}
	return cb
}

func assertKeyMismatch(t *testing.T, err error) {
	t.Helper()
	var keyErr *knownhosts.KeyError
	if !errors.As(err, &keyErr) {
		t.Fatalf("dial error = %v, want a *knownhosts.KeyError", err)
	}
	if len(keyErr.Want) == 0 {
		t.Fatalf("KeyError without Want (unknown host, not a changed key): %v", err)
	}
}

func TestApplySettings(t *testing.T) {
	base := []string{"Port 22", "LogLevel VERBOSE", "Subsystem sftp internal-sftp", "Subsystem other /bin/other"}
	tests := []struct {
		name     string
		settings [][2]string
		want     []string
	}{
		{"none", nil, base},
		{"replace", [][2]string{{"LogLevel", "DEBUG1"}},
			[]string{"Port 22", "LogLevel DEBUG1", "Subsystem sftp internal-sftp", "Subsystem other /bin/other"}},
		{"any case", [][2]string{{"loglevel", "DEBUG1"}},
			[]string{"Port 22", "loglevel DEBUG1", "Subsystem sftp internal-sftp", "Subsystem other /bin/other"}},
		{"subsystem by name", [][2]string{{"Subsystem", "sftp /usr/lib/openssh/sftp-server"}},
			[]string{"Port 22", "LogLevel VERBOSE", "Subsystem sftp /usr/lib/openssh/sftp-server", "Subsystem other /bin/other"}},
		{"added", [][2]string{{"PermitUserRC", "no"}}, append(slices.Clone(base), "PermitUserRC no")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := applySettings(slices.Clone(base), tt.settings)
			if !slices.Equal(got, tt.want) {
				t.Errorf("applySettings = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestSSHDOptions(t *testing.T) {
	// env(1) execs what follows it, as a wrapper must.
	s := SSHD(t, SSHDWrapper("env", "SHIP_SSHD_WRAPPED=1"), SSHDSetting("LogLevel", "DEBUG1"))
	c, err := ssh.Dial("tcp", s.Addr, s.ClientConfig())
	if err != nil {
		t.Fatalf("dial %s: %v", s.Addr, err)
	}
	c.Close()
	if !strings.Contains(s.Log(), "debug1: ") {
		t.Errorf("no debug1 lines with LogLevel DEBUG1:\n%s", s.Log())
	}
	pid := s.PID()
	if pid == 0 {
		t.Fatal("PID = 0 for a running sshd")
	}
	// The wrapper became sshd: the process started is sshd itself.
	comm, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "comm"))
	if err == nil && strings.TrimSpace(string(comm)) != "sshd" {
		t.Errorf("process %d is %q, want sshd", pid, strings.TrimSpace(string(comm)))
	}
}

func TestWaitLog(t *testing.T) {
	t.Parallel()
	s := SSHD(t)
	offset := len(s.Log())
	c, err := ssh.Dial("tcp", s.Addr, s.ClientConfig())
	if err != nil {
		t.Fatalf("dial %s: %v", s.Addr, err)
	}
	// sshd logs the login before it answers it: the line is there already, and
	// WaitLog returns the log through it.
	got := s.WaitLog(t, offset, func(line string) bool { return strings.HasPrefix(line, "Accepted publickey for ") })
	if !strings.HasPrefix(lastLine(got), "Accepted publickey for "+s.User) {
		t.Fatalf("WaitLog returned %q, want the log through the login line", got)
	}
	c.Close()
	// A line still to come: sshd logs the end of a refused connection after the
	// client has gone.
	offset = len(s.Log())
	cfg := s.ClientConfig()
	cfg.HostKeyCallback = otherKnownHosts(t, s.Addr)
	if _, err := ssh.Dial("tcp", s.Addr, cfg); err == nil {
		t.Fatal("dial with another host key succeeded")
	}
	got = s.WaitLog(t, offset, func(line string) bool { return strings.HasSuffix(line, " [preauth]") })
	if !strings.HasPrefix(lastLine(got), "Connection closed by ") {
		t.Fatalf("WaitLog returned %q, want the log through the close line", got)
	}
}

// lastLine is the last non-empty line of text, without its line ending.
func lastLine(text string) string {
	lines := strings.Split(strings.TrimRight(text, "\r\n"), "\n")
	return strings.TrimRight(lines[len(lines)-1], "\r")
}
