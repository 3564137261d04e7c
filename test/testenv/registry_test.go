package testenv

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/moby/moby/client"
)

// importImage makes an image named ref on the engine from one small file, without
// pulling anything, and removes it when the test ends.
func importImage(t *testing.T, cli *client.Client, ref string) {
	t.Helper()
	layer, err := TarFiles(map[string][]byte{"hello.txt": []byte("hello " + ref + "\n")})
	if err != nil {
		t.Fatal(err)
	}
	rc, err := cli.ImageImport(context.Background(), client.ImageImportSource{Source: layer, SourceName: "-"}, ref, client.ImageImportOptions{})
	if err != nil {
		t.Fatalf("import %s: %v", ref, err)
	}
	defer rc.Close()
	if _, err := io.Copy(io.Discard, rc); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { removeImage(cli, ref) })
}

func TestRegistryPush(t *testing.T) {
	t.Parallel()
	cli := Docker(t)
	tests := []struct {
		name string
		opts []RegistryOption
	}{
		{"open", nil},
		{"auth", []RegistryOption{WithAuth("ship", "s3cret-pass")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			reg := Registry(t, tt.opts...)
			ref := reg.Addr + "/ship-test/pushed:v1"
			importImage(t, cli, ref)

			if reg.HasManifest(t, "ship-test/pushed", "v1") {
				t.Fatal("HasManifest before the push")
			}
			reg.Push(t, cli, ref)
			if !reg.HasManifest(t, "ship-test/pushed", "v1") {
				t.Fatal("no manifest after the push")
			}
			if reg.HasManifest(t, "ship-test/pushed", "v2") {
				t.Fatal("HasManifest for a tag never pushed")
			}
		})
	}
}

func TestRegistryAuth(t *testing.T) {
	t.Parallel()
	cli := Docker(t)
	reg := Registry(t, WithAuth("ship", "s3cret-pass"))
	ref := reg.Addr + "/ship-test/private:v1"
	importImage(t, cli, ref)

	tests := []struct {
		name           string
		user, password string
		wantStatus     int
	}{
		{"right password", "ship", "s3cret-pass", http.StatusOK},
		{"wrong password", "ship", "wrong", http.StatusUnauthorized},
		{"unknown user", "nobody", "s3cret-pass", http.StatusUnauthorized},
		{"no credentials", "", "", http.StatusUnauthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequest(http.MethodGet, "http://"+reg.Addr+"/v2/", nil)
			if err != nil {
				t.Fatal(err)
			}
			if tt.user != "" {
				req.SetBasicAuth(tt.user, tt.password)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("GET /v2/ = %s, want %d", resp.Status, tt.wantStatus)
			}

			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			auth := ""
			if tt.user != "" {
				auth = EncodeRegistryAuth(reg.Addr, tt.user, tt.password)
			}
			err = PushImage(ctx, cli, ref, auth)
			switch {
			case tt.wantStatus == http.StatusOK && err != nil:
				t.Fatalf("push with %s: %v", tt.name, err)
			case tt.wantStatus != http.StatusOK && err == nil:
				t.Fatalf("push with %s succeeded", tt.name)
			case err != nil && !isAuthError(err):
				t.Fatalf("push with %s: %v, want an authentication error", tt.name, err)
			}
		})
	}
	if !reg.HasManifest(t, "ship-test/private", "v1") {
		t.Fatal("no manifest after the push with the right password")
	}
}

func TestRegistryStop(t *testing.T) {
	t.Parallel()
	reg := Registry(t)
	if reg.HasManifest(t, "ship-test/none", "latest") {
		t.Fatal("HasManifest in an empty registry")
	}
	reg.Stop()
	reg.Stop() // twice is fine
	// A fresh transport: a kept-alive connection from HasManifest would be reset
	// rather than refused.
	fresh := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	_, err := fresh.Get("http://" + reg.Addr + "/v2/")
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("GET after Stop: err = %v, want connection refused", err)
	}
}

func TestEncodeRegistryAuth(t *testing.T) {
	got := EncodeRegistryAuth("127.0.0.1:5000", "u", "p")
	if got == "" || strings.ContainsAny(got, "+/\n") {
		t.Fatalf("EncodeRegistryAuth = %q, want URL-safe base64", got)
	}
}

// isAuthError tells the engine's ways of saying a registry refused the credentials.
func isAuthError(err error) bool {
	for _, s := range []string{"unauthorized", "authentication required", "no basic auth credentials"} {
		if strings.Contains(err.Error(), s) {
			return true
		}
	}
	return false
}
