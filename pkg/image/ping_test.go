package image

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
)

// TestRegistriesPing: the preflight's check of a registry answers nil for good
// credentials, ErrRegistryAuth (naming the user, never the password) for refused
// ones, and ErrRegistryDown naming the address for a registry that is not there.
func TestRegistriesPing(t *testing.T) {
	reg, _ := realRegistry(t)
	ctx := context.Background()
	kc := NewKeychain(nil)
	kc.Set(reg.Addr, Credentials{Username: "ci", Password: "s3cret-pass"})
	if err := (&Registries{Keychain: kc}).Ping(ctx, reg.Addr); err != nil {
		t.Errorf("good credentials: %v", err)
	}
	bad := NewKeychain(nil)
	bad.Set(reg.Addr, Credentials{Username: "ci", Password: "wrong-pass"})
	err := (&Registries{Keychain: bad}).Ping(ctx, reg.Addr)
	if !errors.Is(err, ErrRegistryAuth) || strings.Contains(err.Error(), "wrong-pass") || !strings.Contains(err.Error(), `user "ci"`) {
		t.Errorf("refused credentials: %v", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	nowhere := l.Addr().String()
	l.Close()
	err = (&Registries{}).Ping(ctx, nowhere)
	if err == nil || !strings.Contains(err.Error(), nowhere) {
		t.Errorf("no registry at %s: %v", nowhere, err)
	}
}
