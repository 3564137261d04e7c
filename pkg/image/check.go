package image

import (
	"context"
	"fmt"
	"net"

	"github.com/distribution/reference"
	"github.com/moby/moby/api/pkg/authconfig"
	"github.com/moby/moby/api/types/registry"
)

// Registries answers whether images are in their registries, with a keychain's
// credentials: a deploy's preflight check. A registry on a loopback address may answer
// over plain HTTP, as the engine allows.
type Registries struct {
	Keychain *Keychain
}

// HasManifest reports whether ref's registry holds its manifest.
func (r *Registries) HasManifest(ctx context.Context, ref string) (bool, error) {
	c, repo, tag, kc, err := r.client(ctx, ref)
	if err != nil {
		return false, err
	}
	_, ok, err := c.manifest(ctx, repo, tag)
	return ok, kc.RedactError(err)
}

// client is a registry client for ref's registry with the keychain's credentials,
// and ref's repository and tag.
func (r *Registries) client(ctx context.Context, ref string) (c *registryClient, repo, tag string, kc *Keychain, err error) {
	named, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return nil, "", "", nil, fmt.Errorf("image reference %q: %w", ref, err)
	}
	tagged, ok := named.(reference.Tagged)
	if !ok {
		return nil, "", "", nil, fmt.Errorf("image reference %q has no tag", ref)
	}
	host := reference.Domain(named)
	kc = r.Keychain
	if kc == nil {
		kc = NewKeychain(nil)
	}
	creds, err := kc.Credentials(ctx, host)
	if err != nil {
		return nil, "", "", nil, err
	}
	return newRegistryClient(host, creds, func() bool { return loopback(host) }), reference.Path(named), tagged.Tag(), kc, nil
}

// PullAuth gives the engine's X-Registry-Auth value for pulling ref, from kc: what
// engine.Engine.RegistryAuth wants. No credentials for its registry: "".
func PullAuth(kc *Keychain) func(ref string) (string, error) {
	return func(ref string) (string, error) {
		host, err := RegistryHost(ref)
		if err != nil {
			return "", err
		}
		creds, err := kc.Credentials(context.Background(), host)
		if err != nil || creds.Empty() {
			return "", err
		}
		return authconfig.Encode(registry.AuthConfig{
			Username: creds.Username, Password: creds.Password, IdentityToken: creds.IdentityToken, ServerAddress: host,
		})
	}
}

func loopback(host string) bool {
	h, _, err := net.SplitHostPort(host)
	if err != nil {
		h = host
	}
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}
