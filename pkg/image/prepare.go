package image

import (
	"context"
	"slices"

	"github.com/moby/moby/client"
)

// Prepared is the first round of a push started ahead of it (PreparePush): the
// engine's API version and each registry's answer to its credentials, so that they
// come while the caller still reads the checkout and the compose file.
type Prepared struct {
	hosts  []string
	auth   *Keychain
	done   chan struct{}
	opened *openedRegistries
	err    error
}

// PreparePush starts asking what a push to hosts asks first: the engine's API version
// (the client's first request negotiates it), and whether each registry answers and
// takes its credentials from auth. Push, given the result in PushOptions.Prepared,
// waits for those answers instead of asking again, and reports them as it would its
// own. It returns nil (Push then asks itself) when a registry's credentials would
// come from a credential helper: a helper may ask the user something, and the push
// may yet be refused (an untested commit, uncommitted changes).
func (b *Builder) PreparePush(ctx context.Context, hosts []string, auth *Keychain) *Prepared {
	go b.api.Ping(ctx, client.PingOptions{NegotiateAPIVersion: true}) //nolint:errcheck // the push's own requests report a missing engine
	if slices.ContainsFunc(hosts, auth.needsHelper) {
		return nil
	}
	p := &Prepared{hosts: hosts, auth: auth, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		p.opened, p.err = openRegistries(ctx, hosts, b.engineRegistryConfig(ctx, hosts), auth)
	}()
	return p
}

// covers reports whether p checked exactly hosts, with auth.
func (p *Prepared) covers(hosts []string, auth *Keychain) bool {
	return p != nil && p.auth == auth && slices.Equal(p.hosts, hosts)
}

// wait returns p's answers once they are in.
func (p *Prepared) wait(ctx context.Context) (*openedRegistries, error) {
	select {
	case <-p.done:
		return p.opened, p.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
