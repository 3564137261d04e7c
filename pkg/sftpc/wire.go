package sftpc

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"time"
)

// The SFTP version 3 wire format (draft-ietf-secsh-filexfer-02): packets are a
// uint32 length, a type byte, then the fields; requests and their replies carry a
// uint32 id right after the type.

// Packet types.
const (
	fxpInit          = 1
	fxpVersion       = 2
	fxpOpen          = 3
	fxpClose         = 4
	fxpRead          = 5
	fxpWrite         = 6
	fxpLstat         = 7
	fxpFsetstat      = 10
	fxpOpendir       = 11
	fxpReaddir       = 12
	fxpRemove        = 13
	fxpMkdir         = 14
	fxpRmdir         = 15
	fxpRealpath      = 16
	fxpStat          = 17
	fxpRename        = 18
	fxpReadlink      = 19
	fxpSymlink       = 20
	fxpStatus        = 101
	fxpHandle        = 102
	fxpData          = 103
	fxpName          = 104
	fxpAttrs         = 105
	fxpExtended      = 200
	fxpExtendedReply = 201
)

// OPEN's flags.
const (
	flagRead   = 0x01
	flagWrite  = 0x02
	flagAppend = 0x04
	flagCreat  = 0x08
	flagExcl   = 0x20
)

// Attribute flags.
const (
	attrSize     = 0x01
	attrUIDGID   = 0x02
	attrPerms    = 0x04
	attrTimes    = 0x08
	attrExtended = 0x80000000
)

// Bounds on what the server sends. OpenSSH's sftp-server never sends a packet
// longer than 256 KiB (its own client refuses more); the reads asked for here are
// far shorter.
const (
	maxPacket    = 256<<10 + 1024
	maxExtension = 64 // extension pairs in VERSION or in an attribute block
)

// errBadPacket is data from the server that is not SFTP as it should be.
var errBadPacket = errors.New("sftp: malformed packet from the server")

// readPacket reads one packet: its type and the rest (id and fields). A length
// outside (0, maxPacket] is an error, before anything is allocated for it.
func readPacket(r io.Reader, buf []byte) (byte, []byte, error) {
	var head [4]byte
	if _, err := io.ReadFull(r, head[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(head[:])
	if n == 0 || n > maxPacket {
		return 0, nil, fmt.Errorf("%w: a packet of %d bytes (at most %d)", errBadPacket, n, maxPacket)
	}
	if cap(buf) < int(n) {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if _, err := io.ReadFull(r, buf); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, err
	}
	return buf[0], buf[1:], nil
}

// enc builds a packet: begin reserves its length, end fills it in.
type enc []byte

func (e enc) u8(v byte) enc    { return append(e, v) }
func (e enc) u32(v uint32) enc { return binary.BigEndian.AppendUint32(e, v) }
func (e enc) u64(v uint64) enc { return binary.BigEndian.AppendUint64(e, v) }
func (e enc) str(s string) enc { return append(e.u32(uint32(len(s))), s...) }
func (e enc) bytes(b []byte) enc {
	return append(e.u32(uint32(len(b))), b...)
}

// begin starts a packet of type typ and id at the end of e; it returns where the
// packet starts, for end.
func (e enc) begin(typ byte, id uint32) (enc, int) {
	start := len(e)
	return e.u32(0).u8(typ).u32(id), start
}

// end fills in the length of the packet that starts at start.
func (e enc) end(start int) enc {
	binary.BigEndian.PutUint32(e[start:], uint32(len(e)-start-4))
	return e
}

// perms is an attribute block that sets the permission bits only.
func (e enc) perms(mode fs.FileMode) enc {
	return e.u32(attrPerms).u32(uint32(mode.Perm()))
}

// dec reads fields off a packet; the first field that does not fit sets ok false,
// and every read after it gives zero values.
type dec struct {
	b  []byte
	ok bool
}

func newDec(b []byte) *dec { return &dec{b: b, ok: true} }

func (d *dec) u32() uint32 {
	if !d.ok || len(d.b) < 4 {
		d.ok = false
		return 0
	}
	v := binary.BigEndian.Uint32(d.b)
	d.b = d.b[4:]
	return v
}

func (d *dec) u64() uint64 {
	if !d.ok || len(d.b) < 8 {
		d.ok = false
		return 0
	}
	v := binary.BigEndian.Uint64(d.b)
	d.b = d.b[8:]
	return v
}

// bytes is a string's bytes, within the packet (no copy).
func (d *dec) bytes() []byte {
	n := d.u32()
	if !d.ok || uint64(n) > uint64(len(d.b)) {
		d.ok = false
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

func (d *dec) str() string { return string(d.bytes()) }

// Attrs are a file's attributes as the server sent them; Flags says which are set.
type Attrs struct {
	Flags        uint32
	Size         uint64
	UID, GID     uint32
	Perm         uint32 // POSIX st_mode: type and permission bits
	Atime, Mtime uint32
}

// attrs reads an attribute block; extended attributes are skipped.
func (d *dec) attrs() Attrs {
	var a Attrs
	a.Flags = d.u32()
	if a.Flags&attrSize != 0 {
		a.Size = d.u64()
	}
	if a.Flags&attrUIDGID != 0 {
		a.UID, a.GID = d.u32(), d.u32()
	}
	if a.Flags&attrPerms != 0 {
		a.Perm = d.u32()
	}
	if a.Flags&attrTimes != 0 {
		a.Atime, a.Mtime = d.u32(), d.u32()
	}
	if a.Flags&attrExtended != 0 {
		n := d.u32()
		if n > maxExtension {
			d.ok = false
		}
		for i := uint32(0); i < n && d.ok; i++ {
			d.bytes()
			d.bytes()
		}
	}
	return a
}

// fileInfo is an fs.FileInfo from a name and its attributes.
type fileInfo struct {
	name string
	a    Attrs
}

func (fi *fileInfo) Name() string       { return fi.name }
func (fi *fileInfo) Size() int64        { return int64(fi.a.Size) }
func (fi *fileInfo) Mode() fs.FileMode  { return fileMode(fi.a.Perm) }
func (fi *fileInfo) ModTime() time.Time { return time.Unix(int64(fi.a.Mtime), 0) }
func (fi *fileInfo) IsDir() bool        { return fi.Mode().IsDir() }

// Sys is the Attrs as the server sent them.
func (fi *fileInfo) Sys() any { return &fi.a }

func newInfo(name string, a Attrs) fs.FileInfo {
	return &fileInfo{name: path.Base(name), a: a}
}

// fileMode turns a POSIX st_mode into an fs.FileMode.
func fileMode(m uint32) fs.FileMode {
	mode := fs.FileMode(m & 0o777)
	switch m & 0o170000 {
	case 0o040000:
		mode |= fs.ModeDir
	case 0o120000:
		mode |= fs.ModeSymlink
	case 0o010000:
		mode |= fs.ModeNamedPipe
	case 0o140000:
		mode |= fs.ModeSocket
	case 0o020000:
		mode |= fs.ModeDevice | fs.ModeCharDevice
	case 0o060000:
		mode |= fs.ModeDevice
	}
	if m&0o4000 != 0 {
		mode |= fs.ModeSetuid
	}
	if m&0o2000 != 0 {
		mode |= fs.ModeSetgid
	}
	if m&0o1000 != 0 {
		mode |= fs.ModeSticky
	}
	return mode
}
