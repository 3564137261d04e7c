package main

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"testing"
)

// packet is an SFTP packet: length, type, then the body.
func packet(typ byte, body ...[]byte) []byte {
	data := []byte{typ}
	for _, b := range body {
		data = append(data, b...)
	}
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(data))), data...)
}

func sftpString(s string) []byte {
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(s))), s...)
}

func TestCount(t *testing.T) {
	id := []byte{0, 0, 0, 7}
	var in bytes.Buffer
	in.Write(packet(1, []byte{0, 0, 0, 3}))                                // init, version 3
	in.Write(packet(3, id, sftpString("/srv/app/f"), []byte{0, 0, 0, 26})) // open
	in.Write(packet(6, id, sftpString("h"), make([]byte, 8), sftpString("data")))
	in.Write(packet(4, id, sftpString("h"))) // close
	in.Write(packet(200, id, sftpString("posix-rename@openssh.com"), sftpString("a"), sftpString("b")))
	sent := bytes.Clone(in.Bytes())

	var out bytes.Buffer
	var s Session
	s.Types = map[string]int{}
	if err := count(bufio.NewReader(&in), &out, &s); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.Bytes(), sent) {
		t.Errorf("passed on %d bytes, want the %d sent, unchanged", out.Len(), len(sent))
	}
	if s.Requests != 5 || s.Bytes != int64(len(sent)) {
		t.Errorf("requests %d, bytes %d; want 5, %d", s.Requests, s.Bytes, len(sent))
	}
	want := map[string]int{"init": 1, "open": 1, "write": 1, "close": 1, "posix-rename@openssh.com": 1}
	for k, v := range want {
		if s.Types[k] != v {
			t.Errorf("types = %v, want %v", s.Types, want)
			break
		}
	}
}

func TestCountNotSFTP(t *testing.T) {
	in := bytes.NewReader([]byte("SSH-2.0-not sftp at all\r\n"))
	s := Session{Types: map[string]int{}}
	if err := count(bufio.NewReader(in), &bytes.Buffer{}, &s); err == nil {
		t.Fatal("no error for a stream that is not SFTP")
	}
}
