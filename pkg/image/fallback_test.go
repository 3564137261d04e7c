package image

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/types"
	"github.com/moby/moby/api/types/build"
	"github.com/moby/moby/client"
)

// refusingEngine is an engine without BuildKit: it answers Ping with apiVersion,
// refuses the build session with dialErr, and builds with the classic builder only.
type refusingEngine struct {
	client.APIClient // only the methods below are called
	apiVersion       string
	dialErr          error
	kitErr           error // ImageBuild's answer to a BuildKit request
	dials, builds    int
}

func (e *refusingEngine) Ping(context.Context, client.PingOptions) (client.PingResult, error) {
	return client.PingResult{APIVersion: e.apiVersion, OSType: "linux"}, nil
}

func (e *refusingEngine) DialHijack(context.Context, string, string, map[string][]string) (net.Conn, error) {
	e.dials++
	if e.dialErr != nil {
		return nil, e.dialErr
	}
	// A real socket: the session's HTTP/2 server takes its closing as the end it is.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	defer ln.Close()
	go func() {
		if c, err := ln.Accept(); err == nil {
			io.Copy(io.Discard, c)
			c.Close()
		}
	}()
	return net.Dial("tcp", ln.Addr().String())
}

func (e *refusingEngine) ImageBuild(_ context.Context, body io.Reader, o client.ImageBuildOptions) (client.ImageBuildResult, error) {
	if o.Version == build.BuilderBuildKit {
		return client.ImageBuildResult{}, e.kitErr
	}
	e.builds++
	if body != nil {
		io.Copy(io.Discard, body)
	}
	stream := `{"stream":"Step 1/1 : FROM scratch\n"}` + "\n" + `{"stream":"Successfully built 1234\n"}` + "\n"
	return client.ImageBuildResult{Body: io.NopCloser(strings.NewReader(stream))}, nil
}

func TestFallbackToClassic(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte("FROM scratch\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		engine *refusingEngine
		want   string
		dials  int
	}{
		{"old API", &refusingEngine{apiVersion: "1.38"},
			"builder: classic (BuildKit unavailable: the engine's API 1.38 is older than 1.39)", 0},
		{"no session endpoint", &refusingEngine{apiVersion: "1.41", dialErr: errors.New("page not found")},
			"builder: classic (BuildKit unavailable: the engine has no build session endpoint: page not found)", 1},
		{"build refused", &refusingEngine{apiVersion: "1.41", kitErr: errors.New("buildkit not supported by daemon")},
			"builder: classic (BuildKit unavailable: buildkit not supported by daemon)", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := New(tc.engine)
			for range 2 {
				var events []Event
				if err := b.Build(context.Background(), "web", types.BuildConfig{Context: dir}, "x:1", Options{Progress: collect(&events)}); err != nil {
					t.Fatal(err)
				}
				if got := lines(events, KindBuilder); len(got) != 1 || got[0] != tc.want {
					t.Errorf("builder: %q, want %q", got, tc.want)
				}
			}
			if tc.engine.dials != tc.dials || tc.engine.builds != 2 {
				t.Errorf("BuildKit was tried %d times (want %d: the engine's answer is remembered), classic builds %d", tc.engine.dials, tc.dials, tc.engine.builds)
			}
		})
	}

	// DOCKER_BUILDKIT=1: no fallback.
	e := &refusingEngine{apiVersion: "1.41", dialErr: errors.New("page not found")}
	err := New(e).Build(context.Background(), "web", types.BuildConfig{Context: dir}, "x:1", Options{Builder: BuilderBuildKit})
	if err == nil || !strings.Contains(err.Error(), "DOCKER_BUILDKIT=1") || e.builds != 0 {
		t.Errorf("BuildKit required and refused: %v (classic builds %d)", err, e.builds)
	}
}
