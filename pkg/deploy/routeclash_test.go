package deploy

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shipdeploy/ship/pkg/agentapi"
	"github.com/shipdeploy/ship/pkg/compose"
	"github.com/shipdeploy/ship/pkg/config"
	"github.com/shipdeploy/ship/pkg/redact"
	"github.com/shipdeploy/ship/pkg/release"
	"github.com/shipdeploy/ship/test/testenv"
)

func TestRouteClash(t *testing.T) {
	st := &agentapi.Status{Routes: []agentapi.Route{
		{App: "blog", Service: "web", Listen: ":80", Hosts: []string{"blog.example.com"}},
		{App: "shop", Service: "web", Listen: ":80", ListenTLS: ":443", Hosts: []string{"shop.example.com"}, Paths: []string{"/api"}, TLS: true},
		{App: "old", Service: "web", Listen: ":8080"},
	}}
	tests := []struct {
		name, xship, want string
	}{
		{"another app's host", "host: Blog.Example.com.", `service "web": host blog.example.com path / on port 80 is already routed by blog/web`},
		{"another app's host and path over https", "host: shop.example.com, path: /api/, tls: true", "host shop.example.com path /api on port 80 is already routed by shop/web"},
		{"another path of the host", "host: shop.example.com, path: /admin", ""},
		{"another port", `host: blog.example.com, listen: ":8081"`, ""},
		{"the app's own route", "host: mine.example.com", ""},
		{"two routes", "host: mine.example.com, routes: [{port: 9090, host: admin.example.com}]", ""},
		{"a second route on another app's host", "host: mine.example.com, routes: [{port: 9090, host: blog.example.com}]", `service "web": host blog.example.com path / on port 80 is already routed by blog/web`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			yaml := "services:\n  web:\n    image: nginx\n    x-ship: {port: 80, " + tt.xship + "}\n"
			p, err := compose.LoadResolved(context.Background(), "mine", t.TempDir(), "docker-compose.yml", []byte(yaml))
			if err != nil {
				t.Fatal(err)
			}
			err = routeClash(st, "mine", p)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want %q", err, tt.want)
			}
		})
	}
	// Its own routes never clash.
	p, err := compose.LoadResolved(context.Background(), "blog", t.TempDir(), "docker-compose.yml", []byte("services:\n  web:\n    image: nginx\n    x-ship: {port: 80, host: blog.example.com}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := routeClash(st, "blog", p); err != nil {
		t.Errorf("the app's own route: %v", err)
	}
}

func TestReadTLSFiles(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, _, err := testenv.WriteCert(dir, "shop", testenv.CertOptions{Names: []string{"shop.example.com"}})
	if err != nil {
		t.Fatal(err)
	}
	otherCert, _, _, err := testenv.WriteCert(dir, "other", testenv.CertOptions{Names: []string{"other.example.com"}})
	if err != nil {
		t.Fatal(err)
	}
	cfg := &config.Config{File: filepath.Join(dir, "ship.yaml"), Dir: dir}
	r := redact.New()
	files, err := readTLSFiles(cfg, &config.Environment{Name: "prod", TLSCert: filepath.Base(certFile), TLSKey: filepath.Base(keyFile)}, r)
	if err != nil || len(files) != 2 || files[0].Name != release.TLSCertFile || files[1].Name != release.TLSKeyFile {
		t.Fatalf("files %v, %v", files, err)
	}
	if got := r.String("key: " + string(files[1].Data)); strings.Contains(got, "PRIVATE KEY-----\nM") {
		t.Errorf("the key is not redacted: %q", got)
	}
	// A certificate and a key that do not match: refused with the key's place.
	_, err = readTLSFiles(cfg, &config.Environment{Name: "prod", TLSCert: filepath.Base(otherCert), TLSKey: filepath.Base(keyFile)}, r)
	if !errors.Is(err, config.ErrInvalid) || !strings.Contains(err.Error(), "environments.prod.tls") {
		t.Errorf("mismatched pair: %v", err)
	}
	_, err = readTLSFiles(cfg, &config.Environment{Name: "prod", TLSCert: "missing.pem", TLSKey: filepath.Base(keyFile)}, r)
	if !errors.Is(err, config.ErrInvalid) || !strings.Contains(err.Error(), "missing.pem") {
		t.Errorf("missing file: %v", err)
	}
}
