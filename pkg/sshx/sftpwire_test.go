package sshx

import (
	"encoding/binary"
	"testing"
)

type discardCloser struct{ n int }

func (d *discardCloser) Write(p []byte) (int, error) { d.n += len(p); return len(p), nil }
func (d *discardCloser) Close() error                { return nil }

// packet is an SFTP request: its length, type, id and fields (strings), then payload
// bytes that belong to it but are written apart, as pkg/sftp writes a write's data.
func packet(typ byte, fields []string, payload int) (head, data []byte) {
	body := []byte{typ, 0, 0, 0, 7}
	for _, f := range fields {
		body = binary.BigEndian.AppendUint32(body, uint32(len(f)))
		body = append(body, f...)
	}
	head = binary.BigEndian.AppendUint32(nil, uint32(len(body)+payload))
	head = append(head, body...)
	data = make([]byte, payload)
	for i := range data {
		data[i] = 13 // a removal's type, to show the payload is not read as requests
	}
	return head, data
}

// The wire sees each path request that goes out, whatever pieces the stream comes
// in, and passes every byte on.
func TestWireNotesPathRequests(t *testing.T) {
	for _, piece := range []int{1, 3, 1 << 20} {
		out := &discardCloser{}
		w := newWire(out)
		var stream []byte
		add := func(head, data []byte) { stream = append(append(stream, head...), data...) }
		add(packet(6, []string{"handle"}, 40000)) // a write: its data skipped
		add(packet(fxpRemove, []string{"/srv/app/.tmp/x/holder.json"}, 0))
		add(packet(fxpExtended, []string{"posix-rename@openssh.com", "/srv/app/.lock", "/srv/app/.tmp/x"}, 0))
		add(packet(fxpRmdir, []string{"/srv/app/.tmp/x"}, 0))
		add(packet(fxpExtended, []string{"fsync@openssh.com", "handle"}, 0))
		add(packet(fxpRemove, []string{"/srv/app/.tmp/x/holder.json"}, 0))
		for off := 0; off < len(stream); off += piece {
			if _, err := w.Write(stream[off:min(off+piece, len(stream))]); err != nil {
				t.Fatal(err)
			}
		}
		if out.n != len(stream) {
			t.Errorf("pieces of %d: %d bytes passed on, want %d", piece, out.n, len(stream))
		}
		for _, c := range []struct {
			op   Op
			path string
			want int
		}{
			{OpRemove, "/srv/app/.tmp/x/holder.json", 2},
			{OpRename, "/srv/app/.lock", 1},
			{OpRmdir, "/srv/app/.tmp/x", 1},
			{OpRemove, "handle", 0},
		} {
			if n, _ := w.count(c.op, c.path); n != c.want {
				t.Errorf("pieces of %d: %d requests %v %s seen, want %d", piece, n, c.op, c.path, c.want)
			}
		}
	}
}
