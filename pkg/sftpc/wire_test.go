package sftpc

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

// A length the server sends is bounded before anything is allocated for it.
func TestReadPacketBounds(t *testing.T) {
	for _, in := range [][]byte{
		{0xff, 0xff, 0xff, 0xff, fxpData},
		{0, 0, 0, 0},
		enc(nil).u32(maxPacket + 1),
	} {
		if _, _, err := readPacket(bytes.NewReader(in), nil); !errors.Is(err, errBadPacket) {
			t.Errorf("%x: %v, want a bad packet", in, err)
		}
	}
	if _, _, err := readPacket(bytes.NewReader([]byte{0, 0, 0, 9, 1}), nil); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("a cut packet: %v", err)
	}
	// A listing that claims more names than its bytes can hold.
	body := enc(nil).u32(1 << 30)
	if _, err := (reply{fxpName, body}).names(); !errors.Is(err, errBadPacket) {
		t.Errorf("a listing of 2^30 names in 4 bytes: %v", err)
	}
}

// FuzzReplies feeds the reader and every reply decoder arbitrary bytes: an error,
// never a panic or a huge allocation.
func FuzzReplies(f *testing.F) {
	pkt := func(typ byte, fields func(enc) enc) []byte {
		b, start := enc(nil).begin(typ, 7)
		return []byte(fields(b).end(start))
	}
	f.Add(pkt(fxpStatus, func(e enc) enc { return e.u32(StatusNoSuchFile).str("No such file").str("") }))
	f.Add(pkt(fxpHandle, func(e enc) enc { return e.str("\x00\x00\x00\x01") }))
	f.Add(pkt(fxpData, func(e enc) enc { return e.str("hello") }))
	f.Add(pkt(fxpAttrs, func(e enc) enc {
		return e.u32(attrSize | attrUIDGID | attrPerms | attrTimes | attrExtended).u64(5).u32(0).u32(0).u32(0o100644).u32(1).u32(2).u32(1).str("a").str("b")
	}))
	f.Add(pkt(fxpName, func(e enc) enc {
		return e.u32(2).str(".").str("drwx").u32(0).str("a").str("-rw").u32(attrPerms).u32(0o644)
	}))
	f.Add([]byte(append(enc(nil).u32(5).u8(fxpVersion).u32(3), enc(nil).str("posix-rename@openssh.com").str("1")...)))
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bytes.NewReader(in)
		for {
			typ, body, err := readPacket(r, nil)
			if err != nil {
				return
			}
			if len(body) >= 4 {
				decodeReply(typ, body[4:])
			}
			decodeReply(typ, body)
		}
	})
}
