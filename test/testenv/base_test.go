package testenv

import (
	"archive/tar"
	"context"
	"io"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"
)

func TestBaseImage(t *testing.T) {
	t.Parallel()
	cli := Docker(t)
	tests := []struct {
		name string
		opts []RegistryOption
	}{
		{"open registry", nil},
		{"registry with auth", []RegistryOption{WithAuth("ship", "base-pass")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			reg := Registry(t, tt.opts...)
			// A newer base under the same tag replaces the older one.
			for _, marker := range []string{"first base", "second base"} {
				ref := BaseImage(t, cli, reg, "ship-test/base", marker)
				if want := reg.Addr + "/ship-test/base:latest"; ref != want {
					t.Fatalf("ref = %q, want %q", ref, want)
				}
				if _, err := cli.ImageInspect(context.Background(), ref); !cerrdefs.IsNotFound(err) {
					t.Fatalf("local %s still there after BaseImage (err %v)", ref, err)
				}
				if !reg.HasManifest(t, "ship-test/base", "latest") {
					t.Fatalf("registry lacks %s", ref)
				}

				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				if err := PullImage(ctx, cli, ref, reg.RegistryAuth()); err != nil {
					t.Fatal(err)
				}
				img, err := cli.ImageInspect(ctx, ref)
				if err != nil {
					t.Fatal(err)
				}
				if got := img.Config.Labels[BaseMarkerLabel]; got != marker {
					t.Errorf("label %s = %q, want %q", BaseMarkerLabel, got, marker)
				}
				if got := markerIn(t, cli, ref); got != marker {
					t.Errorf("%s holds %q, want %q", BaseMarkerFile, got, marker)
				}
				if err := removeImage(cli, ref); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

// markerIn reads BaseMarkerFile from a created (never started: the image has no
// program) container of ref.
func markerIn(t *testing.T, cli *client.Client, ref string) string {
	t.Helper()
	ctx := context.Background()
	c, err := cli.ContainerCreate(ctx, client.ContainerCreateOptions{Config: &container.Config{Image: ref, Cmd: []string{"/none"}, Labels: Labels(t, "testenv")}})
	if err != nil {
		t.Fatalf("create a container of %s: %v", ref, err)
	}
	defer cli.ContainerRemove(ctx, c.ID, client.ContainerRemoveOptions{Force: true})
	res, err := cli.CopyFromContainer(ctx, c.ID, client.CopyFromContainerOptions{SourcePath: BaseMarkerFile})
	if err != nil {
		t.Fatalf("copy %s from %s: %v", BaseMarkerFile, ref, err)
	}
	defer res.Content.Close()
	tr := tar.NewReader(res.Content)
	if _, err := tr.Next(); err != nil {
		t.Fatalf("copy %s: %v", BaseMarkerFile, err)
	}
	data, err := io.ReadAll(tr)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}
