package sshx

import (
	"bytes"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
)

// keyTextName names Options.KeyText in messages and to Passphrase.
const keyTextName = "SHIP_SSH_KEY"

// passphraseTries is how often a wrong passphrase may be typed.
const passphraseTries = 3

// keyText is Options.KeyText, parsed once for all hops.
type keyText struct {
	data   []byte
	signer ssh.Signer    // nil when encrypted
	pub    ssh.PublicKey // of an encrypted key, when its file format tells
}

// parseKeyText parses a private key's text. Its errors never repeat the text.
func parseKeyText(text string) (*keyText, error) {
	text = strings.TrimSpace(text)
	if text == "" {
		return nil, nil
	}
	if !strings.Contains(text, "\n") && strings.Contains(text, `\n`) {
		// A key pasted into a one-line CI secret.
		text = strings.ReplaceAll(text, `\n`, "\n")
	}
	k := &keyText{data: []byte(text + "\n")}
	s, err := ssh.ParsePrivateKey(k.data)
	var missing *ssh.PassphraseMissingError
	switch {
	case err == nil:
		k.signer = s
	case errors.As(err, &missing):
		k.pub = missing.PublicKey
	default:
		return nil, fmt.Errorf("%s does not hold a private key ssh can read (OpenSSH, PEM or PKCS#8): %v",
			keyTextName, err)
	}
	return k, nil
}

// auth gives one hop's handshake its keys, lazily: nothing is read or asked for
// before the host key has been accepted and the server asks for a public key.
type auth struct {
	hop      target
	keyText  *keyText
	o        Options
	pause    func() // stops the dial timeout while Passphrase runs
	resume   func()
	mu       sync.Mutex
	tried    []string // what was offered, for the error
	agent    net.Conn
	called   bool
	failure  error // a key that the host would take but that could not be used
	failOnce sync.Once
}

func newAuth(hop target, kt *keyText, o Options) *auth {
	return &auth{hop: hop, keyText: kt, o: o, pause: func() {}, resume: func() {}}
}

// signers is the PublicKeysCallback: agent keys, then KeyText, then key files,
// each public key once.
func (a *auth) signers() ([]ssh.Signer, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.called = true
	var out []ssh.Signer
	seen := map[string]bool{}
	add := func(s ssh.Signer) bool {
		k := string(s.PublicKey().Marshal())
		if seen[k] {
			return false
		}
		seen[k] = true
		out = append(out, s)
		return true
	}

	if sock := a.o.AgentSocket; sock != "" {
		conn, err := net.DialTimeout("unix", sock, 5*time.Second)
		if err != nil {
			a.o.Logger.Debug("ssh: ssh-agent unreachable", "socket", sock, "err", err)
			a.tried = append(a.tried, fmt.Sprintf("ssh-agent (unreachable at %s)", sock))
		} else {
			a.agent = conn
			ss, err := agent.NewClient(conn).Signers()
			if err != nil {
				a.tried = append(a.tried, fmt.Sprintf("ssh-agent (listing its keys failed: %v)", err))
			} else {
				n := 0
				for _, s := range ss {
					if add(s) {
						n++
					}
				}
				a.tried = append(a.tried, fmt.Sprintf("ssh-agent (%d %s)", n, plural(n, "key", "keys")))
			}
		}
	}

	if kt := a.keyText; kt != nil {
		if s := a.signer(keyTextName, kt.data, kt.signer, kt.pub); s != nil && add(s) {
			a.tried = append(a.tried, fmt.Sprintf("%s (%s)", keyTextName, describeKey(s.PublicKey())))
		}
	}

	for _, file := range a.hop.identityFiles {
		name := tildePath(file, a.o.HomeDir)
		data, err := os.ReadFile(file)
		if errors.Is(err, fs.ErrNotExist) {
			if !a.hop.defaultKeys {
				a.tried = append(a.tried, fmt.Sprintf("key file %s (missing)", name))
			}
			continue
		}
		if err != nil {
			a.tried = append(a.tried, fmt.Sprintf("key file %s (unreadable: %v)", name, errors.Unwrap(err)))
			continue
		}
		s, err := ssh.ParsePrivateKey(data)
		var missing *ssh.PassphraseMissingError
		switch {
		case err == nil:
		case errors.As(err, &missing):
			pub := missing.PublicKey
			if pub == nil {
				pub = readPublicKey(file + ".pub")
			}
			s = a.signer(file, data, nil, pub)
		default:
			a.tried = append(a.tried, fmt.Sprintf("key file %s (not a private key: %v)", name, err))
			continue
		}
		if s != nil && add(s) {
			a.tried = append(a.tried, fmt.Sprintf("key file %s (%s)", name, describeKey(s.PublicKey())))
		}
	}
	a.o.Logger.Debug("ssh: offering keys", "host", a.hop.String(), "keys", len(out), "from", a.tried)
	return out, nil
}

// signer is a key's signer: s itself, or for an encrypted key one that decrypts
// it when first used (so its passphrase is asked only when the host takes its
// public key). Without the public key the key is decrypted now, or skipped
// without a Passphrase. Called with a.mu held.
func (a *auth) signer(name string, data []byte, s ssh.Signer, pub ssh.PublicKey) ssh.Signer {
	if s != nil {
		return s
	}
	if pub != nil {
		return &lazySigner{pub: pub, load: func() (ssh.Signer, error) { return a.decrypt(name, data) }}
	}
	if a.o.Passphrase == nil {
		a.tried = append(a.tried, fmt.Sprintf("%s (skipped: encrypted, and no passphrase can be asked for; %s)",
			a.display(name), encryptedHint(name)))
		return nil
	}
	s, err := a.decrypt(name, data)
	if err != nil {
		a.tried = append(a.tried, fmt.Sprintf("%s (%v)", a.display(name), err))
		return nil
	}
	return s
}

func (a *auth) display(name string) string {
	if name == keyTextName {
		return name
	}
	return "key file " + tildePath(name, a.o.HomeDir)
}

// decrypt asks for the passphrase of an encrypted key and decrypts it. Its errors
// are recorded as the failure of the authentication.
func (a *auth) decrypt(name string, data []byte) (ssh.Signer, error) {
	if a.o.Passphrase == nil {
		return nil, a.fail(fmt.Errorf("%w as %s: %s is encrypted, and no passphrase can be asked for (no terminal); %s",
			ErrAuth, a.hop, a.display(name), encryptedHint(name)))
	}
	for range passphraseTries {
		a.pause()
		pass, err := a.o.Passphrase(name)
		a.resume()
		if err != nil {
			return nil, a.fail(fmt.Errorf("%w as %s: read the passphrase of %s: %v", ErrAuth, a.hop, a.display(name), err))
		}
		s, err := ssh.ParsePrivateKeyWithPassphrase(data, pass)
		clear(pass)
		if err == nil {
			return s, nil
		}
		if !errors.Is(err, x509.IncorrectPasswordError) {
			return nil, a.fail(fmt.Errorf("%w as %s: decrypt %s: %v", ErrAuth, a.hop, a.display(name), err))
		}
		a.o.Logger.Debug("ssh: wrong passphrase", "key", a.display(name))
	}
	return nil, a.fail(fmt.Errorf("%w as %s: wrong passphrase for %s", ErrAuth, a.hop, a.display(name)))
}

func encryptedHint(name string) string {
	if name == keyTextName {
		return "put a key without a passphrase in " + keyTextName + ", or use ssh-agent"
	}
	return "add it to ssh-agent (ssh-add " + name + "), or put a key without a passphrase in " + keyTextName
}

func (a *auth) fail(err error) error {
	a.failOnce.Do(func() { a.failure = err })
	return err
}

// close ends the agent connection, once the handshake is over.
func (a *auth) close() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.agent != nil {
		a.agent.Close()
		a.agent = nil
	}
}

// authError is the error for a handshake that ended in authentication, listing
// what was offered (never key material).
func (a *auth) authError(cause error) error {
	if a.failure != nil {
		return a.failure
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	what := "nothing: no ssh-agent, no " + keyTextName + ", no key file"
	if len(a.tried) > 0 {
		what = strings.Join(a.tried, "; ")
	}
	a.o.Logger.Debug("ssh: authentication failed", "host", a.hop.String(), "err", cause)
	return fmt.Errorf("%w as %s: the host accepted no key; tried %s", ErrAuth, a.hop, what)
}

// isAuthFailure reports whether a handshake error is the host refusing our keys.
func isAuthFailure(err error) bool {
	s := err.Error()
	return strings.Contains(s, "unable to authenticate") ||
		strings.Contains(s, "no supported methods remain") ||
		strings.Contains(s, "Too many authentication failures")
}

func describeKey(k ssh.PublicKey) string { return k.Type() + " " + Fingerprint(k) }

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// readPublicKey reads a .pub file; nil if there is none or it does not parse.
func readPublicKey(file string) ssh.PublicKey {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil
	}
	k, _, _, _, err := ssh.ParseAuthorizedKey(data)
	if err != nil {
		return nil
	}
	return k
}

// lazySigner is an encrypted key known by its public half, decrypted when it is
// first asked to sign.
type lazySigner struct {
	pub  ssh.PublicKey
	load func() (ssh.Signer, error)
	once sync.Once
	s    ssh.AlgorithmSigner
	err  error
}

func (l *lazySigner) PublicKey() ssh.PublicKey { return l.pub }

func (l *lazySigner) get() (ssh.AlgorithmSigner, error) {
	l.once.Do(func() {
		s, err := l.load()
		if err != nil {
			l.err = err
			return
		}
		if !bytes.Equal(s.PublicKey().Marshal(), l.pub.Marshal()) {
			l.err = fmt.Errorf("%w: the private key does not match its public key (%s)", ErrAuth, Fingerprint(l.pub))
			return
		}
		as, ok := s.(ssh.AlgorithmSigner)
		if !ok {
			l.err = fmt.Errorf("%w: key %s cannot choose a signature algorithm", ErrAuth, Fingerprint(l.pub))
			return
		}
		l.s = as
	})
	return l.s, l.err
}

func (l *lazySigner) Sign(rand io.Reader, data []byte) (*ssh.Signature, error) {
	s, err := l.get()
	if err != nil {
		return nil, err
	}
	return s.Sign(rand, data)
}

func (l *lazySigner) SignWithAlgorithm(rand io.Reader, data []byte, algorithm string) (*ssh.Signature, error) {
	s, err := l.get()
	if err != nil {
		return nil, err
	}
	return s.SignWithAlgorithm(rand, data, algorithm)
}
