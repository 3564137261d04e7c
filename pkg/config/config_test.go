package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func parseFile(t *testing.T, name string) (*Config, error) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return Parse(name, data)
}

func TestParseFull(t *testing.T) {
	c, err := parseFile(t, "full.yaml")
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	want := &Config{
		File:     "full.yaml",
		Dir:      ".",
		App:      "fml",
		Compose:  "docker-compose.yml",
		Test:     Test{Compose: "docker-compose.test.yml", Service: "test", Timeout: 10 * time.Minute},
		Registry: "registry.example.com:5000",
		Environments: map[string]*Environment{
			"staging": {
				Name:         "staging",
				Hosts:        []Host{{User: "deploy", Name: "staging.example.com"}},
				Path:         "/srv/fml",
				Keep:         5,
				DockerSocket: "/var/run/docker.sock",
			},
			"prod": {
				Name:         "prod",
				Hosts:        []Host{{User: "deploy", Name: "web1.example.com"}, {User: "deploy", Name: "web2.example.com", Port: 2222}},
				Path:         "/srv/fml",
				Confirm:      true,
				Grace:        30 * time.Second,
				Agent:        true,
				EnvFile:      ".env.prod",
				Keep:         5,
				DockerSocket: "/var/run/docker.sock",
			},
		},
		Notify: Notify{Webhook: "https://deploys.example.com/hook"},
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("Parse(full.yaml) =\n%+v\nwant\n%+v", c, want)
		for name, e := range c.Environments {
			t.Logf("%s: %+v", name, *e)
		}
	}
}

func TestParseTrailingDocumentMarker(t *testing.T) {
	if _, err := Parse("ship.yaml", []byte("---\napp: a\n---\n")); err != nil {
		t.Errorf("a leading and a trailing --- are refused: %v", err)
	}
}

func TestParseDefaults(t *testing.T) {
	c, err := Parse("ship.yaml", []byte("app: shop\nenvironments:\n  prod:\n    hosts: [web1]\n    path: /srv/shop/\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Compose != DefaultCompose || c.Test.Compose != DefaultTestCompose || c.Test.Service != DefaultTestService || c.Test.Timeout != DefaultTestTimeout {
		t.Errorf("top-level defaults not applied: %+v", c)
	}
	if c.Registry != "" || c.Notify.Webhook != "" {
		t.Errorf("optional keys should stay empty: %+v", c)
	}
	e := c.Environments["prod"]
	wantEnv := &Environment{Name: "prod", Hosts: []Host{{Name: "web1"}}, Path: "/srv/shop", Keep: 5, DockerSocket: "/var/run/docker.sock"}
	if !reflect.DeepEqual(e, wantEnv) {
		t.Errorf("prod = %+v, want %+v", e, wantEnv)
	}
}

func TestParseAnchors(t *testing.T) {
	c, err := parseFile(t, "anchors.yaml")
	if err != nil {
		t.Fatal(err)
	}
	st, prod := c.Environments["staging"], c.Environments["prod"]
	if st.Path != "/srv/shop" || st.Confirm || st.Keep != 3 {
		t.Errorf("staging = %+v: want merged path and keep, its own confirm: false", st)
	}
	if prod.Path != "/srv/shop" || !prod.Confirm || prod.Keep != 3 || prod.Parallel != 1 {
		t.Errorf("prod = %+v: want merged path, confirm and keep", prod)
	}
	wantHosts := []Host{{Name: "web1.example.com"}, {User: "root", Name: "2001:db8::1", Port: 2222}}
	if !reflect.DeepEqual(prod.Hosts, wantHosts) {
		t.Errorf("prod hosts = %v, want %v", prod.Hosts, wantHosts)
	}
}

// problem is one expected problem: its line and a part of its message.
type problem struct {
	line int
	msg  string
}

func TestParseProblems(t *testing.T) {
	tests := []struct {
		file string
		want []problem
	}{
		{"three-mistakes.yaml", []problem{
			{1, `app: "My Shop" is not a valid compose project name`},
			{7, `environments.prod.confirm: "yes" is not true or false; write "confirm: true"`},
			{8, `environments.prod.grace: "30x" is not a duration; write e.g. 30s or 2m`},
		}},
		{"typo.yaml", []problem{
			{4, `unknown key "hsots" in environments.prod; did you mean "hosts"?`},
		}},
		{"empty.yaml", []problem{
			{0, "the file is empty"},
		}},
		{"not-a-mapping.yaml", []problem{
			{1, "the file holds a list; ship.yaml must be a mapping"},
		}},
		{"wrong-types.yaml", []problem{
			{2, "test: expected a mapping of keys (compose, service, timeout), found a list"},
			{4, "environments: expected a mapping of environment names to their settings, found a list"},
			{5, `notify: expected a mapping of keys (webhook), found a string; write e.g. "notify: {webhook: https://deploys.example.com/hook}"`},
		}},
		{"duplicates.yaml", []problem{
			{4, "environments.prod.hosts[1]: deploy@web1.example.com is listed twice (first on line 4)"},
			{6, `duplicate key "path" in environments.prod (first on line 5)`},
			{7, `duplicate key "prod" in environments (first on line 3)`},
		}},
		{"dotdot.yaml", []problem{
			{5, `environments.prod.path: "/srv/shop/../etc" contains ".."; write the folder it means, e.g. /srv/etc`},
		}},
		{"tabs.yaml", []problem{
			{4, "YAML syntax: found character that cannot start any token; YAML does not allow tabs"},
		}},
		{"values.yaml", []problem{
			{2, "compose is empty; write a file name"},
			{4, "test.timeout: 0s must be more than zero"},
			{5, `test.service: "my test" is not a compose service name`},
			{6, `has a scheme; write it without one: "registry: registry.example.com"`},
			{9, `environments.prod.hosts: expected a list, found a string; write "hosts: [deploy@web1.example.com]"`},
			{10, `environments.prod.path: "srv/shop" is not absolute; write a path from the root of the host, e.g. /srv/shop`},
			{11, "environments.prod.keep: 0 is less than 1"},
			{12, `environments.prod.parallel: "two" is not a whole number`},
			{13, "environments.prod.grace: 30 has no unit; write e.g. 30s"},
			{14, "environments.prod.docker_socket has no value"},
			{15, `environment name "bad name!" may hold only`},
			{19, "notify.webhook: the URL does not start with http:// or https://"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			c, err := parseFile(t, tt.file)
			if err == nil {
				t.Fatalf("Parse = %+v, want an error", c)
			}
			checkProblems(t, err, tt.file, tt.want)
		})
	}
}

func checkProblems(t *testing.T, err error, file string, want []problem) {
	t.Helper()
	if !errors.Is(err, ErrInvalid) {
		t.Errorf("errors.Is(err, ErrInvalid) = false for %v", err)
	}
	var cerr *Error
	if !errors.As(err, &cerr) {
		t.Fatalf("error %T is not a *config.Error: %v", err, err)
	}
	got := cerr.Problems
	if len(got) != len(want) {
		t.Fatalf("got %d problems, want %d:\n%v", len(got), len(want), err)
	}
	for i, w := range want {
		g := got[i]
		if g.File != file || g.Line != w.line || !strings.Contains(g.Msg, w.msg) {
			t.Errorf("problem %d = %s\nwant %s:%d: ...%s...", i, g, file, w.line, w.msg)
		}
		if strings.Contains(g.Msg, "\n") {
			t.Errorf("problem %d spans lines: %q", i, g.Msg)
		}
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != len(want) {
		t.Errorf("Error() has %d lines, want one per problem (%d):\n%s", len(lines), len(want), err)
	}
}

func TestParseInline(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []problem
	}{
		{"empty", "", []problem{{0, "the file is empty"}}},
		{"null document", "~\n", []problem{{0, "the file is empty"}}},
		{"scalar", "hello\n", []problem{{1, "the file holds a string"}}},
		{"app missing", "registry: r.example.com\n", []problem{{1, `app is missing; write the compose project name for the hosts, e.g. "app: myapp"`}}},
		{"app bool", "app: true\n", []problem{{1, "app: true is true/false, not text"}}},
		{"app list", "app: [a]\n", []problem{{1, "app: expected a single value, found a list"}}},
		{"two documents", "app: a\n---\napp: b\n", []problem{{3, "a second YAML document"}}},
		{"trailing empty document is fine but the syntax error is not", "app: a\n---\n---\n[\n", []problem{{4, "YAML syntax:"}}},
		{"top-level misspelt", "app: a\nregsitry: r.example.com\n", []problem{{2, `unknown top-level key "regsitry"; did you mean "registry"?`}}},
		{"misplaced key", "app: a\nwebhook: https://x.example.com\n", []problem{{2, `unknown top-level key "webhook"; webhook belongs under notify`}}},
		{"environment at top level", "app: a\nproduction:\n  hosts: [w]\n  path: /srv/a\n", []problem{{2, `environments go under environments:`}}},
		{"top-level key in an environment", "app: a\nenvironments: {p: {hosts: [w], path: /a, registry: r}}\n", []problem{{2, `unknown key "registry" in environments.p; registry belongs at the top level`}}},
		{"environment key in test", "app: a\ntest: {keep: 3}\n", []problem{{2, `unknown key "keep" in test; keep belongs under environments.NAME`}}},
		{"unknown key lists known ones", "app: a\nnotify:\n  url: https://x.example.com\n", []problem{{3, `unknown key "url" in notify; known keys are webhook`}}},
		{"tls without key", "app: a\nenvironments:\n  p:\n    hosts: [w]\n    path: /a\n    tls: {cert: c.pem}\n", []problem{{6, `environments.p.tls: key is missing`}}},
		{"tls not a mapping", "app: a\nenvironments:\n  p:\n    hosts: [w]\n    path: /a\n    tls: true\n", []problem{{6, `environments.p.tls: expected a mapping of cert and key files`}}},
		{"tls unknown key", "app: a\nenvironments:\n  p:\n    hosts: [w]\n    path: /a\n    tls:\n      cert: c.pem\n      key: k.pem\n      chain: x.pem\n", []problem{{9, `unknown key "chain" in environments.p.tls`}}},
		{"missing hosts and path", "app: a\nenvironments:\n  prod:\n    confirm: true\n", []problem{
			{3, "environments.prod: hosts is missing"},
			{3, "environments.prod: path is missing"},
		}},
		{"empty environment", "app: a\nenvironments:\n  prod:\n", []problem{
			{3, "environments.prod: hosts is missing"},
			{3, "environments.prod: path is missing"},
		}},
		{"environment is a list", "app: a\nenvironments:\n  prod: [web1]\n", []problem{{3, "environments.prod: expected the environment's settings"}}},
		{"empty hosts", "app: a\nenvironments: {p: {hosts: [], path: /a}}\n", []problem{{2, "environments.p.hosts: the list is empty"}}},
		{"bad host", "app: a\nenvironments: {p: {hosts: [\"web 1\"], path: /a}}\n", []problem{{2, `environments.p.hosts[0]: "web 1" contains spaces`}}},
		{"root path", "app: a\nenvironments: {p: {hosts: [w], path: /}}\n", []problem{{2, `"/" is the root of the host`}}},
		{"negative grace", "app: a\nenvironments: {p: {hosts: [w], path: /a, grace: -1s}}\n", []problem{{2, "environments.p.grace: -1s is negative"}}},
		{"huge keep", "app: a\nenvironments: {p: {hosts: [w], path: /a, keep: 99999999999999999999}}\n", []problem{{2, "is not a whole number"}}},
		{"keep as string", "app: a\nenvironments: {p: {hosts: [w], path: /a, keep: \"5\"}}\n", []problem{{2, `environments.p.keep: "5" is not a whole number; write e.g. 5`}}},
		{"registry with path in capitals", "app: a\nregistry: r.example.com/Team/\n", []problem{{2, `write "r.example.com/team"`}}},
		{"registry bad port", "app: a\nregistry: r.example.com:99999\n", []problem{{2, "port 99999 is not from 1 to 65535"}}},
		{"non-scalar key", "app: a\n? [x]\n: 1\n", []problem{{2, "keys must be plain names"}}},
		{"merge of a scalar", "app: a\nenvironments:\n  p:\n    <<: 5\n    hosts: [w]\n    path: /a\n", []problem{{4, `"<<" merges a mapping; found a number`}}},
		{"self-merging anchor", "app: a\nenvironments:\n  p: &a\n    <<: *a\n    hosts: [w]\n    path: /a\n", []problem{{4, `"<<" merges a mapping into itself`}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse("ship.yaml", []byte(tt.yaml))
			if err == nil {
				t.Fatalf("Parse = %+v, want an error", c)
			}
			checkProblems(t, err, "ship.yaml", tt.want)
		})
	}
}

func TestParseManyMerges(t *testing.T) {
	// Each level merges the one before four times: expanded naively, 4^30 pairs.
	var b strings.Builder
	b.WriteString("app: a\nx-l0: &l0 {path: /srv/a}\n")
	for i := 1; i <= 30; i++ {
		fmt.Fprintf(&b, "x-l%d: &l%d {<<: [*l%d, *l%d, *l%d, *l%d], k%d: 1}\n", i, i, i-1, i-1, i-1, i-1, i)
	}
	b.WriteString("environments:\n  p:\n    <<: *l30\n    hosts: [w]\n")
	done := make(chan error, 1)
	go func() {
		_, err := Parse("ship.yaml", []byte(b.String()))
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), `unknown key "k30" in environments.p`) {
			t.Errorf("Parse = %v; want the merged unknown keys reported", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Parse of nested merges did not finish in 10s")
	}
}

func TestSecretsNotInMessages(t *testing.T) {
	tests := []struct {
		name, yaml string
	}{
		{"webhook", "app: a\nnotify: {webhook: \"ftp://u:s3cr3t@hooks.example.com/s3cr3t\"}\n"},
		{"webhook without host", "app: a\nnotify: {webhook: \"https:///s3cr3t\"}\n"},
		{"registry", "app: a\nregistry: \"user:s3cr3t@registry.example.com\"\n"},
		{"host", "app: a\nenvironments: {p: {hosts: [\"deploy:s3cr3t@web1\"], path: /a}}\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("ship.yaml", []byte(tt.yaml))
			if err == nil {
				t.Fatal("Parse accepted it")
			}
			if strings.Contains(err.Error(), "s3cr3t") {
				t.Errorf("the error repeats the secret: %v", err)
			}
		})
	}
}

func TestUnknownKeySuggestion(t *testing.T) {
	tests := []struct {
		where, key, want string
	}{
		{"environments.prod", "hsots", "hosts"},
		{"environments.prod", "host", "hosts"},
		{"environments.prod", "envfile", "env_file"},
		{"environments.prod", "env-file", "env_file"},
		{"environments.prod", "known-hosts", "known_hosts"},
		{"environments.prod", "dockersocket", "docker_socket"},
		{"environments.prod", "Confirm", "confirm"},
		{"environments.prod", "paralel", "parallel"},
		{"test", "timout", "timeout"},
		{"test", "servce", "service"},
		{"notify", "webhok", "webhook"},
		{"", "ap", "app"},
		{"", "enviroments", "environments"},
		{"", "registery", "registry"},
		{"environments.prod", "color", ""},
		{"", "x", ""},
	}
	for _, tt := range tests {
		t.Run(tt.where+"/"+tt.key, func(t *testing.T) {
			var doc string
			switch tt.where {
			case "":
				doc = "app: a\n" + tt.key + ": 1\n"
			case "test", "notify":
				doc = "app: a\n" + tt.where + ":\n  " + tt.key + ": 1\n"
			default:
				doc = "app: a\nenvironments:\n  prod:\n    hosts: [w]\n    path: /a\n    " + tt.key + ": 1\n"
			}
			_, err := Parse("ship.yaml", []byte(doc))
			if err == nil {
				t.Fatal("Parse accepted an unknown key")
			}
			hint := `did you mean "` + tt.want + `"?`
			if tt.want == "" {
				if strings.Contains(err.Error(), "did you mean") {
					t.Errorf("suggested something for %q: %v", tt.key, err)
				}
				return
			}
			if !strings.Contains(err.Error(), hint) {
				t.Errorf("error %q does not contain %q", err, hint)
			}
		})
	}
}

func TestParseHost(t *testing.T) {
	tests := []struct {
		in      string
		want    Host
		wantErr string
	}{
		{in: "web1", want: Host{Name: "web1"}},
		{in: "deploy@web1.example.com", want: Host{User: "deploy", Name: "web1.example.com"}},
		{in: "deploy@web2.example.com:2222", want: Host{User: "deploy", Name: "web2.example.com", Port: 2222}},
		{in: "10.0.0.5:22", want: Host{Name: "10.0.0.5", Port: 22}},
		{in: "[::1]:22", want: Host{Name: "::1", Port: 22}},
		{in: "root@[2001:db8::1]", want: Host{User: "root", Name: "2001:db8::1"}},
		{in: "root@2001:db8::1", want: Host{User: "root", Name: "2001:db8::1"}},
		{in: "[fe80::1%eth0]:22", want: Host{Name: "fe80::1%eth0", Port: 22}},
		{in: "ci_user.1@my-host_1", want: Host{User: "ci_user.1", Name: "my-host_1"}},
		{in: "", wantErr: "is empty"},
		{in: "@web1", wantErr: `nothing before "@"`},
		{in: "a@b@c", wantErr: `more than one "@"`},
		{in: "deploy@", wantErr: "has no host name"},
		{in: "web1:", wantErr: `ends in ":" with no port`},
		{in: "web1:0", wantErr: "is not a number from 1 to 65535"},
		{in: "web1:65536", wantErr: "is not a number from 1 to 65535"},
		{in: "web1:+22", wantErr: "is not a number from 1 to 65535"},
		{in: "web1:ssh", wantErr: "is not a number from 1 to 65535"},
		{in: "[::1", wantErr: `"[" without "]"`},
		{in: "[web1]:22", wantErr: "is not an IP address"},
		{in: "[::1]22", wantErr: `after "]"`},
		{in: "[::1]:", wantErr: `ends in ":" with no port`},
		{in: "a:b:c", wantErr: "write IPv6 addresses in brackets"},
		{in: "-oProxyCommand=x", wantErr: `must not start with "-"`},
		{in: "web 1", wantErr: "contains spaces"},
		{in: "de/ploy@web1", wantErr: `user "de/ploy" may hold only`},
		{in: "deploy:pw@web1", wantErr: "a password is written in this host"},
		{in: "https://web1", wantErr: "is not a number"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseHost(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseHost(%q) = %+v, %v; want an error with %q", tt.in, got, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseHost(%q): %v", tt.in, err)
			}
			if got != tt.want {
				t.Fatalf("ParseHost(%q) = %+v, want %+v", tt.in, got, tt.want)
			}
			back, err := ParseHost(got.String())
			if err != nil || back != got {
				t.Errorf("ParseHost(%q.String() = %q) = %+v, %v; want it back", tt.in, got.String(), back, err)
			}
		})
	}
}

func TestHostString(t *testing.T) {
	tests := []struct {
		h    Host
		want string
	}{
		{Host{Name: "web1"}, "web1"},
		{Host{User: "deploy", Name: "web1", Port: 2222}, "deploy@web1:2222"},
		{Host{Name: "::1", Port: 22}, "[::1]:22"},
		{Host{User: "root", Name: "2001:db8::1"}, "root@[2001:db8::1]"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			if got := tt.h.String(); got != tt.want {
				t.Errorf("String() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestApplyEnv(t *testing.T) {
	tests := []struct {
		name, file, env, want string
	}{
		{"env overrides file", "registry.example.com:5000", "localhost:5000", "localhost:5000"},
		{"env sets a missing registry", "", "localhost:5000/team", "localhost:5000/team"},
		{"empty env keeps the file", "registry.example.com:5000", "", "registry.example.com:5000"},
		{"blank env keeps the file", "registry.example.com:5000", "  ", "registry.example.com:5000"},
		{"trailing slash dropped", "", "localhost:5000/", "localhost:5000"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &Config{Registry: tt.file}
			c.ApplyEnv(func(k string) string {
				if k == "SHIP_REGISTRY" {
					return tt.env
				}
				return ""
			})
			if c.Registry != tt.want {
				t.Errorf("Registry = %q, want %q", c.Registry, tt.want)
			}
		})
	}
	t.Run("nil getenv", func(t *testing.T) {
		c := &Config{Registry: "r"}
		c.ApplyEnv(nil)
		if c.Registry != "r" {
			t.Errorf("Registry = %q", c.Registry)
		}
	})
}

func TestEnv(t *testing.T) {
	c, err := parseFile(t, "full.yaml")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		wantErr []string
	}{
		{name: "prod"},
		{name: "staging"},
		{name: "prd", wantErr: []string{`no environment "prd"`, `did you mean "prod"?`, "Known: prod, staging"}},
		{name: "qa", wantErr: []string{`no environment "qa"`, "Known: prod, staging"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := c.Env(tt.name)
			if tt.wantErr == nil {
				if err != nil || e.Name != tt.name {
					t.Fatalf("Env(%q) = %v, %v", tt.name, e, err)
				}
				return
			}
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Env(%q) error %v is not ErrInvalid", tt.name, err)
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Env(%q) error %q lacks %q", tt.name, err, w)
				}
			}
		})
	}
	t.Run("none", func(t *testing.T) {
		c := &Config{File: "ship.yaml", App: "shop"}
		_, err := c.Env("prod")
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "add one under environments:") {
			t.Errorf("Env on a config without environments: %v", err)
		}
	})
}

func TestPath(t *testing.T) {
	c := &Config{Dir: filepath.FromSlash("/src/app")}
	tests := []struct{ in, want string }{
		{".env.prod", filepath.FromSlash("/src/app/.env.prod")},
		{"deploy/known_hosts", filepath.FromSlash("/src/app/deploy/known_hosts")},
		{"../shared/hosts", filepath.FromSlash("/src/shared/hosts")},
		{"/etc/ssh/known", "/etc/ssh/known"},
		{"", ""},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			if got := c.Path(tt.in); got != tt.want {
				t.Errorf("Path(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestLoad(t *testing.T) {
	t.Run("missing file", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "ship.yaml")
		_, err := Load(path)
		if !errors.Is(err, ErrInvalid) {
			t.Fatalf("Load of a missing file: %v, want ErrInvalid", err)
		}
		for _, w := range []string{path, "shipctl init"} {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("error %q does not mention %q", err, w)
			}
		}
	})
	t.Run("file", func(t *testing.T) {
		c, err := Load(filepath.Join("testdata", "full.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		abs, _ := filepath.Abs("testdata")
		if c.File != filepath.Join("testdata", "full.yaml") || c.Dir != abs {
			t.Errorf("File, Dir = %q, %q; want testdata/full.yaml, %q", c.File, c.Dir, abs)
		}
		if got := c.Path(".env.prod"); got != filepath.Join(abs, ".env.prod") {
			t.Errorf("Path(.env.prod) = %q", got)
		}
	})
	t.Run("invalid file", func(t *testing.T) {
		_, err := Load(filepath.Join("testdata", "typo.yaml"))
		if !errors.Is(err, ErrInvalid) || !strings.HasPrefix(err.Error(), filepath.Join("testdata", "typo.yaml")+":4:5: ") {
			t.Errorf("Load(typo.yaml) = %v", err)
		}
	})
}

func TestAppName(t *testing.T) {
	tests := []struct{ in, want string }{
		{"fml", "fml"},
		{"My App", "myapp"},
		{"_private-thing", "private-thing"},
		{"shop.example.com", "shopexamplecom"},
		{"!!!", "app"},
		{"", "app"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got := AppName(tt.in)
			if got != tt.want || !validApp(got) {
				t.Errorf("AppName(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestErrorSorted(t *testing.T) {
	e := &Error{Problems: []Problem{
		{File: "ship.yaml", Line: 9, Column: 3, Msg: "c"},
		{File: "ship.yaml", Line: 2, Column: 7, Msg: "b"},
		{File: "ship.yaml", Line: 2, Column: 1, Msg: "a"},
		{File: "ship.yaml", Msg: "whole file"},
	}}
	want := "ship.yaml: whole file\nship.yaml:2:1: a\nship.yaml:2:7: b\nship.yaml:9:3: c"
	if e.Error() != want {
		t.Errorf("Error() =\n%s\nwant\n%s", e.Error(), want)
	}
	if !errors.Is(e, ErrInvalid) {
		t.Error("errors.Is(*Error, ErrInvalid) = false")
	}
	if p := (Problem{File: "ship.yaml", Line: 12, Column: 5, Msg: `unknown key "hsots" in environments.prod; did you mean "hosts"?`}); p.String() != `ship.yaml:12:5: unknown key "hsots" in environments.prod; did you mean "hosts"?` {
		t.Errorf("Problem.String() = %q", p.String())
	}
}

func TestExampleConfig(t *testing.T) {
	// configs/ship.yaml is the documented example: it must stay valid and match DESIGN.md.
	c, err := Load(filepath.Join("..", "..", "configs", "ship.yaml"))
	if err != nil {
		t.Fatalf("configs/ship.yaml: %v", err)
	}
	if c.App != "fml" || c.Registry != "registry.example.com:5000" || c.Notify.Webhook != "https://deploys.example.com/hook" {
		t.Errorf("top level = %+v", c)
	}
	prod, err := c.Env("prod")
	if err != nil {
		t.Fatal(err)
	}
	if len(prod.Hosts) != 2 || prod.Hosts[1].Port != 2222 || !prod.Confirm || !prod.Agent || prod.Grace != 30*time.Second || prod.EnvFile != ".env.prod" {
		t.Errorf("prod = %+v", prod)
	}
	if _, err := c.Env("staging"); err != nil {
		t.Error(err)
	}
}

func TestParseEnvironmentTLS(t *testing.T) {
	c, err := Parse("ship.yaml", []byte("app: a\nenvironments:\n  p:\n    hosts: [w]\n    path: /a\n    tls: {cert: deploy/cert.pem, key: deploy/key.pem}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if e := c.Environments["p"]; e.TLSCert != "deploy/cert.pem" || e.TLSKey != "deploy/key.pem" {
		t.Errorf("tls: %q %q", e.TLSCert, e.TLSKey)
	}
}
