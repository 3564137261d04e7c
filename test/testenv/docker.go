package testenv

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/api/types/build"
	"github.com/moby/moby/client"
	"github.com/moby/moby/client/pkg/jsonmessage"
)

// Docker returns a client for the engine on this machine, its API version negotiated.
func Docker(t testing.TB) *client.Client {
	t.Helper()
	cli, err := client.New(client.FromEnv)
	if err != nil {
		Missing(t, "a Docker engine", err.Error())
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), Scale(10*time.Second))
	defer cancel()
	if _, err := cli.Ping(ctx, client.PingOptions{NegotiateAPIVersion: true}); err != nil {
		cli.Close()
		Missing(t, "a Docker engine", "start dockerd, or set DOCKER_HOST: "+err.Error())
		return nil
	}
	Sweep(cli) // once per process: what killed runs left
	t.Cleanup(func() { cli.Close() })
	return cli
}

// RepoRoot is the repository's top folder.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// AppImageRef is the tag of the example app's image that AppImage builds.
const AppImageRef = "ship-test/app:dev"

var (
	appOnce sync.Once
	appErr  error
)

// AppBinary builds examples/app as a static binary into dir and returns its path.
func AppBinary(t testing.TB, dir string) string {
	t.Helper()
	out := filepath.Join(dir, "app")
	// Without the checkout's commit in it, the same source is the same binary in
	// every checkout, so that AppImage of two test runs (of two checkouts at once)
	// gives AppImageRef the same image, never one run's image under the other's feet.
	if err := Build(out, "./examples/app", "-buildvcs=false"); err != nil {
		t.Fatal(err)
	}
	return out
}

// AppImage builds the example app (examples/app) into the image AppImageRef on the
// engine, once per test process, and returns the reference.
func AppImage(t testing.TB, cli *client.Client) string {
	t.Helper()
	appOnce.Do(func() {
		dir, err := os.MkdirTemp("", "ship-app-")
		if err != nil {
			appErr = err
			return
		}
		defer os.RemoveAll(dir)
		bin := AppBinary(t, dir)
		dockerfile, err := os.ReadFile(filepath.Join(RepoRoot(), "examples", "app", "Dockerfile"))
		if err != nil {
			appErr = err
			return
		}
		binary, err := os.ReadFile(bin)
		if err != nil {
			appErr = err
			return
		}
		ctx, err := TarFiles(map[string][]byte{"Dockerfile": dockerfile, "app": binary})
		if err != nil {
			appErr = err
			return
		}
		appErr = BuildImage(context.Background(), cli, ctx, AppImageRef)
	})
	if appErr != nil {
		t.Fatalf("build %s: %v", AppImageRef, appErr)
	}
	return AppImageRef
}

// BuildImage builds a tar build context on the engine with the classic builder.
func BuildImage(ctx context.Context, cli *client.Client, buildContext io.Reader, tag string) error {
	resp, err := cli.ImageBuild(ctx, buildContext, client.ImageBuildOptions{
		Tags: []string{tag}, Remove: true, ForceRemove: true, Version: build.BuilderV1,
	})
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var log bytes.Buffer
	if err := jsonmessage.DisplayJSONMessagesStream(resp.Body, &log, 0, false, nil); err != nil {
		return fmt.Errorf("%w\n%s", err, log.String())
	}
	return nil
}

// TarFiles makes a tar stream of the named files (mode 0755, so binaries stay executable).
func TarFiles(files map[string][]byte) (io.Reader, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for name, data := range files {
		hdr := &tar.Header{Name: name, Mode: 0o755, Size: int64(len(data)), ModTime: time.Unix(0, 0)}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, err
		}
		if _, err := tw.Write(data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return &buf, nil
}
