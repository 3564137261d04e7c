package sshx

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/moby/moby/client"
	"golang.org/x/crypto/ssh"
)

// DialUnix connects to the unix socket at path on the host
// (direct-streamlocal@openssh.com; sshd must allow StreamLocalForwarding). The
// connection is closed with the Client, if not before.
func (c *Client) DialUnix(ctx context.Context, path string) (net.Conn, error) {
	if err := c.checkOpen(); err != nil {
		return nil, err
	}
	conn, err := c.ssh.DialContext(ctx, "unix", path)
	var refused *ssh.OpenChannelError
	if errors.As(err, &refused) && refused.Reason == ssh.ConnectionFailed {
		// sshd could not connect to the socket: it is not there, or the SSH user may
		// not open it. sshd says no more than "open failed".
		return nil, c.opErr("connect to the socket "+path+" on the host", fmt.Errorf("%w: the socket is not there, or the SSH user may not open it: add the user to the docker group on the host (sudo usermod -aG docker USER, then log in again), or set docker_socket in ship.yaml to the engine's socket", err))
	}
	if err != nil {
		return nil, c.opErr("connect to the socket "+path+" on the host", err)
	}
	return conn, nil
}

// dockerIdle is how many connections to the engine stay open between requests.
const dockerIdle = 16

// Docker is a client of the Docker engine on the host, reached at its unix
// socket (DefaultDockerSocket when socket is empty) through this connection, with
// the API version negotiated. It pings the engine first, so that an engine that
// is not there is an error here, saying so. The Client closes it.
func (c *Client) Docker(ctx context.Context, socket string) (*client.Client, error) {
	if socket == "" {
		socket = DefaultDockerSocket
	}
	if err := c.checkOpen(); err != nil {
		return nil, err
	}
	cli, err := client.New(
		// Connections stay open between requests, as many as a run asks at once: each
		// is an SSH channel, and opening one is a round trip. The client's own keeps
		// two (net/http's default per host), so a step asking four things at once, as
		// Up's first does, opened two channels again after the preflight's.
		client.WithHTTPClient(&http.Client{Transport: &http.Transport{
			MaxIdleConns: dockerIdle, MaxIdleConnsPerHost: dockerIdle, IdleConnTimeout: 2 * time.Minute,
		}}),
		// The docker client wants a host; the address is the socket on the host.
		client.WithHost("unix://"+socket),
		// Plain HTTP over the socket: a transport of one's own looks like one for TLS
		// to the client once net/http has set it up for HTTP/2.
		client.WithScheme("http"),
		client.WithDialContext(func(ctx context.Context, _, _ string) (net.Conn, error) {
			return c.DialUnix(ctx, socket)
		}),
	)
	if err != nil {
		return nil, fmt.Errorf("ssh %s: docker client: %w", c.host, err)
	}
	if _, err := cli.Ping(ctx, client.PingOptions{NegotiateAPIVersion: true}); err != nil {
		cli.Close()
		return nil, fmt.Errorf("ssh %s: reach the Docker engine at %s on the host: %w", c.host, socket, err)
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		cli.Close()
		return nil, fmt.Errorf("ssh %s: %w", c.host, errClosed)
	}
	c.dockers = append(c.dockers, cli)
	return cli, nil
}
