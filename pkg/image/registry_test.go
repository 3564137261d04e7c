package image

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/moby/moby/api/types/registry"

	"github.com/shipdeploy/ship/test/testenv"
)

// tokenRegistry answers /v2/ and manifest HEADs the way a registry behind a token
// service does: a bearer token from its /token endpoint, for basic auth there. The
// in-process distribution registry of test/testenv has basic auth only, so this one
// flow is served by a stand-in.
func tokenRegistry(t *testing.T) *httptest.Server {
	t.Helper()
	const user, pass, token = "ci", "s3cret-pass", "tok-123"
	var srv *httptest.Server
	mux := http.NewServeMux()
	mux.HandleFunc("/token", func(w http.ResponseWriter, r *http.Request) {
		u, p, ok := r.BasicAuth()
		if !ok || u != user || p != pass || r.URL.Query().Get("service") != "fake" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		fmt.Fprintf(w, `{"token": %q, "expires_in": 300}`, token)
	})
	mux.HandleFunc("/v2/", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+token {
			w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm="%s/token",service="fake"`, srv.URL))
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		switch r.URL.Path {
		case "/v2/":
			w.WriteHeader(http.StatusOK)
		case "/v2/team/web/manifests/latest":
			if !strings.Contains(r.Header.Get("Accept"), "application/vnd.oci.image.manifest.v1+json") {
				w.WriteHeader(http.StatusNotAcceptable)
				return
			}
			w.Header().Set("Docker-Content-Digest", "sha256:1234")
			w.WriteHeader(http.StatusOK)
		default:
			w.WriteHeader(http.StatusNotFound)
		}
	})
	srv = httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

// realRegistry is test/testenv's distribution registry with basic auth, holding
// team/web:latest (pushed by the engine); it returns the registry and that manifest's
// digest as the registry itself reports it.
func realRegistry(t *testing.T) (*testenv.RegistryServer, string) {
	t.Helper()
	cli := testenv.Docker(t)
	reg := testenv.Registry(t, testenv.WithAuth("ci", "s3cret-pass"))
	testenv.BaseImage(t, cli, reg, "team/web", "registry-test")
	req, err := http.NewRequest(http.MethodHead, "http://"+reg.Addr+"/v2/team/web/manifests/latest", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.SetBasicAuth(reg.User, reg.Password)
	req.Header.Set("Accept", "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	digest := resp.Header.Get("Docker-Content-Digest")
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(digest, "sha256:") {
		t.Fatalf("the registry's own answer for team/web:latest: %s, digest %q", resp.Status, digest)
	}
	return reg, digest
}

func yes() bool { return true }

func hostOf(srv *httptest.Server) string { return strings.TrimPrefix(srv.URL, "http://") }

func TestRegistryPing(t *testing.T) {
	good := Credentials{Username: "ci", Password: "s3cret-pass", From: "the test"}
	bad := Credentials{Username: "ci", Password: "wrong-pass", From: "the test"}
	reg, regDigest := realRegistry(t)
	tok := tokenRegistry(t)
	for _, tc := range []struct {
		name, host, digest string
	}{
		{"basic auth (distribution)", reg.Addr, regDigest},
		{"bearer token", hostOf(tok), "sha256:1234"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newRegistryClient(tc.host, good, yes)
			if err := c.ping(context.Background()); err != nil {
				t.Errorf("good credentials: %v", err)
			}
			if c.base != "http://"+tc.host {
				t.Errorf("the scheme settled on %q, want http://%s (HTTPS failed, the registry is insecure)", c.base, tc.host)
			}
			digest, ok, err := c.manifest(context.Background(), "team/web", "latest")
			if err != nil || !ok || digest != tc.digest {
				t.Errorf("manifest team/web:latest = %q, %v, %v; want %s", digest, ok, err, tc.digest)
			}
			if _, ok, err := c.manifest(context.Background(), "team/web", "nope"); err != nil || ok {
				t.Errorf("a missing manifest: %v, %v", ok, err)
			}

			err = newRegistryClient(tc.host, bad, yes).ping(context.Background())
			if !errors.Is(err, ErrRegistryAuth) || strings.Contains(err.Error(), "wrong-pass") ||
				!strings.Contains(err.Error(), `user "ci"`) || !strings.Contains(err.Error(), "the test") {
				t.Errorf("refused credentials: %v", err)
			}
			err = newRegistryClient(tc.host, Credentials{}, yes).ping(context.Background())
			if !errors.Is(err, ErrRegistryAuth) || !strings.Contains(err.Error(), "none were found") {
				t.Errorf("no credentials: %v", err)
			}
		})
	}

	t.Run("secure registry over plain HTTP", func(t *testing.T) {
		err := newRegistryClient(reg.Addr, good, nil).ping(context.Background())
		if !errors.Is(err, ErrRegistryDown) {
			t.Errorf("a registry the engine reaches by HTTPS only must not be asked over HTTP: %v", err)
		}
	})
	t.Run("down", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		err = newRegistryClient(addr, good, yes).ping(context.Background())
		if !errors.Is(err, ErrRegistryDown) || !strings.Contains(err.Error(), addr) || !strings.Contains(err.Error(), "refused") {
			t.Errorf("a registry that is down: %v", err)
		}
	})
	t.Run("not a registry", func(t *testing.T) {
		srv := httptest.NewServer(http.NotFoundHandler())
		defer srv.Close()
		err := newRegistryClient(hostOf(srv), good, yes).ping(context.Background())
		if !errors.Is(err, ErrRegistryDown) || !strings.Contains(err.Error(), "404") {
			t.Errorf("a web server that is not a registry: %v", err)
		}
	})
}

func TestParseChallenge(t *testing.T) {
	for _, tc := range []struct {
		in     string
		scheme string
		params map[string]string
	}{
		{`Basic realm="x"`, "Basic", map[string]string{"realm": "x"}},
		{`Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:a/b:pull"`,
			"Bearer", map[string]string{"realm": "https://auth.example.com/token", "service": "registry.example.com", "scope": "repository:a/b:pull"}},
		{`Bearer realm="a, b", service=plain`, "Bearer", map[string]string{"realm": "a, b", "service": "plain"}},
		{`Bearer realm="say \"hi\""`, "Bearer", map[string]string{"realm": `say "hi"`}},
		{`Basic`, "Basic", map[string]string{}},
	} {
		scheme, params := parseChallenge(tc.in)
		if scheme != tc.scheme || !reflect.DeepEqual(params, tc.params) {
			t.Errorf("parseChallenge(%q) = %q %v, want %q %v", tc.in, scheme, params, tc.scheme, tc.params)
		}
	}
}

func TestFetchTokenWithRefreshToken(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.FormValue("grant_type") != "refresh_token" || r.FormValue("refresh_token") != "s3cret-refresh" ||
			r.FormValue("scope") != "repository:a/b:pull" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		fmt.Fprint(w, `{"access_token": "access-1"}`)
	}))
	defer srv.Close()
	tok, err := fetchToken(context.Background(), srv.Client(), tokenRequest{
		Realm: srv.URL, Service: "s", Scopes: []string{"repository:a/b:pull"}, Creds: Credentials{IdentityToken: "s3cret-refresh"},
	})
	if err != nil || tok.Token != "access-1" {
		t.Errorf("OAuth refresh: %+v, %v", tok, err)
	}
}

func TestInsecureRegistry(t *testing.T) {
	cfg := &registry.ServiceConfig{
		InsecureRegistryCIDRs: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")},
		IndexConfigs: map[string]*registry.IndexInfo{
			"docker.io":                 {Name: "docker.io", Secure: true},
			"insecure.example.com:5000": {Name: "insecure.example.com:5000", Secure: false},
			"127.0.0.1:5001":            {Name: "127.0.0.1:5001", Secure: true},
		},
	}
	for host, want := range map[string]bool{
		"127.0.0.1:5000":            true,
		"127.0.0.1:5001":            false, // named secure in the engine's config
		"insecure.example.com:5000": true,
		"docker.io":                 false,
		"10.1.2.3:5000":             false,
		"localhost:5000":            true,
	} {
		if got := insecureRegistry(cfg, host); got != want {
			t.Errorf("insecureRegistry(%s) = %v, want %v", host, got, want)
		}
	}
	if insecureRegistry(nil, "127.0.0.1:5000") {
		t.Error("without the engine's registry config nothing is insecure")
	}
}

// TestLoopbackHost: the registries the engine always reaches over plain HTTP too,
// for which push does not ask the engine's config.
func TestLoopbackHost(t *testing.T) {
	for host, want := range map[string]bool{
		"127.0.0.1:5000":     true,
		"127.1.2.3":          true,
		"localhost:5000":     true,
		"[::1]:5000":         true,
		"10.1.2.3:5000":      false,
		"registry.local:443": false,
		"docker.io":          false,
		"[::ffff:127.0.0.1]": true,
	} {
		if got := loopbackHost(host); got != want {
			t.Errorf("loopbackHost(%s) = %v, want %v", host, got, want)
		}
	}
}
