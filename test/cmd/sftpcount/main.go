// Command sftpcount is an SFTP subsystem that counts what its client asks: it runs
// the real sftp-server as its child, passes the bytes through both ways, reads the
// client's packets as they go by, and when the session ends appends one JSON line to
// -out: the number of requests, by type. The deploy benchmark puts it in its sshds'
// config to count SFTP round trips per host:
//
//	Subsystem sftp /path/to/sftpcount -out /path/to/sftp.jsonl /usr/lib/openssh/sftp-server
//
// Every SFTP request is answered by exactly one reply, so the requests are the round
// trips (some of which a client may have in flight at once).
package main

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"time"
)

// Session is the line appended to -out for one SFTP session.
type Session struct {
	Start    time.Time      `json:"start"`
	End      time.Time      `json:"end"`
	Requests int            `json:"requests"`
	Bytes    int64          `json:"bytes"` // from the client, framing included
	Types    map[string]int `json:"types"`
}

// names of the SFTP (draft-ietf-secsh-filexfer-02, version 3) packet types a client sends.
var names = map[byte]string{
	1: "init", 3: "open", 4: "close", 5: "read", 6: "write", 7: "lstat", 8: "fstat",
	9: "setstat", 10: "fsetstat", 11: "opendir", 12: "readdir", 13: "remove", 14: "mkdir",
	15: "rmdir", 16: "realpath", 17: "stat", 18: "rename", 19: "readlink", 20: "symlink",
	200: "extended",
}

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "sftpcount:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("sftpcount", flag.ContinueOnError)
	out := fs.String("out", "", "file to append the session's counts to (required)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *out == "" || fs.NArg() == 0 {
		return errors.New("usage: sftpcount -out FILE SFTP-SERVER [ARG...]")
	}
	cmd := exec.Command(fs.Arg(0), fs.Args()[1:]...)
	cmd.Stdout = os.Stdout
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	s := Session{Start: time.Now().UTC(), Types: map[string]int{}}
	if err := cmd.Start(); err != nil {
		return err
	}
	cerr := count(bufio.NewReader(os.Stdin), in, &s)
	in.Close()
	werr := cmd.Wait()
	s.End = time.Now().UTC()
	line, err := json.Marshal(s)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(*out, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	// One write of one line: O_APPEND keeps concurrent sessions' lines whole.
	_, err = f.Write(append(line, '\n'))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return errors.Join(err, cerr, werr)
}

// count copies the client's packets to the server, counting them by type, until
// the client closes its side.
func count(r *bufio.Reader, w io.Writer, s *Session) error {
	var head [4]byte
	for {
		if _, err := io.ReadFull(r, head[:]); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		n := binary.BigEndian.Uint32(head[:])
		if n == 0 || n > 1<<20 {
			return fmt.Errorf("packet of %d bytes: not SFTP", n)
		}
		body := make([]byte, n)
		if _, err := io.ReadFull(r, body); err != nil {
			return err
		}
		name, ok := names[body[0]]
		if !ok {
			name = fmt.Sprintf("type-%d", body[0])
		}
		if body[0] == 200 && len(body) >= 9 {
			// id (4 bytes), then the request's name as an SFTP string.
			if l := binary.BigEndian.Uint32(body[5:9]); int(l) <= len(body)-9 {
				name = string(body[9 : 9+l])
			}
		}
		s.Requests++
		s.Bytes += int64(n) + 4
		s.Types[name]++
		if _, err := w.Write(head[:]); err != nil {
			return err
		}
		if _, err := w.Write(body); err != nil {
			return err
		}
	}
}
