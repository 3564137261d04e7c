package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// Host is one SSH destination of an environment, written "[user@]host[:port]"
// (IPv6 addresses in brackets: "deploy@[2001:db8::1]:22").
type Host struct {
	User string // empty: not given (~/.ssh/config or the local user decides)
	Name string // host name, ~/.ssh/config alias, or IP address without brackets
	Port int    // 0: not given
}

// String writes h back in the "[user@]host[:port]" form.
func (h Host) String() string {
	var s string
	switch {
	case h.Port != 0:
		s = net.JoinHostPort(h.Name, strconv.Itoa(h.Port))
	case strings.Contains(h.Name, ":"):
		s = "[" + h.Name + "]"
	default:
		s = h.Name
	}
	if h.User != "" {
		s = h.User + "@" + s
	}
	return s
}

// ParseHost parses "[user@]host[:port]". Its error says what to write instead
// and never repeats a password written into s.
func ParseHost(s string) (Host, error) {
	var h Host
	if s == "" {
		return h, errors.New("is empty; write [user@]host[:port], e.g. deploy@web1.example.com")
	}
	if strings.ContainsFunc(s, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		return h, fmt.Errorf("%q contains spaces or control characters; write [user@]host[:port], e.g. deploy@web1.example.com", s)
	}
	rest := s
	if user, after, ok := strings.Cut(s, "@"); ok {
		if strings.Contains(user, ":") {
			// user:password@host: the password must not reach any output.
			return h, errors.New("a password is written in this host; remove it and use an SSH key (ssh-agent, ~/.ssh or SHIP_SSH_KEY)")
		}
		if user == "" {
			return h, fmt.Errorf("%q has nothing before \"@\"; write user@host, e.g. deploy@%s", s, after)
		}
		if !validUser(user) {
			return h, fmt.Errorf("%q: user %q may hold only letters, digits, \".\", \"_\" and \"-\"; write e.g. deploy@%s", s, user, after)
		}
		if strings.Contains(after, "@") {
			return h, fmt.Errorf("%q has more than one \"@\"; write [user@]host[:port]", s)
		}
		h.User, rest = user, after
	}
	var port string
	switch {
	case strings.HasPrefix(rest, "["):
		addr, after, ok := strings.Cut(rest[1:], "]")
		if !ok {
			return h, fmt.Errorf("%q has \"[\" without \"]\"; write IPv6 addresses as [2001:db8::1]:22", s)
		}
		if _, err := netip.ParseAddr(addr); err != nil {
			return h, fmt.Errorf("%q: %q in brackets is not an IP address; brackets are for IPv6, e.g. [2001:db8::1]:22", s, addr)
		}
		h.Name = addr
		if after != "" {
			p, ok := strings.CutPrefix(after, ":")
			if !ok {
				return h, fmt.Errorf("%q has %q after \"]\"; write [address]:port, e.g. [2001:db8::1]:22", s, after)
			}
			port = p
			if port == "" {
				return h, fmt.Errorf("%q ends in \":\" with no port; write e.g. %s:22 or leave the \":\" out", s, strings.TrimSuffix(s, ":"))
			}
		}
	case strings.Count(rest, ":") > 1:
		if _, err := netip.ParseAddr(rest); err != nil {
			return h, fmt.Errorf("%q is not host:port; write IPv6 addresses in brackets, e.g. [2001:db8::1]:22", s)
		}
		h.Name = rest
	default:
		name, p, hasPort := strings.Cut(rest, ":")
		if hasPort && p == "" {
			return h, fmt.Errorf("%q ends in \":\" with no port; write e.g. %s:22 or leave the \":\" out", s, strings.TrimSuffix(s, ":"))
		}
		h.Name, port = name, p
		if h.Name == "" {
			return h, fmt.Errorf("%q has no host name; write [user@]host[:port], e.g. deploy@web1.example.com", s)
		}
		if !validHostName(h.Name) {
			return h, fmt.Errorf("%q: host %q may hold only letters, digits, \".\", \"_\" and \"-\" and must not start with \"-\" or \".\"; write e.g. web1.example.com", s, h.Name)
		}
	}
	if port != "" {
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 || port[0] == '+' {
			return h, fmt.Errorf("%q: port %q is not a number from 1 to 65535; write e.g. %s:22", s, port, strings.TrimSuffix(s, ":"+port))
		}
		h.Port = n
	}
	return h, nil
}

func validUser(s string) bool {
	if s == "" || s[0] == '-' {
		return false
	}
	for _, r := range s {
		if !isAlnum(r) && r != '.' && r != '_' && r != '-' {
			return false
		}
	}
	return true
}

func validHostName(s string) bool {
	if s == "" || len(s) > 253 || s[0] == '-' || s[0] == '.' {
		return false
	}
	for _, r := range s {
		if !isAlnum(r) && r != '.' && r != '_' && r != '-' {
			return false
		}
	}
	return true
}

func isAlnum(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9'
}
