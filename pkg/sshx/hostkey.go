package sshx

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// GlobalKnownHosts is the system-wide known_hosts file, checked as ssh(1) does.
const GlobalKnownHosts = "/etc/ssh/ssh_known_hosts"

// Fingerprint is key's SHA256 fingerprint as ssh-keygen -l shows it
// ("SHA256:..."; a certificate's is that of the certified key).
func Fingerprint(key ssh.PublicKey) string {
	if cert, ok := key.(*ssh.Certificate); ok {
		key = cert.Key
	}
	return ssh.FingerprintSHA256(key)
}

// HostKeyError is why a host key was refused. It matches ErrUnknownHost (Known is
// empty) or ErrHostKeyChanged (Known is not) with errors.Is.
type HostKeyError struct {
	Host string        // the host as written in the destination or ProxyJump
	Name string        // its name in known_hosts: "host", or "[host]:port" off port 22
	Key  ssh.PublicKey // the key the host offered; nil when it offered none of Known's types
	// Known are the keys the known_hosts files hold for Name, with file and line.
	Known []knownhosts.KnownKey
	// Line is the known_hosts line for Key, to add for an unknown host.
	Line string
	// UserKnownHosts is the file --accept-new-host-key would write to.
	UserKnownHosts string
}

// Is makes errors.Is match ErrUnknownHost or ErrHostKeyChanged.
func (e *HostKeyError) Is(target error) bool {
	switch target {
	case ErrUnknownHost:
		return len(e.Known) == 0
	case ErrHostKeyChanged:
		return len(e.Known) > 0
	}
	return false
}

func (e *HostKeyError) Error() string {
	var b strings.Builder
	if len(e.Known) == 0 {
		fmt.Fprintf(&b, "unknown host key for %s: no known_hosts file has a key for %s; it offers %s %s.\n",
			e.Host, e.Name, e.Key.Type(), Fingerprint(e.Key))
		fmt.Fprintf(&b, "If that fingerprint is the host's (ssh-keygen -lf on its /etc/ssh/ssh_host_*_key.pub), "+
			"add this line to %s or to the environment's known_hosts file:\n", e.UserKnownHosts)
		fmt.Fprintf(&b, "  %s\n", e.Line)
		b.WriteString("or run again with --accept-new-host-key to trust it on first use and record it.")
		return b.String()
	}
	fmt.Fprintf(&b, "WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED for %s (%s)!\n", e.Host, e.Name)
	b.WriteString("Someone could be eavesdropping on the connection (a man-in-the-middle attack), " +
		"or the host's key has just been replaced.\n")
	for _, k := range e.Known {
		fmt.Fprintf(&b, "  known:   %s %s (%s:%d)\n", k.Key.Type(), Fingerprint(k.Key), k.Filename, k.Line)
	}
	if e.Key != nil {
		fmt.Fprintf(&b, "  offered: %s %s\n", e.Key.Type(), Fingerprint(e.Key))
	} else {
		b.WriteString("  offered: none of the key types known for it\n")
	}
	b.WriteString("Connection aborted before authentication: no key was offered to the host. " +
		"If the change is expected, remove the old line from that file and connect again.")
	return b.String()
}

// hostKeyCheck checks one hop's host key against the known_hosts files.
type hostKeyCheck struct {
	hop       target
	name      string // the hop's known_hosts name
	db        ssh.HostKeyCallback
	known     []knownhosts.KnownKey // keys known for name, any type
	userFile  string
	home      string
	acceptNew bool
	log       *slog.Logger

	passed  bool  // the host key was accepted
	refusal error // why it was not, returned by Dial as it is
}

// newHostKeyCheck reads the known_hosts files for hop.
func newHostKeyCheck(hop target, o Options) (*hostKeyCheck, error) {
	var files []string
	for _, f := range slices.Concat([]string{o.UserKnownHosts, GlobalKnownHosts}, o.KnownHostsFiles) {
		f = expandHome(f, o.HomeDir)
		if slices.Contains(files, f) {
			continue
		}
		if _, err := os.Stat(f); errors.Is(err, fs.ErrNotExist) {
			continue
		}
		files = append(files, f)
	}
	db, err := knownhosts.New(files...)
	if err != nil {
		return nil, fmt.Errorf("read known_hosts: %w", err)
	}
	h := &hostKeyCheck{
		hop: hop, name: knownhosts.Normalize(hop.addr()), db: db,
		userFile: o.UserKnownHosts, home: o.HomeDir, acceptNew: o.AcceptNewHostKey, log: o.Logger,
	}
	// knownhosts has no lookup: a key no host has tells which keys it knows.
	probe, err := ssh.NewPublicKey(ed25519.PublicKey(make([]byte, ed25519.PublicKeySize)))
	if err != nil {
		return nil, err
	}
	var keyErr *knownhosts.KeyError
	if errors.As(h.check(probe), &keyErr) {
		h.known = keyErr.Want
	}
	return h, nil
}

// nameAddr is a net.Addr for knownhosts, which looks up its String().
type nameAddr string

func (a nameAddr) Network() string { return "tcp" }
func (a nameAddr) String() string  { return string(a) }

// check is the bare known_hosts check of key for the hop, by name only (not by IP
// address: ssh(1)'s CheckHostIP is off by default).
func (h *hostKeyCheck) check(key ssh.PublicKey) error {
	return h.db(h.hop.addr(), nameAddr(h.hop.addr()), key)
}

// callback is the ssh.HostKeyCallback. It runs before authentication, so a
// refusal here means nothing was sent to the host.
func (h *hostKeyCheck) callback(_ string, _ net.Addr, key ssh.PublicKey) error {
	err := h.check(key)
	if err == nil {
		h.passed = true
		h.log.Debug("ssh: host key known", "host", h.name, "key", key.Type(), "fingerprint", Fingerprint(key))
		return nil
	}
	var keyErr *knownhosts.KeyError
	var revoked *knownhosts.RevokedError
	switch {
	case errors.As(err, &keyErr) && len(keyErr.Want) == 0:
		line := knownhosts.Line([]string{h.name}, key)
		if h.acceptNew {
			if err := appendKnownHost(h.userFile, line); err != nil {
				h.refusal = fmt.Errorf("trust the new host key of %s: %w", h.name, err)
				return h.refusal
			}
			h.passed = true
			h.log.Info("ssh: trusted a new host key", "host", h.name, "key", key.Type(),
				"fingerprint", Fingerprint(key), "file", h.userFile)
			return nil
		}
		h.refusal = &HostKeyError{
			Host: h.hop.written, Name: h.name, Key: key, Line: line,
			UserKnownHosts: tildePath(h.userFile, h.home),
		}
	case errors.As(err, &keyErr):
		h.refusal = &HostKeyError{Host: h.hop.written, Name: h.name, Key: key, Known: keyErr.Want}
	case errors.As(err, &revoked):
		h.refusal = fmt.Errorf("the host key of %s (%s %s) is revoked in %s:%d; refusing to connect",
			h.name, key.Type(), Fingerprint(key), revoked.Revoked.Filename, revoked.Revoked.Line)
	default:
		h.refusal = fmt.Errorf("check the host key of %s: %w", h.name, err)
	}
	return h.refusal
}

// algorithms are the host key algorithms to ask for: those of the keys known for
// the host, so that a host with an ed25519 key known is not taken for a changed
// one because it offers its RSA key first. For an unknown host, every plain key
// algorithm (a certificate could not be checked anyway).
func (h *hostKeyCheck) algorithms() []string {
	supported := slices.Concat(ssh.SupportedAlgorithms().HostKeys, ssh.InsecureAlgorithms().HostKeys)
	isCert := func(a string) bool { return strings.HasSuffix(a, "-cert-v01@openssh.com") }
	if len(h.known) == 0 {
		return slices.DeleteFunc(slices.Clone(ssh.SupportedAlgorithms().HostKeys), isCert)
	}
	var algos []string
	add := func(a ...string) {
		for _, x := range a {
			if slices.Contains(supported, x) && !slices.Contains(algos, x) {
				algos = append(algos, x)
			}
		}
	}
	for _, k := range h.known {
		if isCertAuthority(k) {
			add(slices.DeleteFunc(slices.Clone(supported), func(a string) bool { return !isCert(a) })...)
		}
	}
	for _, k := range h.known {
		if isCertAuthority(k) {
			continue
		}
		switch t := k.Key.Type(); t {
		case ssh.KeyAlgoRSA:
			add(ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSA)
		default:
			add(t)
		}
	}
	return algos
}

// isCertAuthority reports whether k's line is a @cert-authority line, which
// knownhosts lists with the host's keys.
func isCertAuthority(k knownhosts.KnownKey) bool {
	f, err := os.Open(k.Filename)
	if err != nil {
		return false
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	s.Buffer(nil, 1<<20)
	for n := 1; s.Scan(); n++ {
		if n == k.Line {
			return bytes.HasPrefix(bytes.TrimSpace(s.Bytes()), []byte("@cert-authority"))
		}
	}
	return false
}

// knownHostsMu serialises appends to known_hosts within the process.
var knownHostsMu sync.Mutex

// appendKnownHost appends line to file, creating it (0600) and its folder (0700).
func appendKnownHost(file, line string) error {
	knownHostsMu.Lock()
	defer knownHostsMu.Unlock()
	if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(file, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	data := line + "\n"
	if st, err := f.Stat(); err == nil && st.Size() > 0 {
		last := make([]byte, 1)
		if _, err := f.ReadAt(last, st.Size()-1); err == nil && last[0] != '\n' {
			data = "\n" + data
		}
	}
	if _, err := f.WriteString(data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
