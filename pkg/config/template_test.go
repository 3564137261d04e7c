package config

import (
	"bytes"
	"strings"
	"testing"
)

func TestTemplate(t *testing.T) {
	tests := []struct {
		name string
		in   TemplateInput
		app  string
	}{
		{"full", TemplateInput{
			App: "fml", Compose: "docker-compose.yml", Registry: "registry.example.com:5000",
			Services: []TemplateService{
				{Name: "web", Build: true, Ports: []string{"80:8080"}},
				{Name: "db"},
			},
		}, "fml"},
		{"empty input", TemplateInput{}, "app"},
		{"invalid app made valid", TemplateInput{App: "My Shop"}, "myshop"},
		{"odd compose name", TemplateInput{App: "a", Compose: "deploy/compose: prod.yml"}, "a"},
		{"registry with path", TemplateInput{App: "a", Registry: "ghcr.io/acme"}, "a"},
		{"service text stays in its comment", TemplateInput{App: "a", Services: []TemplateService{{Name: "x\napp: b", Ports: []string{"1\n2"}}}}, "a"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := Template(tt.in)
			c, err := Parse("ship.yaml", out)
			if err != nil {
				t.Fatalf("Template output does not parse: %v\n%s", err, out)
			}
			if c.App != tt.app {
				t.Errorf("app = %q, want %q", c.App, tt.app)
			}
			wantCompose := tt.in.Compose
			if wantCompose == "" {
				wantCompose = DefaultCompose
			}
			if c.Compose != wantCompose || c.Registry != tt.in.Registry {
				t.Errorf("compose, registry = %q, %q; want %q, %q", c.Compose, c.Registry, wantCompose, tt.in.Registry)
			}
			for _, env := range []string{"staging", "prod"} {
				if _, err := c.Env(env); err != nil {
					t.Errorf("no %s environment: %v", env, err)
				}
			}
			for _, s := range tt.in.Services {
				if !bytes.Contains(out, []byte(strings.Fields(oneLine(s.Name))[0])) {
					t.Errorf("service %q is not listed", s.Name)
				}
			}
		})
	}
}

func TestTemplateDocumentsEveryKey(t *testing.T) {
	out := string(Template(TemplateInput{App: "a"}))
	for _, keys := range [][]string{topKeys, testKeys, envKeys, notKeys} {
		for _, k := range keys {
			if !strings.Contains(out, k+":") {
				t.Errorf("the template does not mention %s:", k)
			}
		}
	}
}
