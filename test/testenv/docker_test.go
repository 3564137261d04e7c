package testenv

import (
	"context"
	"testing"
)

func TestAppImage(t *testing.T) {
	cli := Docker(t)
	ref := AppImage(t, cli)
	img, err := cli.ImageInspect(context.Background(), ref)
	if err != nil {
		t.Fatalf("inspect %s: %v", ref, err)
	}
	if img.Config == nil || len(img.Config.Entrypoint) == 0 || img.Config.Entrypoint[0] != "/app" {
		t.Fatalf("entrypoint = %v, want [/app]", img.Config)
	}
	if img.Config.Healthcheck == nil {
		t.Fatalf("image has no HEALTHCHECK")
	}
}
