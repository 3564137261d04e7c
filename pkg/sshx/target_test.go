package sshx

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

func TestParseDest(t *testing.T) {
	tests := []struct {
		in   string
		want destination
		err  string
	}{
		{in: "web1", want: destination{host: "web1"}},
		{in: "deploy@web1", want: destination{user: "deploy", host: "web1"}},
		{in: "deploy@web1:2222", want: destination{user: "deploy", host: "web1", port: 2222}},
		{in: "10.0.0.1:22", want: destination{host: "10.0.0.1", port: 22}},
		{in: "[::1]:2222", want: destination{host: "::1", port: 2222}},
		{in: "deploy@[2001:db8::1]", want: destination{user: "deploy", host: "2001:db8::1"}},
		{in: "2001:db8::1", want: destination{host: "2001:db8::1"}},
		{in: "ssh://deploy@web1:2200", want: destination{user: "deploy", host: "web1", port: 2200}},
		{in: "", err: "empty"},
		{in: "web1:", err: "port"},
		{in: "web1:99999", err: "port"},
		{in: "web1:ssh", err: "port"},
		{in: "@web1", err: "nothing before"},
		{in: "deploy:hunter2@web1", err: "password"},
		{in: "[::1", err: "without"},
		{in: "[::1]x", err: "after"},
		{in: "a b", err: "want"},
		{in: "fe80::1:22x", err: "brackets"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := parseDest(tt.in)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("parseDest(%q) = %+v, %v; want an error with %q", tt.in, got, err, tt.err)
				}
				if strings.Contains(err.Error(), "hunter2") {
					t.Fatalf("error repeats the password: %v", err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("parseDest(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
			}
		})
	}
}

func writeConfig(t *testing.T, text string) *sshConfig {
	t.Helper()
	file := filepath.Join(t.TempDir(), "config")
	if err := os.WriteFile(file, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := loadSSHConfig(file)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestResolve(t *testing.T) {
	local, err := localUser()
	if err != nil {
		t.Fatal(err)
	}
	home := "/home/test"
	cfg := writeConfig(t, `
Host web
  HostName 10.0.0.5
  Port 2222
  User deploy
  IdentityFile ~/.ssh/web_key
  IdentityFile %d/keys/%r@%h

Host *.example.com
  HostName %h.internal
  ProxyJump bastion

Host bastion
  HostName 10.0.0.1
  User jump

Host legacy
  ProxyCommand ssh -W %h:%p gateway
`)
	o := Options{HomeDir: home, IdentityFiles: []string{"~/extra"}}
	tests := []struct {
		dest string
		want target
		err  string
	}{
		{dest: "web", want: target{
			written: "web", alias: "web", host: "10.0.0.5", port: 2222, user: "deploy",
			identityFiles: []string{home + "/extra", home + "/.ssh/web_key", home + "/keys/deploy@10.0.0.5"},
		}},
		// What the destination says beats the config.
		{dest: "root@web:22", want: target{
			written: "root@web:22", alias: "web", host: "10.0.0.5", port: 22, user: "root",
			identityFiles: []string{home + "/extra", home + "/.ssh/web_key", home + "/keys/root@10.0.0.5"},
		}},
		{dest: "app.example.com", want: target{
			written: "app.example.com", alias: "app.example.com", host: "app.example.com.internal", port: 22,
			user: local, proxyJump: "bastion", identityFiles: []string{home + "/extra"},
		}},
		{dest: "legacy", err: "ProxyCommand"},
	}
	for _, tt := range tests {
		t.Run(tt.dest, func(t *testing.T) {
			got, err := resolve(tt.dest, cfg, o)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("resolve(%q) error = %v, want %q", tt.dest, err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("resolve(%q) =\n%+v\nwant\n%+v", tt.dest, got, tt.want)
			}
		})
	}

	t.Run("defaults", func(t *testing.T) {
		got, err := resolve("plain", &sshConfig{}, Options{HomeDir: home})
		if err != nil {
			t.Fatal(err)
		}
		want := target{
			written: "plain", alias: "plain", host: "plain", port: 22, user: local, defaultKeys: true,
			identityFiles: []string{home + "/.ssh/id_ed25519", home + "/.ssh/id_ecdsa", home + "/.ssh/id_rsa"},
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("got\n%+v\nwant\n%+v", got, want)
		}
	})
}

func TestResolveJumps(t *testing.T) {
	cfg := writeConfig(t, `
Host target
  ProxyJump b,c:2200
Host b
  HostName 10.0.0.2
  ProxyJump a
Host c
  ProxyJump ignored
Host loop
  ProxyJump loop
Host none
  ProxyJump none
`)
	o := Options{HomeDir: "/home/test"}
	names := func(dest string) ([]string, error) {
		tg, err := resolve(dest, cfg, o)
		if err != nil {
			return nil, err
		}
		chain, err := resolveJumps(tg, cfg, o)
		var out []string
		for _, h := range chain {
			out = append(out, h.addr())
		}
		return out, err
	}
	got, err := names("target")
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"a:22", "10.0.0.2:22", "c:2200"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("chain = %v, want %v", got, want)
	}
	if got, err := names("none"); err != nil || len(got) != 0 {
		t.Fatalf("ProxyJump none: %v, %v", got, err)
	}
	if _, err := names("loop"); err == nil || !strings.Contains(err.Error(), "loop") {
		t.Fatalf("a ProxyJump loop: err = %v", err)
	}
}

func TestExpandTokens(t *testing.T) {
	tokens := map[byte]string{'h': "web", 'r': "deploy"}
	for in, want := range map[string]string{
		"plain":       "plain",
		"%h":          "web",
		"%r@%h.key":   "deploy@web.key",
		"100%%":       "100%",
		"%x stays":    "%x stays",
		"trailing %":  "trailing %",
		"%h.internal": "web.internal",
	} {
		if got := expandTokens(in, tokens); got != want {
			t.Errorf("expandTokens(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestShellQuote(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"systemctl", "restart", "shipd.service"}, "systemctl restart shipd.service"},
		{[]string{"echo", ""}, "echo ''"},
		{[]string{"echo", "a b"}, "echo 'a b'"},
		{[]string{"echo", "it's"}, `echo 'it'\''s'`},
		{[]string{"echo", "$HOME;rm -rf /"}, `echo '$HOME;rm -rf /'`},
		{[]string{"/srv/app/releases/abc", "--x=1"}, "/srv/app/releases/abc --x=1"},
	}
	for _, tt := range tests {
		if got := ShellQuote(tt.args...); got != tt.want {
			t.Errorf("ShellQuote(%q) = %s, want %s", tt.args, got, tt.want)
		}
	}
}

// hostKeyCheckFor writes a known_hosts file with lines and checks "web:22" against it.
func hostKeyCheckFor(t *testing.T, lines ...string) *hostKeyCheck {
	t.Helper()
	file := filepath.Join(t.TempDir(), "known_hosts")
	if err := os.WriteFile(file, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	o := Options{HomeDir: t.TempDir(), KnownHostsFiles: []string{file}}.withDefaults()
	h, err := newHostKeyCheck(target{written: "web", host: "web", port: 22}, o)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func newPublicKey(t *testing.T, kind string) ssh.PublicKey {
	t.Helper()
	var pub any
	switch kind {
	case "rsa":
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		pub = &k.PublicKey
	default:
		p, _, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		pub = p
	}
	k, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestHostKeyAlgorithms(t *testing.T) {
	ed, rsaKey, other := newPublicKey(t, "ed25519"), newPublicKey(t, "rsa"), newPublicKey(t, "ed25519")
	t.Run("ed25519 known", func(t *testing.T) {
		h := hostKeyCheckFor(t, knownhosts.Line([]string{"web"}, ed), knownhosts.Line([]string{"db"}, rsaKey))
		if got, want := h.algorithms(), []string{ssh.KeyAlgoED25519}; !reflect.DeepEqual(got, want) {
			t.Fatalf("algorithms = %v, want %v", got, want)
		}
	})
	t.Run("rsa known", func(t *testing.T) {
		h := hostKeyCheckFor(t, knownhosts.Line([]string{"web"}, rsaKey))
		want := []string{ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSA}
		if got := h.algorithms(); !reflect.DeepEqual(got, want) {
			t.Fatalf("algorithms = %v, want %v", got, want)
		}
	})
	t.Run("cert authority", func(t *testing.T) {
		h := hostKeyCheckFor(t, "@cert-authority web "+strings.TrimSpace(string(ssh.MarshalAuthorizedKey(ed))))
		got := h.algorithms()
		if len(got) == 0 || !strings.HasSuffix(got[0], "-cert-v01@openssh.com") {
			t.Fatalf("algorithms = %v, want certificate algorithms", got)
		}
	})
	t.Run("unknown host", func(t *testing.T) {
		h := hostKeyCheckFor(t, knownhosts.Line([]string{"db"}, ed))
		got := h.algorithms()
		if len(got) == 0 {
			t.Fatal("no algorithms")
		}
		for _, a := range got {
			if strings.Contains(a, "cert") {
				t.Fatalf("algorithms for an unknown host include %s", a)
			}
		}
	})
	t.Run("changed key of another type", func(t *testing.T) {
		h := hostKeyCheckFor(t, knownhosts.Line([]string{"web"}, ed))
		err := h.callback("web:22", nameAddr("web:22"), rsaKey)
		var hkErr *HostKeyError
		if !errors.As(err, &hkErr) || !hkErr.Is(ErrHostKeyChanged) {
			t.Fatalf("err = %v, want a changed key", err)
		}
		if err := h.callback("web:22", nameAddr("web:22"), ed); err != nil {
			t.Fatalf("the known key: %v", err)
		}
		if err := h.callback("web:22", nameAddr("web:22"), other); err == nil {
			t.Fatal("another ed25519 key was accepted")
		}
	})
	t.Run("revoked", func(t *testing.T) {
		h := hostKeyCheckFor(t, "@revoked * "+strings.TrimSpace(string(ssh.MarshalAuthorizedKey(other))))
		err := h.callback("web:22", nameAddr("web:22"), other)
		if err == nil || !strings.Contains(err.Error(), "revoked") {
			t.Fatalf("err = %v, want revoked", err)
		}
	})
}

func TestParseKeyText(t *testing.T) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	text := string(pem.EncodeToMemory(block))
	for name, in := range map[string]string{
		"as is":        text,
		"escaped":      strings.ReplaceAll(strings.TrimSpace(text), "\n", `\n`),
		"crlf":         strings.ReplaceAll(text, "\n", "\r\n"),
		"extra spaces": "\n\n  " + text + "  \n",
	} {
		k, err := parseKeyText(in)
		if err != nil || k == nil || k.signer == nil {
			t.Errorf("%s: parseKeyText = %v, %v", name, k, err)
		}
	}
	if k, err := parseKeyText("  "); k != nil || err != nil {
		t.Errorf("empty text: %v, %v", k, err)
	}
	secret := "not-a-key-but-a-secret"
	_, err = parseKeyText(secret)
	if err == nil || !strings.Contains(err.Error(), keyTextName) || strings.Contains(err.Error(), secret) {
		t.Errorf("garbage: err = %v", err)
	}
}
