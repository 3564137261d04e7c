package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/distribution/distribution/v3/configuration"
	"github.com/distribution/distribution/v3/registry/handlers"
	"github.com/moby/moby/api/pkg/authconfig"
	"github.com/moby/moby/api/types/registry"
	"github.com/moby/moby/client"
	"github.com/moby/moby/client/pkg/jsonmessage"
	"github.com/sirupsen/logrus"
	"golang.org/x/crypto/bcrypt"

	// Registered by name for the registry's configuration.
	_ "github.com/distribution/distribution/v3/registry/auth/htpasswd"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/filesystem"
)

// RegistryServer is a distribution registry served in-process over plain HTTP on
// 127.0.0.1, which the Docker engine treats as an insecure registry it may push to
// and pull from. The engine must share this machine's loopback (a local dockerd, not
// Docker Desktop's VM or a remote DOCKER_HOST).
type RegistryServer struct {
	Addr     string // "127.0.0.1:port"
	User     string // empty without WithAuth
	Password string

	srv  *http.Server
	app  *handlers.App
	stop sync.Once
	done chan struct{} // closed when Serve has returned
}

// RegistryOption changes how Registry sets up its server.
type RegistryOption func(*registryOptions)

type registryOptions struct {
	user, password string
}

// WithAuth makes the registry demand HTTP basic auth for user and password (htpasswd
// with a bcrypt hash).
func WithAuth(user, password string) RegistryOption {
	return func(o *registryOptions) { o.user, o.password = user, password }
}

var quietRegistry sync.Once

// Registry starts a registry with filesystem storage in a temporary folder on a free
// port of 127.0.0.1 and stops it when the test ends. Its logs are dropped unless the
// tests run with -v.
func Registry(t testing.TB, opts ...RegistryOption) *RegistryServer {
	t.Helper()
	quietRegistry.Do(func() {
		if !testing.Verbose() {
			RegistryLog(io.Discard)
		}
	})
	r, err := StartRegistry("127.0.0.1:0", t.TempDir(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Stop)
	// The engine's copies of images tagged for it (<addr>/...), swept after a
	// killed run.
	Track(t, "registry", r.Addr)
	return r
}

// RegistryLog sends the logs of every registry of this process to w. The registry
// logs through logrus's standard logger; nothing else in ship uses logrus.
func RegistryLog(w io.Writer) {
	logrus.SetOutput(w)
}

// StartRegistry starts a registry listening on addr ("127.0.0.1:0": a free port) with
// its storage (and htpasswd file, WithAuth) under dir, for a process that is not a
// test: test/cmd/registry. The caller stops it with Stop.
func StartRegistry(addr, dir string, opts ...RegistryOption) (*RegistryServer, error) {
	var o registryOptions
	for _, opt := range opts {
		opt(&o)
	}
	secret, err := randomHex()
	if err != nil {
		return nil, err
	}
	cfg := &configuration.Configuration{
		Storage: configuration.Storage{
			"filesystem": configuration.Parameters{"rootdirectory": filepath.Join(dir, "data")},
			// The purger would start a goroutine that outlives the test.
			"maintenance": configuration.Parameters{"uploadpurging": map[any]any{"enabled": false}},
			"delete":      configuration.Parameters{"enabled": true},
		},
	}
	cfg.HTTP.Secret = secret
	if o.user != "" {
		hash, err := bcrypt.GenerateFromPassword([]byte(o.password), bcrypt.MinCost)
		if err != nil {
			return nil, fmt.Errorf("registry: %w", err)
		}
		file := filepath.Join(dir, "htpasswd")
		if err := os.WriteFile(file, []byte(o.user+":"+string(hash)+"\n"), 0o600); err != nil {
			return nil, fmt.Errorf("registry: %w", err)
		}
		cfg.Auth = configuration.Auth{"htpasswd": configuration.Parameters{"realm": "ship-test", "path": file}}
	}

	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("registry: listen: %w", err)
	}
	app, err := newRegistryApp(cfg)
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("registry: %w", err)
	}
	r := &RegistryServer{
		Addr: ln.Addr().String(), User: o.user, Password: o.password,
		app: app, done: make(chan struct{}),
		srv: &http.Server{Handler: app, ReadHeaderTimeout: 10 * time.Second},
	}
	go func() {
		defer close(r.done)
		_ = r.srv.Serve(ln)
	}()
	return r, nil
}

// newRegistryApp turns NewApp's panics on a bad configuration into an error.
func newRegistryApp(cfg *configuration.Configuration) (app *handlers.App, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("configure: %v", p)
		}
	}()
	return handlers.NewApp(context.Background(), cfg), nil
}

// Stop takes the registry down: connections are refused from now on. Safe to call
// more than once.
func (r *RegistryServer) Stop() {
	r.stop.Do(func() {
		_ = r.srv.Close()
		<-r.done
		_ = r.app.Shutdown()
	})
}

// RegistryAuth is the value of the engine's X-Registry-Auth header for this registry
// (client.ImagePushOptions.RegistryAuth, client.ImagePullOptions.RegistryAuth); empty without auth.
func (r *RegistryServer) RegistryAuth() string {
	if r.User == "" {
		return ""
	}
	return EncodeRegistryAuth(r.Addr, r.User, r.Password)
}

// EncodeRegistryAuth is the engine's X-Registry-Auth value for user and password on
// server.
func EncodeRegistryAuth(server, user, password string) string {
	s, err := authconfig.Encode(registry.AuthConfig{
		Username: user, Password: password, ServerAddress: server,
	})
	if err != nil {
		// Marshalling three strings cannot fail.
		panic(err)
	}
	return s
}

// manifestTypes are the media types HasManifest accepts: OCI and Docker, single
// images and indexes.
var manifestTypes = []string{
	"application/vnd.oci.image.manifest.v1+json",
	"application/vnd.oci.image.index.v1+json",
	"application/vnd.docker.distribution.manifest.v2+json",
	"application/vnd.docker.distribution.manifest.list.v2+json",
}

// HasManifest reports whether the registry holds repo:tag (repo without the registry
// address, e.g. "example/web"). Anything but 200 or 404 fails the test.
func (r *RegistryServer) HasManifest(t testing.TB, repo, tag string) bool {
	t.Helper()
	url := fmt.Sprintf("http://%s/v2/%s/manifests/%s", r.Addr, repo, tag)
	req, err := http.NewRequest(http.MethodHead, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", strings.Join(manifestTypes, ", "))
	if r.User != "" {
		req.SetBasicAuth(r.User, r.Password)
	}
	resp, err := (&http.Client{Timeout: Scale(10 * time.Second)}).Do(req)
	if err != nil {
		t.Fatalf("registry: HEAD %s: %v", url, err)
	}
	resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
		return true
	case http.StatusNotFound:
		return false
	}
	t.Fatalf("registry: HEAD %s: %s", url, resp.Status)
	return false
}

// PushImage pushes ref with the engine, reading its progress to the end: an error in
// the stream is returned. registryAuth is an X-Registry-Auth value, or empty.
func PushImage(ctx context.Context, cli *client.Client, ref, registryAuth string) error {
	if registryAuth == "" {
		// An empty auth config: older engines (20.10) refuse a push without the header.
		registryAuth = EncodeRegistryAuth("", "", "")
	}
	rc, err := cli.ImagePush(ctx, ref, client.ImagePushOptions{RegistryAuth: registryAuth})
	if err != nil {
		return fmt.Errorf("push %s: %w", ref, err)
	}
	defer rc.Close()
	if err := jsonmessage.DisplayJSONMessagesStream(rc, io.Discard, 0, false, nil); err != nil {
		return fmt.Errorf("push %s: %w", ref, err)
	}
	return nil
}

// PullImage pulls ref with the engine, reading its progress to the end.
func PullImage(ctx context.Context, cli *client.Client, ref, registryAuth string) error {
	rc, err := cli.ImagePull(ctx, ref, client.ImagePullOptions{RegistryAuth: registryAuth})
	if err != nil {
		return fmt.Errorf("pull %s: %w", ref, err)
	}
	defer rc.Close()
	if err := jsonmessage.DisplayJSONMessagesStream(rc, io.Discard, 0, false, nil); err != nil {
		return fmt.Errorf("pull %s: %w", ref, err)
	}
	return nil
}

// Push pushes ref (which names this registry) with the engine, with the registry's
// credentials when it has some, and fails the test on any error.
func (r *RegistryServer) Push(t testing.TB, cli *client.Client, ref string) {
	t.Helper()
	if !strings.HasPrefix(ref, r.Addr+"/") {
		t.Fatalf("push %s: not an image of the registry %s", ref, r.Addr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), Scale(2*time.Minute))
	defer cancel()
	if err := PushImage(ctx, cli, ref, r.RegistryAuth()); err != nil {
		t.Fatal(err)
	}
}

func randomHex() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}
