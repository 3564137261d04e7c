package certs

import (
	"crypto/x509"
	"math/big"
	"testing"
)

// The identifier of RFC 9773's example certificate (section 4.1), whose serial number's
// high bit needs a leading zero byte.
func TestCertIDOfTheRFCExample(t *testing.T) {
	leaf := &x509.Certificate{
		AuthorityKeyId: []byte{0x69, 0x88, 0x5B, 0x6B, 0x87, 0x46, 0x40, 0x41, 0xE1, 0xB3, 0x7B, 0x84, 0x7B, 0xA0, 0xAE, 0x2C, 0xDE, 0x01, 0xC8, 0xD4},
		SerialNumber:   big.NewInt(0x87654321),
	}
	if id, ok := certID(leaf); !ok || id != "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE" {
		t.Errorf("certID = %q, %v; want aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE", id, ok)
	}
	if _, ok := certID(&x509.Certificate{SerialNumber: big.NewInt(1)}); ok {
		t.Error("a certificate without an authority key identifier got an identifier")
	}
}
