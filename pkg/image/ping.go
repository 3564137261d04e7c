package image

import "context"

// Ping checks that the registry host (host[:port]) answers as a Docker registry and
// takes the keychain's credentials for it: a preflight before anything is built.
func (r *Registries) Ping(ctx context.Context, host string) error {
	kc := r.Keychain
	if kc == nil {
		kc = NewKeychain(nil)
	}
	creds, err := kc.Credentials(ctx, host)
	if err != nil {
		return err
	}
	c := newRegistryClient(host, creds, func() bool { return loopback(host) })
	return kc.RedactError(c.ping(ctx))
}
