package compose

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"gopkg.in/yaml.v3"
)

// FuzzShip feeds arbitrary YAML to the x-ship parser: it must never panic, and what it
// accepts must be consistent.
func FuzzShip(f *testing.F) {
	for _, seed := range []string{
		"{port: 8080, listen: \":80\", health: /up, drain: 30s}",
		"{job: pre-deploy}",
		"{port: 99999, listen: 80}",
		"[1, 2]",
		"{drain: 5}",
		"{port: \"8080\", listen: \"[::1]:80\"}",
		"{port: 8080, host: [a.example.com, \"*.b.example.com\"], path: [/, /api/], tls: true}",
		"{port: 8080, host: a.test, tls: {cert: c.pem, key: k.pem}, listen: [\":80\", \":443\"]}",
		"{port: 1, host: a.test, routes: [{port: 2, host: admin.a.test, path: /admin}, {port: 3, listen: \":8080\"}]}",
		"{job: pre-deploy, routes: [{port: 1}]}",
		"{routes: [{host: x}], tls: {cert: 1}}",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, doc string) {
		var raw any
		if yaml.Unmarshal([]byte(doc), &raw) != nil {
			return
		}
		s, problems := parseShip(raw)
		if len(problems) == 0 {
			if s.Port < 0 || s.Port > 65535 || s.Drain < 0 {
				t.Fatalf("accepted out-of-range settings %+v from %q", s, doc)
			}
			if s.Job != "" && s.Routed() {
				t.Fatalf("accepted a routed job %+v from %q", s, doc)
			}
			if s.Routed() != (len(s.Routes) > 0) || s.Routed() && s.Port != s.Routes[0].Port {
				t.Fatalf("port %d and routes %+v disagree, from %q", s.Port, s.Routes, doc)
			}
			for _, r := range s.Routes {
				if r.Port < 1 || r.Port > 65535 || r.Listen == "" && r.ListenTLS == "" || r.TLS.On() != (r.ListenTLS != "") {
					t.Fatalf("accepted a route that cannot be served %+v from %q", r, doc)
				}
				for _, h := range r.Host {
					if checkHost(h) != "" {
						t.Fatalf("accepted host %q from %q", h, doc)
					}
				}
			}
		}
	})
}

// FuzzLoad feeds arbitrary compose files to Load: an error is fine, a panic is not.
func FuzzLoad(f *testing.F) {
	for _, name := range []string{"app", "unsupported", "badship"} {
		data, err := os.ReadFile(filepath.Join("testdata", name, "docker-compose.yml"))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(string(data))
	}
	f.Add("services: {a: {image: x, ports: [\"80:80\"], volumes: [\"v:/v\"]}}\nvolumes: {v: {}}")
	f.Fuzz(func(t *testing.T, doc string) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "docker-compose.yml"), []byte(doc), 0o644); err != nil {
			t.Fatal(err)
		}
		p, err := Load(context.Background(), Options{Dir: dir, Name: "fuzz", Environ: []string{}})
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error is not ErrInvalid: %v", err)
			}
			return
		}
		for name := range p.Services {
			if _, ok := p.Ship[name]; !ok {
				t.Fatalf("service %q has no parsed x-ship entry", name)
			}
		}
	})
}
