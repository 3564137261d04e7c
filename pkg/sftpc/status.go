package sftpc

import (
	"fmt"
	"io"
	"io/fs"
)

// Status codes of SFTP version 3.
const (
	StatusOK               = 0
	StatusEOF              = 1
	StatusNoSuchFile       = 2
	StatusPermissionDenied = 3
	// StatusFailure is all OpenSSH's server says of most errors: a folder that is
	// there (EEXIST), a full disk (ENOSPC, EDQUOT), ...
	StatusFailure       = 4
	StatusBadMessage    = 5
	StatusNoConnection  = 6
	StatusLost          = 7
	StatusOpUnsupported = 8
)

var statusNames = [...]string{"OK", "EOF", "No such file", "Permission denied", "Failure",
	"Bad message", "No connection", "Connection lost", "Operation unsupported"}

// StatusError is a request the server refused: its status code and message.
// errors.Is matches StatusNoSuchFile to fs.ErrNotExist and StatusPermissionDenied
// to fs.ErrPermission.
type StatusError struct {
	Code uint32
	Msg  string
}

func (e *StatusError) Error() string {
	name := fmt.Sprintf("status %d", e.Code)
	if int(e.Code) < len(statusNames) {
		name = statusNames[e.Code]
	}
	if e.Msg == "" || e.Msg == name {
		return "sftp: " + name
	}
	return fmt.Sprintf("sftp: %s (%s)", e.Msg, name)
}

// Is matches fs.ErrNotExist and fs.ErrPermission.
func (e *StatusError) Is(target error) bool {
	switch target {
	case fs.ErrNotExist:
		return e.Code == StatusNoSuchFile
	case fs.ErrPermission:
		return e.Code == StatusPermissionDenied
	}
	return false
}

// reply is an answer to one request: its type and fields after the id.
type reply struct {
	typ  byte
	body []byte
}

// status is the error of a STATUS reply (nil for OK, io.EOF for EOF), or of an
// unexpected reply when want is another type.
func (r reply) status() error {
	if r.typ != fxpStatus {
		return fmt.Errorf("%w: reply of type %d where a status was due", errBadPacket, r.typ)
	}
	d := newDec(r.body)
	code := d.u32()
	msg := d.str() // OpenSSH sends a message; a bare code is fine too
	if !d.ok {
		msg = ""
	}
	switch code {
	case StatusOK:
		return nil
	case StatusEOF:
		return io.EOF
	}
	return &StatusError{Code: code, Msg: msg}
}

// expect checks that r has type typ, and returns its fields; a STATUS reply in its
// place is its error.
func (r reply) expect(typ byte) (*dec, error) {
	if r.typ == typ {
		return newDec(r.body), nil
	}
	if r.typ == fxpStatus {
		if err := r.status(); err != nil {
			return nil, err
		}
	}
	return nil, fmt.Errorf("%w: reply of type %d where %d was due", errBadPacket, r.typ, typ)
}

// handle reads a HANDLE reply.
func (r reply) handle() (string, error) {
	d, err := r.expect(fxpHandle)
	if err != nil {
		return "", err
	}
	h := d.bytes()
	if !d.ok || len(h) > 256 {
		return "", fmt.Errorf("%w: a bad handle", errBadPacket)
	}
	return string(h), nil
}

// data reads a DATA reply; EOF is io.EOF.
func (r reply) data() ([]byte, error) {
	d, err := r.expect(fxpData)
	if err != nil {
		return nil, err
	}
	b := d.bytes()
	if !d.ok {
		return nil, fmt.Errorf("%w: bad data", errBadPacket)
	}
	return b, nil
}

// attrs reads an ATTRS reply.
func (r reply) attrs() (Attrs, error) {
	d, err := r.expect(fxpAttrs)
	if err != nil {
		return Attrs{}, err
	}
	a := d.attrs()
	if !d.ok {
		return Attrs{}, fmt.Errorf("%w: bad attributes", errBadPacket)
	}
	return a, nil
}

// nameEntry is one entry of a NAME reply.
type nameEntry struct {
	name  string
	attrs Attrs
}

// minNameEntry is the fewest bytes a NAME entry takes: two empty strings and
// attribute flags.
const minNameEntry = 12

// names reads a NAME reply; EOF is io.EOF.
func (r reply) names() ([]nameEntry, error) {
	d, err := r.expect(fxpName)
	if err != nil {
		return nil, err
	}
	n := d.u32()
	if !d.ok || uint64(n) > uint64(len(d.b)/minNameEntry) {
		return nil, fmt.Errorf("%w: a listing of %d names in %d bytes", errBadPacket, n, len(d.b))
	}
	out := make([]nameEntry, 0, n)
	for range n {
		name := d.str()
		d.bytes() // the long name, as ls -l would show it
		a := d.attrs()
		if !d.ok {
			return nil, fmt.Errorf("%w: a bad listing", errBadPacket)
		}
		out = append(out, nameEntry{name, a})
	}
	return out, nil
}

// decodeReply parses a reply of any type, for the fuzz test: what the client's
// calls do with the answers they get.
func decodeReply(typ byte, body []byte) {
	r := reply{typ, body}
	_ = r.status()
	_, _ = r.handle()
	_, _ = r.data()
	_, _ = r.attrs()
	_, _ = r.names()
	_, _ = r.statvfsFree()
	_, _ = parseVersion(body)
}
