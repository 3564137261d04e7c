package image

import (
	"context"
	"errors"
	"net"
	"testing"

	"github.com/moby/moby/api/types/registry"
)

// TestNeedsHelper: the registry check is started ahead of a push only for credentials
// no credential helper has to be asked for.
func TestNeedsHelper(t *testing.T) {
	store := NewKeychain(&DockerConfig{CredsStore: "desktop"})
	if !store.needsHelper("registry.example.com:5000") {
		t.Error("credsStore: the helper is asked for every registry")
	}
	store.Set("registry.example.com:5000", Credentials{Username: "ci", Password: "x"})
	if store.needsHelper("registry.example.com:5000") {
		t.Error("credentials set for the host (SHIP_REGISTRY_USER) need no helper")
	}
	helpers := NewKeychain(&DockerConfig{CredHelpers: map[string]string{"gcr.example.com": "gcr"}})
	if !helpers.needsHelper("gcr.example.com") || helpers.needsHelper("other.example.com") {
		t.Error("credHelpers: only the named registry's credentials come from its helper")
	}
	var none *Keychain
	if none.needsHelper("registry.example.com") || NewKeychain(nil).needsHelper("registry.example.com") {
		t.Error("without config.json no helper is asked")
	}
}

// TestPreparedRegistries: Push takes the prepared answers only for the very registries
// and keychain they were asked with; otherwise it asks itself.
func TestPreparedRegistries(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	nowhere := l.Addr().String()
	l.Close()
	kc := NewKeychain(nil)
	done := make(chan struct{})
	close(done)
	opened := &openedRegistries{hosts: []string{nowhere}, clients: map[string]*registryClient{nowhere: {host: nowhere}}, msgs: []string{"answers"}}
	p := &Prepared{hosts: []string{nowhere}, auth: kc, done: done, opened: opened}
	targets := []pushTarget{{ref: nowhere + "/a:1", host: nowhere}, {ref: nowhere + "/b:1", host: nowhere}}
	noConfig := func() *registry.ServiceConfig { return nil }

	got, err := p.registries(context.Background(), targets, noConfig, kc)
	if err != nil || got != opened {
		t.Fatalf("the prepared registries were asked again: %v", err)
	}
	// Another keychain, or no preparation at all: the registry is asked (and is not there).
	if _, err := p.registries(context.Background(), targets, noConfig, NewKeychain(nil)); !errors.Is(err, ErrRegistryDown) {
		t.Errorf("another keychain: got %v, want the registry asked and down", err)
	}
	var none *Prepared
	if _, err := none.registries(context.Background(), targets, noConfig, kc); !errors.Is(err, ErrRegistryDown) {
		t.Errorf("nothing prepared: got %v, want the registry asked and down", err)
	}
}
