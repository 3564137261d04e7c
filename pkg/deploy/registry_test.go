package deploy

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/moby/moby/client"

	"github.com/shipdeploy/ship/pkg/image"
	"github.com/shipdeploy/ship/test/testenv"
)

// TestRegistryCheck asks a real registry with credentials.
func TestRegistryCheck(t *testing.T) {
	cli := testenv.Docker(t)
	reg := testenv.Registry(t, testenv.WithAuth("ship", "registry-pass-123"))
	ref := testenv.BaseImage(t, cli, reg, "deploytest/base", "m1")
	ctx := context.Background()

	kc := image.NewKeychain(nil)
	kc.Set(reg.Addr, image.Credentials{Username: "ship", Password: "registry-pass-123", From: "SHIP_REGISTRY_USER and SHIP_REGISTRY_PASSWORD"})
	rc := &image.Registries{Keychain: kc}
	if ok, err := rc.HasManifest(ctx, ref); !ok || err != nil {
		t.Errorf("HasManifest(%s) = %v, %v", ref, ok, err)
	}
	if ok, err := rc.HasManifest(ctx, reg.Addr+"/deploytest/base:nope"); ok || err != nil {
		t.Errorf("HasManifest of a missing tag = %v, %v", ok, err)
	}
	// The IDs the registry gives for the image include the engine's own image ID: the
	// plan's "unchanged: same image" compares them with what a container runs.
	// (pulled as a host would: BaseImage left no copy on the engine)
	if err := testenv.PullImage(ctx, cli, ref, reg.RegistryAuth()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = cli.ImageRemove(context.Background(), ref, client.ImageRemoveOptions{}) })
	if local, err := cli.ImageInspect(ctx, ref); err != nil {
		t.Errorf("inspect %s: %v", ref, err)
	} else if ids, err := rc.ImageIDs(ctx, ref); err != nil || !slices.Contains(ids, local.ID) {
		t.Errorf("ImageIDs(%s) = %v, %v; want it to hold the engine's ID %s", ref, ids, err, local.ID)
	}
	if ids, err := rc.ImageIDs(ctx, reg.Addr+"/deploytest/base:nope"); len(ids) != 0 || err != nil {
		t.Errorf("ImageIDs of a missing tag = %v, %v", ids, err)
	}
	anon := &image.Registries{Keychain: image.NewKeychain(nil)}
	if _, err := anon.HasManifest(ctx, ref); !errors.Is(err, image.ErrRegistryAuth) || !strings.Contains(err.Error(), "user name and password") {
		t.Errorf("without credentials: %v", err)
	}
	auth, err := image.PullAuth(kc)(ref)
	if err != nil || auth == "" {
		t.Errorf("PullAuth = %q, %v", auth, err)
	}
	if auth, _ := image.PullAuth(image.NewKeychain(nil))(ref); auth != "" {
		t.Errorf("PullAuth without credentials = %q", auth)
	}
}
