package sshx

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/crypto/ssh"
)

// Run runs cmd on the host with the login user's shell and returns what it wrote.
// A command that exits non-zero returns an error wrapping *ssh.ExitError. When
// ctx ends first, Run returns ctx's error at once, without output: the session
// is closed and the command sent SIGKILL where sshd passes signals on, but a
// command that ignores its closed session may run on. Build cmd with ShellQuote.
func (c *Client) Run(ctx context.Context, cmd string) (stdout, stderr []byte, err error) {
	if err := ctx.Err(); err != nil {
		return nil, nil, fmt.Errorf("ssh %s: run %q: %w", c.host, cmd, err)
	}
	if err := c.checkOpen(); err != nil {
		return nil, nil, err
	}
	sess, err := c.ssh.NewSession()
	if err != nil {
		return nil, nil, c.opErr(fmt.Sprintf("run %q: open a session", cmd), err)
	}
	var out, errOut bytes.Buffer
	sess.Stdout, sess.Stderr = &out, &errOut
	if err := sess.Start(cmd); err != nil {
		sess.Close()
		return nil, nil, c.opErr(fmt.Sprintf("run %q", cmd), err)
	}
	// Waiting is done by a goroutine of the Client's, which Close waits for: sshd
	// keeps a session open while its command runs, even once we have left it.
	waited := make(chan error, 1)
	if !c.spawn(func() {
		defer sess.Close()
		waited <- sess.Wait()
	}) {
		sess.Close()
		return nil, nil, fmt.Errorf("ssh %s: run %q: %w", c.host, cmd, errClosed)
	}
	select {
	case err = <-waited:
	case <-ctx.Done():
		_ = sess.Signal(ssh.SIGKILL)
		sess.Close()
		return nil, nil, fmt.Errorf("ssh %s: run %q: %w", c.host, cmd, ctx.Err())
	}
	var exit *ssh.ExitError
	if err != nil && !errors.As(err, &exit) {
		return out.Bytes(), errOut.Bytes(), c.opErr(fmt.Sprintf("run %q", cmd), err)
	}
	if err != nil {
		return out.Bytes(), errOut.Bytes(), fmt.Errorf("ssh %s: run %q: %w", c.host, cmd, err)
	}
	return out.Bytes(), errOut.Bytes(), nil
}

// ShellQuote quotes args for a POSIX shell and joins them with spaces: each comes
// through to the command as one argument, as written.
func ShellQuote(args ...string) string {
	quoted := make([]string, len(args))
	for i, a := range args {
		quoted[i] = quoteArg(a)
	}
	return strings.Join(quoted, " ")
}

func quoteArg(s string) string {
	if s == "" {
		return "''"
	}
	safe := true
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("@%+=:,./_-", r)) {
			safe = false
			break
		}
	}
	if safe {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
