package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func FuzzParse(f *testing.F) {
	files, err := filepath.Glob(filepath.Join("testdata", "*.yaml"))
	if err != nil {
		f.Fatal(err)
	}
	files = append(files, filepath.Join("..", "..", "configs", "ship.yaml"))
	for _, name := range files {
		data, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add(Template(TemplateInput{App: "a", Registry: "r.example.com", Services: []TemplateService{{Name: "web", Build: true}}}))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse("ship.yaml", data)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error is not ErrInvalid: %v", err)
			}
			if c != nil {
				t.Fatal("Parse returned a config with an error")
			}
			return
		}
		if !validApp(c.App) {
			t.Fatalf("accepted app %q", c.App)
		}
		if c.Compose == "" || c.Test.Compose == "" || c.Test.Service == "" || c.Test.Timeout <= 0 {
			t.Fatalf("accepted empty settings: %+v", c)
		}
		for name, e := range c.Environments {
			if e.Name != name || len(e.Hosts) == 0 || !strings.HasPrefix(e.Path, "/") || e.Keep < 1 || e.Parallel < 0 || e.Grace < 0 || e.DockerSocket == "" {
				t.Fatalf("accepted environment %+v", e)
			}
			for _, h := range e.Hosts {
				back, err := ParseHost(h.String())
				if err != nil || back != h {
					t.Fatalf("host %+v does not round-trip through %q: %+v, %v", h, h.String(), back, err)
				}
			}
			if _, err := c.Env(name); err != nil {
				t.Fatal(err)
			}
		}
	})
}
