package sshx

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/moby/moby/client"
	"golang.org/x/crypto/ssh"

	"github.com/shipdeploy/ship/pkg/sftpc"
)

// Sentinel errors, checked with errors.Is. The errors that match them say which
// host and what to do.
var (
	// ErrUnknownHost: no known_hosts file has a key for the host.
	ErrUnknownHost = errors.New("unknown SSH host key")
	// ErrHostKeyChanged: known_hosts has a key for the host, and the host offered
	// another one. Nothing was sent to the host.
	ErrHostKeyChanged = errors.New("SSH host key changed")
	// ErrAuth: the host accepted none of our keys, or a key could not be used.
	ErrAuth = errors.New("SSH authentication failed")
)

// Defaults of Options.
const (
	DefaultKeepalive   = 15 * time.Second
	DefaultDialTimeout = 15 * time.Second
	// DefaultDockerSocket is the Docker engine's socket on the host.
	DefaultDockerSocket = "/var/run/docker.sock"
	// keepaliveMisses is how many unanswered keepalives close the connection
	// (OpenSSH's ServerAliveCountMax).
	keepaliveMisses = 3
)

// Options says how Dial finds keys, known hosts and the SSH config. The zero value
// behaves like ssh(1) for the current user.
type Options struct {
	// KnownHostsFiles are checked in addition to UserKnownHosts and
	// /etc/ssh/ssh_known_hosts, e.g. a known_hosts file committed in the app's
	// repository. Missing files are fine.
	KnownHostsFiles []string
	// UserKnownHosts is the user's known_hosts file, the one AcceptNewHostKey
	// writes to. Default: ~/.ssh/known_hosts.
	UserKnownHosts string
	// AcceptNewHostKey trusts the key of a host that no known_hosts file knows and
	// appends it to UserKnownHosts (trust on first use). A changed key is refused
	// all the same.
	AcceptNewHostKey bool

	// KeyText is a private key's text (what SHIP_SSH_KEY holds; the caller reads
	// the variable). Literal "\n" sequences in a one-line value are read as line
	// breaks.
	KeyText string
	// IdentityFiles are key files tried before those of ssh_config's IdentityFile.
	// As with ssh(1), the default files (~/.ssh/id_ed25519, id_ecdsa, id_rsa) are
	// tried only when neither names a file. Missing files are skipped.
	IdentityFiles []string
	// AgentSocket is ssh-agent's socket. Default: $SSH_AUTH_SOCK; "none", or an
	// empty SSH_AUTH_SOCK, means no agent.
	AgentSocket string
	// ConfigFile is the ssh_config file. Default: ~/.ssh/config; "none" reads none.
	ConfigFile string
	// HomeDir is the home folder that "~" and the defaults above are relative to.
	// Default: the user's home ($HOME).
	HomeDir string
	// Passphrase is asked for the passphrase of an encrypted key file, only when
	// the host would accept that key; file names the key ("SHIP_SSH_KEY" for
	// KeyText). Nil (no terminal): such a key fails with an error naming it.
	Passphrase func(file string) ([]byte, error)

	// Keepalive is the interval of keepalive requests; after 3 unanswered ones
	// the connection is closed. Default 15s; negative disables them.
	Keepalive time.Duration
	// DialTimeout bounds the TCP connect and SSH handshake of each hop, not
	// counting the time spent in Passphrase. Default 15s.
	DialTimeout time.Duration
	// Logger gets debug logs (never key material). Nil: discarded.
	Logger *slog.Logger
}

// Client is one SSH connection to a host, through its jump hosts if it has any.
// Its methods are safe for concurrent use.
type Client struct {
	host   string // the destination as the user wrote it
	target string // user@host:port actually connected to
	ssh    *ssh.Client
	jumps  []*ssh.Client // in dial order; closed after ssh, last first
	log    *slog.Logger

	sftpMu sync.Mutex // held while the SFTP session starts

	mu      sync.Mutex
	sftp    *sftpc.Client
	dockers []*client.Client
	closed  bool
	stopCtx func() bool // unregisters the context.AfterFunc that closes the Client

	done      chan struct{}
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
	lost      atomic.Pointer[error] // why keepalive closed the connection
}

// Dial connects to dest, "[user@]host[:port]" or an ssh_config Host alias (IPv6
// addresses in brackets: "[::1]:22"), checks its host key, authenticates, and
// returns the connection. What dest says beats ssh_config, which beats the
// defaults (the current user, port 22).
//
// ctx is the connection's lifetime, not only the dial's: when it is cancelled,
// the dial is aborted or the Client is closed, and everything it carries with it.
// Close the Client when done in any case; bound only the dial with
// Options.DialTimeout.
func Dial(ctx context.Context, dest string, o Options) (*Client, error) {
	o = o.withDefaults()
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("ssh %s: %w", dest, err)
	}
	cfg, err := loadSSHConfig(o.ConfigFile)
	if err != nil {
		return nil, fmt.Errorf("ssh %s: %w", dest, err)
	}
	t, err := resolve(dest, cfg, o)
	if err != nil {
		return nil, fmt.Errorf("ssh %s: %w", dest, err)
	}
	chain, err := resolveJumps(t, cfg, o)
	if err != nil {
		return nil, fmt.Errorf("ssh %s: %w", dest, err)
	}
	keyText, err := parseKeyText(o.KeyText)
	if err != nil {
		return nil, fmt.Errorf("ssh %s: %w", dest, err)
	}

	var (
		prev  *ssh.Client
		jumps []*ssh.Client
	)
	closeJumps := func() {
		for i := len(jumps) - 1; i >= 0; i-- {
			jumps[i].Close()
		}
	}
	for _, hop := range chain {
		c, err := dialHop(ctx, prev, hop, keyText, o)
		if err != nil {
			closeJumps()
			return nil, fmt.Errorf("ssh %s: jump host %s: %w", dest, hop.written, err)
		}
		jumps = append(jumps, c)
		prev = c
	}
	sc, err := dialHop(ctx, prev, t, keyText, o)
	if err != nil {
		closeJumps()
		if len(chain) > 0 {
			return nil, fmt.Errorf("ssh %s (through %s): %w", dest, chain[len(chain)-1].written, err)
		}
		return nil, fmt.Errorf("ssh %s: %w", dest, err)
	}

	c := &Client{
		host:   dest,
		target: t.String(),
		ssh:    sc,
		jumps:  jumps,
		log:    o.Logger.With("host", dest),
		done:   make(chan struct{}),
	}
	if o.Keepalive > 0 {
		c.wg.Add(1)
		go c.keepalive(o.Keepalive)
	}
	stop := context.AfterFunc(ctx, func() {
		c.log.Debug("ssh: context done, closing the connection", "err", context.Cause(ctx))
		c.Close()
	})
	c.mu.Lock()
	c.stopCtx = stop
	c.mu.Unlock()
	if err := ctx.Err(); err != nil {
		c.Close()
		return nil, fmt.Errorf("ssh %s: %w", dest, err)
	}
	c.log.Debug("ssh: connected", "target", c.target, "jumps", len(jumps))
	return c, nil
}

func (o Options) withDefaults() Options {
	if o.HomeDir == "" {
		o.HomeDir, _ = os.UserHomeDir()
	}
	if o.UserKnownHosts == "" {
		o.UserKnownHosts = o.home(".ssh", "known_hosts")
	} else {
		o.UserKnownHosts = expandHome(o.UserKnownHosts, o.HomeDir)
	}
	if o.ConfigFile == "" {
		o.ConfigFile = o.home(".ssh", "config")
	} else if o.ConfigFile != "none" {
		o.ConfigFile = expandHome(o.ConfigFile, o.HomeDir)
	}
	switch o.AgentSocket {
	case "":
		o.AgentSocket = os.Getenv("SSH_AUTH_SOCK")
	case "none":
		o.AgentSocket = ""
	}
	if o.Keepalive == 0 {
		o.Keepalive = DefaultKeepalive
	}
	if o.DialTimeout <= 0 {
		o.DialTimeout = DefaultDialTimeout
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// Host is the destination as it was given to Dial, for messages.
func (c *Client) Host() string { return c.host }

// SSH is the underlying connection, for what this package does not wrap. It is
// closed with the Client.
func (c *Client) SSH() *ssh.Client { return c.ssh }

// keepalive sends keepalive@openssh.com requests every interval and closes the
// connection when keepaliveMisses of them in a row go unanswered. It ends with
// the Client.
func (c *Client) keepalive(interval time.Duration) {
	defer c.wg.Done()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	replies := make(chan error, 1)
	pending, missed := false, 0
	for {
		select {
		case <-c.done:
			return
		case err := <-replies:
			pending = false
			if err != nil {
				// The connection is gone; Close will tidy up.
				c.log.Debug("ssh: keepalive failed", "err", err)
				return
			}
			missed = 0
		case <-tick.C:
			if pending {
				missed++
				c.log.Debug("ssh: keepalive unanswered", "missed", missed)
				if missed >= keepaliveMisses {
					c.log.Debug("ssh: closing the connection: the host stopped answering")
					lost := fmt.Errorf("connection lost: the host answered none of %d keepalives in %s",
						keepaliveMisses, keepaliveMisses*interval)
					c.lost.Store(&lost)
					c.ssh.Close()
					return
				}
				continue
			}
			pending = true
			c.wg.Add(1)
			go func() {
				defer c.wg.Done()
				// The server answers with a failure: any answer shows it is alive.
				// SendRequest returns when the connection closes.
				_, _, err := c.ssh.SendRequest("keepalive@openssh.com", true, nil)
				replies <- err
			}()
		}
	}
}

// Close closes everything the Client carries (SFTP, Docker clients, forwarded
// sockets, sessions) and the connections to the host and its jump hosts, and waits
// for the Client's goroutines. Safe to call more than once.
func (c *Client) Close() error {
	c.closeOnce.Do(func() {
		close(c.done)
		c.mu.Lock()
		c.closed = true
		if c.stopCtx != nil {
			// Called with c.mu held: stopping does not wait for the function.
			c.stopCtx()
		}
		sc, dockers := c.sftp, c.dockers
		c.sftp, c.dockers = nil, nil
		c.mu.Unlock()

		for _, d := range dockers {
			d.Close()
		}
		if sc != nil {
			sc.Close()
		}
		if err := c.ssh.Close(); err != nil && !errors.Is(err, net.ErrClosed) && !errors.Is(err, io.EOF) {
			c.closeErr = fmt.Errorf("ssh %s: close: %w", c.host, err)
		}
		for i := len(c.jumps) - 1; i >= 0; i-- {
			c.jumps[i].Close()
		}
		c.wg.Wait()
	})
	return c.closeErr
}

// spawn runs f in a goroutine that Close waits for; false (and f not run) when
// the Client is closed.
func (c *Client) spawn(f func()) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return false
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		f()
	}()
	return true
}

// opErr is the error of op failing with err, which is put down to a lost
// connection when the keepalives found it dead.
func (c *Client) opErr(op string, err error) error {
	if lost := c.lost.Load(); lost != nil {
		return fmt.Errorf("ssh %s: %s: %w", c.host, op, *lost)
	}
	return fmt.Errorf("ssh %s: %s: %w", c.host, op, err)
}

// errClosed is returned by the Client's methods after Close.
var errClosed = errors.New("connection closed")

func (c *Client) checkOpen() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return fmt.Errorf("ssh %s: %w", c.host, errClosed)
	}
	return nil
}
