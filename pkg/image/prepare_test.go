package image

import (
	"context"
	"errors"
	"testing"
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

// TestPreparedCovers: Push takes the prepared answers only for the very registries
// and keychain they were asked with; otherwise it asks itself.
func TestPreparedCovers(t *testing.T) {
	kc := NewKeychain(nil)
	done := make(chan struct{})
	close(done)
	opened := &openedRegistries{hosts: []string{"a:5000"}, clients: map[string]*registryClient{"a:5000": {host: "a:5000"}}, msgs: []string{"answers"}}
	p := &Prepared{hosts: []string{"a:5000"}, auth: kc, done: done, opened: opened}
	if !p.covers([]string{"a:5000"}, kc) {
		t.Error("the same registry and keychain: the prepared answers do")
	}
	if p.covers([]string{"a:5000", "b:5000"}, kc) || p.covers([]string{"b:5000"}, kc) || p.covers([]string{"a:5000"}, NewKeychain(nil)) {
		t.Error("other registries or another keychain: the push must ask itself")
	}
	var none *Prepared
	if none.covers([]string{"a:5000"}, kc) {
		t.Error("nothing prepared covers nothing")
	}
	if got, err := p.wait(context.Background()); err != nil || got != opened {
		t.Errorf("wait = %v, %v; want the prepared answers", got, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	pending := &Prepared{hosts: []string{"a:5000"}, auth: kc, done: make(chan struct{})}
	if _, err := pending.wait(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("wait on a cancelled push: %v", err)
	}
}
