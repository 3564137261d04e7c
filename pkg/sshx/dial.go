package sshx

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ssh"
)

// dialHop connects to hop, directly or through via, checks its host key and
// authenticates.
func dialHop(ctx context.Context, via *ssh.Client, hop target, kt *keyText, o Options) (*ssh.Client, error) {
	hk, err := newHostKeyCheck(hop, o)
	if err != nil {
		return nil, err
	}
	a := newAuth(hop, kt, o)
	defer a.close()
	cfg := &ssh.ClientConfig{
		User:              hop.user,
		Auth:              []ssh.AuthMethod{ssh.PublicKeysCallback(a.signers)},
		HostKeyCallback:   hk.callback,
		HostKeyAlgorithms: hk.algorithms(),
		ClientVersion:     "SSH-2.0-ship",
	}

	start := time.Now()
	o.Logger.Debug("ssh: connecting", "target", hop.String(), "via", via != nil)
	dctx, cancel := context.WithTimeout(ctx, o.DialTimeout)
	var conn net.Conn
	if via != nil {
		conn, err = via.DialContext(dctx, "tcp", hop.addr())
	} else {
		var d net.Dialer
		conn, err = d.DialContext(dctx, "tcp", hop.addr())
	}
	timedOutDial := dctx.Err() != nil
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("connect to %s: %w", hop.addr(), ctx.Err())
		}
		if timedOutDial {
			return nil, fmt.Errorf("connect to %s: no answer within %s", hop.addr(), o.DialTimeout)
		}
		return nil, fmt.Errorf("connect to %s: %w", hop.addr(), err)
	}

	// x/crypto's handshake takes no context, and a connection through a jump host
	// has no deadlines: closing the connection is what stops it.
	var timedOut atomic.Bool
	timer := time.AfterFunc(max(o.DialTimeout-time.Since(start), time.Millisecond), func() {
		timedOut.Store(true)
		conn.Close()
	})
	a.pause = func() { timer.Stop() }
	a.resume = func() { timer.Reset(o.DialTimeout) }
	stop := context.AfterFunc(ctx, func() { conn.Close() })

	sc, chans, reqs, err := ssh.NewClientConn(conn, hop.addr(), cfg)
	timer.Stop()
	cancelled := !stop()
	if err == nil && cancelled {
		sc.Close()
		err = ctx.Err()
	}
	if err != nil {
		conn.Close()
		switch {
		case hk.refusal != nil:
			return nil, hk.refusal
		case a.failure != nil:
			return nil, a.failure
		case cancelled && ctx.Err() != nil:
			return nil, fmt.Errorf("connect to %s: %w", hop, ctx.Err())
		case timedOut.Load():
			return nil, fmt.Errorf("connect to %s: the SSH handshake did not finish within %s", hop, o.DialTimeout)
		case !hk.passed && len(hk.known) > 0 && strings.Contains(err.Error(), "no common algorithm for host key"):
			return nil, &HostKeyError{Host: hop.written, Name: hk.name, Known: hk.known}
		case hk.passed && a.called && isAuthFailure(err):
			return nil, a.authError(err)
		case hk.passed && isAuthFailure(err):
			return nil, fmt.Errorf("%w as %s: the host accepts no public key authentication (%v)", ErrAuth, hop, err)
		}
		return nil, fmt.Errorf("connect to %s: %w", hop, err)
	}
	return ssh.NewClient(sc, chans, reqs), nil
}
