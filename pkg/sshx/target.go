package sshx

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"

	sshconfig "github.com/kevinburke/ssh_config"
)

// maxJumps bounds a ProxyJump chain, which ssh_config could make a loop.
const maxJumps = 8

// target is one hop: where to connect, as whom, with which key files.
type target struct {
	written       string   // as the user (or ssh_config's ProxyJump) wrote it
	alias         string   // the host part of written: what ssh_config's Host matches
	host          string   // HostName: a name or an IP address, without brackets
	port          int      // 1-65535
	user          string   // remote user
	identityFiles []string // from Options and ssh_config, ~ expanded, in order
	defaultKeys   bool     // identityFiles are the defaults: missing ones go unmentioned
	proxyJump     string   // ssh_config's ProxyJump: "" or "none" for none
}

// addr is host:port, the form dialled and looked up in known_hosts.
func (t target) addr() string { return net.JoinHostPort(t.host, strconv.Itoa(t.port)) }

// String is user@host:port, for logs and messages.
func (t target) String() string { return t.user + "@" + t.addr() }

// destination is "[user@]host[:port]" taken apart; empty user and zero port are
// not given.
type destination struct {
	user, host string
	port       int
}

// parseDest parses "[user@]host[:port]", with IPv6 addresses in brackets
// ("[::1]:22", "[::1]") or bare ("::1", no port then). An "ssh://" prefix is
// allowed, as in ProxyJump.
func parseDest(s string) (destination, error) {
	var d destination
	rest := strings.TrimPrefix(s, "ssh://")
	if rest == "" {
		return d, errors.New("empty destination; want [user@]host[:port]")
	}
	if strings.ContainsFunc(rest, func(r rune) bool { return r <= ' ' || r == 0x7f || r == '/' }) {
		return d, fmt.Errorf("destination %q: want [user@]host[:port]", s)
	}
	if i := strings.LastIndex(rest, "@"); i >= 0 {
		d.user, rest = rest[:i], rest[i+1:]
		if d.user == "" {
			return d, fmt.Errorf("destination %q: nothing before \"@\"", s)
		}
		if strings.Contains(d.user, ":") {
			// user:password@host; the password must not be repeated.
			return d, errors.New("destination holds a password; remove it and use an SSH key")
		}
	}
	var port string
	switch {
	case strings.HasPrefix(rest, "["):
		h, after, ok := strings.Cut(rest[1:], "]")
		if !ok {
			return d, fmt.Errorf("destination %q: \"[\" without \"]\"", s)
		}
		d.host = h
		if after != "" {
			p, ok := strings.CutPrefix(after, ":")
			if !ok {
				return d, fmt.Errorf("destination %q: %q after \"]\"", s, after)
			}
			port = p
		}
	case strings.Count(rest, ":") > 1:
		if _, err := netip.ParseAddr(rest); err != nil {
			return d, fmt.Errorf("destination %q: write IPv6 addresses in brackets, e.g. [2001:db8::1]:22", s)
		}
		d.host = rest
	default:
		d.host, port, _ = strings.Cut(rest, ":")
	}
	if d.host == "" {
		return d, fmt.Errorf("destination %q: no host", s)
	}
	if port != "" || strings.HasSuffix(rest, ":") {
		p, err := parsePort(port)
		if err != nil {
			return d, fmt.Errorf("destination %q: %w", s, err)
		}
		d.port = p
	}
	return d, nil
}

func parsePort(s string) (int, error) {
	p, err := strconv.Atoi(s)
	if err != nil || p < 1 || p > 65535 {
		return 0, fmt.Errorf("port %q is not a number from 1 to 65535", s)
	}
	return p, nil
}

// sshConfig is the parsed ssh_config file; nil reads as empty.
type sshConfig struct {
	file string
	cfg  *sshconfig.Config
}

// loadSSHConfig reads file ("none": no file). A missing file is an empty config;
// one that does not parse is an error, as ignoring it could silently connect
// somewhere else than ssh(1) would.
func loadSSHConfig(file string) (*sshConfig, error) {
	if file == "none" {
		return &sshConfig{}, nil
	}
	f, err := os.Open(file)
	if errors.Is(err, os.ErrNotExist) {
		return &sshConfig{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read ssh config: %w", err)
	}
	defer f.Close()
	cfg, err := sshconfig.Decode(f)
	if err != nil {
		return nil, fmt.Errorf("read ssh config %s: %w", file, err)
	}
	return &sshConfig{file: file, cfg: cfg}, nil
}

// get is the first value of key for alias ("" if none).
func (c *sshConfig) get(alias, key string) (string, error) {
	if c.cfg == nil {
		return "", nil
	}
	v, err := c.cfg.Get(alias, key)
	if err != nil {
		return "", fmt.Errorf("ssh config %s: %s for %s: %w", c.file, key, alias, err)
	}
	return strings.TrimSpace(v), nil
}

// getAll is every value of key for alias, in file order.
func (c *sshConfig) getAll(alias, key string) ([]string, error) {
	if c.cfg == nil {
		return nil, nil
	}
	vs, err := c.cfg.GetAll(alias, key)
	if err != nil {
		return nil, fmt.Errorf("ssh config %s: %s for %s: %w", c.file, key, alias, err)
	}
	return vs, nil
}

// resolve turns a destination into a target: dest beats ssh_config, which beats
// the defaults.
func resolve(dest string, cfg *sshConfig, o Options) (target, error) {
	d, err := parseDest(dest)
	if err != nil {
		return target{}, err
	}
	t := target{written: dest, alias: d.host, host: d.host, user: d.user, port: d.port}
	vals := map[string]string{}
	for _, key := range []string{"HostName", "Port", "User", "ProxyJump", "ProxyCommand"} {
		if vals[key], err = cfg.get(d.host, key); err != nil {
			return t, err
		}
	}
	if h := vals["HostName"]; h != "" {
		t.host = expandTokens(h, map[byte]string{'h': d.host})
	}
	if p := vals["Port"]; t.port == 0 && p != "" {
		if t.port, err = parsePort(p); err != nil {
			return t, fmt.Errorf("ssh config %s: Port for %s: %w", cfg.file, d.host, err)
		}
	}
	if t.port == 0 {
		t.port = 22
	}
	if t.user == "" {
		t.user = vals["User"]
	}
	if t.user == "" {
		if t.user, err = localUser(); err != nil {
			return t, err
		}
	}
	t.proxyJump = vals["ProxyJump"]
	if pc := vals["ProxyCommand"]; pc != "" && !strings.EqualFold(pc, "none") && (t.proxyJump == "" || strings.EqualFold(t.proxyJump, "none")) {
		return t, fmt.Errorf("ssh config %s: ProxyCommand for %s is not supported (ship runs no commands to connect); use ProxyJump", cfg.file, d.host)
	}

	files, err := cfg.getAll(d.host, "IdentityFile")
	if err != nil {
		return t, err
	}
	local, _ := localUser()
	tokens := map[byte]string{
		'd': o.HomeDir, 'h': t.host, 'n': d.host, 'p': strconv.Itoa(t.port), 'r': t.user, 'u': local,
	}
	for _, f := range o.IdentityFiles {
		t.identityFiles = append(t.identityFiles, expandHome(f, o.HomeDir))
	}
	for _, f := range files {
		f = strings.Trim(strings.TrimSpace(f), `"`)
		if f == "" || strings.EqualFold(f, "none") {
			continue
		}
		t.identityFiles = append(t.identityFiles, expandHome(expandTokens(f, tokens), o.HomeDir))
	}
	if len(t.identityFiles) == 0 {
		t.defaultKeys = true
		for _, name := range []string{"id_ed25519", "id_ecdsa", "id_rsa"} {
			t.identityFiles = append(t.identityFiles, o.home(".ssh", name))
		}
	}
	return t, nil
}

// resolveJumps is the chain of jump hosts to t, first hop first: t's ProxyJump
// hops, preceded by the first hop's own ProxyJump chain (the later hops' own
// ProxyJump is ignored, as ssh(1) does).
func resolveJumps(t target, cfg *sshConfig, o Options) ([]target, error) {
	var chain []target
	var walk func(t target, depth int) error
	walk = func(t target, depth int) error {
		if t.proxyJump == "" || strings.EqualFold(t.proxyJump, "none") {
			return nil
		}
		for i, spec := range strings.Split(t.proxyJump, ",") {
			spec = strings.TrimSpace(spec)
			hop, err := resolve(spec, cfg, o)
			if err != nil {
				return fmt.Errorf("ProxyJump %q of %s: %w", spec, t.alias, err)
			}
			if len(chain) >= maxJumps || depth > maxJumps {
				return fmt.Errorf("ProxyJump of %s: more than %d jump hosts (a loop in the ssh config?)", t.alias, maxJumps)
			}
			if i == 0 {
				if err := walk(hop, depth+1); err != nil {
					return err
				}
			}
			chain = append(chain, hop)
		}
		return nil
	}
	if err := walk(t, 0); err != nil {
		return nil, err
	}
	return chain, nil
}

// expandTokens replaces ssh_config's %x tokens that tokens has, and %%.
func expandTokens(s string, tokens map[byte]string) string {
	if !strings.Contains(s, "%") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '%' || i+1 == len(s) {
			b.WriteByte(s[i])
			continue
		}
		i++
		if s[i] == '%' {
			b.WriteByte('%')
		} else if v, ok := tokens[s[i]]; ok {
			b.WriteString(v)
		} else {
			b.WriteByte('%')
			b.WriteByte(s[i])
		}
	}
	return b.String()
}

// expandHome turns a leading "~" or "~/" into home.
func expandHome(path, home string) string {
	if path == "~" {
		return home
	}
	if rest, ok := strings.CutPrefix(path, "~/"); ok {
		return filepath.Join(home, rest)
	}
	return path
}

// home is a path under HomeDir.
func (o Options) home(elem ...string) string {
	return filepath.Join(append([]string{o.HomeDir}, elem...)...)
}

// tildePath writes path with "~" for home, for messages.
func tildePath(path, home string) string {
	if home != "" {
		if rest, ok := strings.CutPrefix(path, home+string(filepath.Separator)); ok {
			return "~/" + rest
		}
	}
	return path
}

func localUser() (string, error) {
	if u, err := user.Current(); err == nil && u.Username != "" {
		return u.Username, nil
	}
	if name := os.Getenv("USER"); name != "" {
		return name, nil
	}
	return "", errors.New("cannot tell the local user's name; write the user in the destination (user@host)")
}
