package testenv

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"strconv"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/client"
	"github.com/moby/moby/client/pkg/jsonmessage"
)

// BaseMarkerFile is the file a BaseImage holds; its content is the marker.
const BaseMarkerFile = "/etc/ship-base"

// BaseMarkerLabel is the image label that carries a BaseImage's marker too. Images
// built FROM the base inherit it, so a test can tell which base a build used.
const BaseMarkerLabel = "dev.ship.test.base"

// BaseImage makes a tiny base image without pulling anything (one file, BaseMarkerFile,
// holding marker, and the label BaseMarkerLabel), pushes it to reg as
// <reg.Addr>/<name>:latest and removes the engine's copy, so that a build FROM it has
// to pull it. It returns the reference. Called again with another marker, it pushes a
// newer base under the same tag: that is how a build's --pull is seen to work.
func BaseImage(t testing.TB, cli *client.Client, reg *RegistryServer, name string, marker string) string {
	t.Helper()
	ref := reg.Addr + "/" + name + ":latest"
	ctx, cancel := context.WithTimeout(context.Background(), Scale(2*time.Minute))
	defer cancel()

	layer, err := baseLayer(marker)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := cli.ImageImport(ctx, client.ImageImportSource{Source: layer, SourceName: "-"}, ref, client.ImageImportOptions{
		Message: "ship test base image",
		Changes: []string{"LABEL " + BaseMarkerLabel + "=" + strconv.Quote(marker)},
	})
	if err != nil {
		t.Fatalf("import %s: %v", ref, err)
	}
	err = jsonmessage.DisplayJSONMessagesStream(rc, io.Discard, 0, false, nil)
	rc.Close()
	if err != nil {
		t.Fatalf("import %s: %v", ref, err)
	}
	// Whatever happens below, no copy stays behind on the engine.
	t.Cleanup(func() { removeImage(cli, ref) })

	if err := PushImage(ctx, cli, ref, reg.RegistryAuth()); err != nil {
		t.Fatal(err)
	}
	if err := removeImage(cli, ref); err != nil {
		t.Fatalf("remove the local %s after pushing it: %v", ref, err)
	}
	return ref
}

// baseLayer is a tar stream with etc/ship-base holding marker.
func baseLayer(marker string) (io.Reader, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mtime := time.Now()
	if err := tw.WriteHeader(&tar.Header{Name: "etc/", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: mtime}); err != nil {
		return nil, err
	}
	data := []byte(marker)
	hdr := &tar.Header{Name: "etc/ship-base", Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(data)), ModTime: mtime}
	if err := tw.WriteHeader(hdr); err != nil {
		return nil, err
	}
	if _, err := tw.Write(data); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("base layer: %w", err)
	}
	return &buf, nil
}

// removeImage removes ref from the engine; an image that is not there is no error.
func removeImage(cli *client.Client, ref string) error {
	ctx, cancel := context.WithTimeout(context.Background(), Scale(30*time.Second))
	defer cancel()
	_, err := cli.ImageRemove(ctx, ref, client.ImageRemoveOptions{Force: true, PruneChildren: true})
	if err != nil && !cerrdefs.IsNotFound(err) {
		return err
	}
	return nil
}
