package agentapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
)

// Errors of the Client, checked with errors.Is. A failed deploy or rollback is an
// *Error that matches ErrDeployFailed (the previous release was kept or put back:
// shipctl exits 4) or ErrRestoreFailed (it could not be put back: exit 5).
var (
	ErrDeployFailed  = errors.New("deploy failed, the previous release is kept")
	ErrRestoreFailed = errors.New("deploy failed and the previous release could not be restored")
	ErrLocked        = errors.New("another deploy of the app is running")
	ErrNotFound      = errors.New("no such release")
	ErrBadRequest    = errors.New("shipd refused the request")
	// ErrNoResult: the stream ended before its result (the connection was lost, or
	// shipd stopped). The deploy's outcome is unknown to the client; shipd finishes it
	// or, if it was killed, puts a consistent state back when it starts.
	ErrNoResult = errors.New("shipd's answer ended before the deploy's result")
)

// Error is an error answer of shipd, or a deploy that did not succeed.
type Error struct {
	// Code is an ErrorBody code, or the Result's outcome (ResultFailed,
	// ResultRestoreFailed).
	Code string
	Msg  string
	// Status is the HTTP status (200 for a deploy that ran and failed).
	Status int
	// Result is the failed deploy's result, if it ran.
	Result *Result
}

func (e *Error) Error() string { return "shipd: " + e.Msg }

// Is matches the package's sentinel errors by Code.
func (e *Error) Is(target error) bool {
	switch target {
	case ErrDeployFailed:
		return e.Code == string(ResultFailed)
	case ErrRestoreFailed:
		return e.Code == string(ResultRestoreFailed)
	case ErrLocked:
		return e.Code == CodeLocked
	case ErrNotFound:
		return e.Code == CodeNotFound
	case ErrBadRequest:
		return e.Code == CodeBadRequest
	}
	return false
}

// Dialer opens a connection to shipd's socket.
type Dialer func(ctx context.Context) (net.Conn, error)

// UnixDialer dials the unix socket at path on this machine.
func UnixDialer(path string) Dialer {
	return func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	}
}

// Client speaks shipd's API over connections from a Dialer: shipctl passes one that
// goes through its SSH connection (sshx.Client.DialUnix on DefaultSocket).
type Client struct {
	hc *http.Client
	tr *http.Transport
}

// NewClient returns a Client that opens its connections with dial.
func NewClient(dial Dialer) *Client {
	tr := &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return dial(ctx)
		},
		MaxIdleConns:       2,
		DisableCompression: true,
	}
	// No overall timeout: a deploy runs as long as its health checks and drains; the
	// caller's context bounds it.
	return &Client{hc: &http.Client{Transport: tr}, tr: tr}
}

// Close closes the Client's idle connections.
func (c *Client) Close() { c.tr.CloseIdleConnections() }

// Status returns shipd's state.
func (c *Client) Status(ctx context.Context) (*Status, error) {
	resp, err := c.do(ctx, http.MethodGet, PathStatus, nil)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var s Status
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		return nil, fmt.Errorf("shipd: read the status: %w", err)
	}
	return &s, nil
}

// Deploy asks shipd to deploy a release and calls fn (when set) with each event as it
// comes. It returns the result; the error is nil when the release was deployed, an
// *Error matching ErrDeployFailed or ErrRestoreFailed when it failed (with the Result
// in it too), ErrLocked, ErrNotFound or ErrBadRequest when shipd refused to start, or
// ErrNoResult when the answer was cut.
func (c *Client) Deploy(ctx context.Context, req DeployRequest, fn func(Event)) (*Result, error) {
	return c.stream(ctx, PathDeploy, req, fn)
}

// Rollback asks shipd to make an earlier release current again; as Deploy.
func (c *Client) Rollback(ctx context.Context, req RollbackRequest, fn func(Event)) (*Result, error) {
	return c.stream(ctx, PathRollback, req, fn)
}

func (c *Client) stream(ctx context.Context, path string, body any, fn func(Event)) (*Result, error) {
	resp, err := c.do(ctx, http.MethodPost, path, body)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	dec := json.NewDecoder(resp.Body)
	for {
		var m Message
		if err := dec.Decode(&m); err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return nil, fmt.Errorf("%w: %v", ErrNoResult, err)
		}
		if m.Event != nil && fn != nil {
			fn(*m.Event)
		}
		if r := m.Result; r != nil {
			if r.Result == ResultDeployed {
				return r, nil
			}
			msg := r.Error
			if msg == "" {
				msg = string(r.Result)
			}
			return r, &Error{Code: string(r.Result), Msg: msg, Status: resp.StatusCode, Result: r}
		}
	}
}

// do sends a request and turns an error answer into an *Error.
func (c *Client) do(ctx context.Context, method, path string, body any) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		data, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(data)
	}
	// The host part is never dialled (the Dialer decides); it names the peer in errors.
	req, err := http.NewRequestWithContext(ctx, method, "http://shipd"+path, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json, application/x-ndjson")
	resp, err := c.hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("shipd: %s %s: %w", method, path, unwrapURL(err))
	}
	if resp.StatusCode == http.StatusOK {
		return resp, nil
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var eb ErrorBody
	if json.Unmarshal(data, &eb) != nil || eb.Error == "" {
		eb = ErrorBody{Code: CodeInternal, Error: fmt.Sprintf("%s %s: %s: %s", method, path, resp.Status, strings.TrimSpace(string(data)))}
	}
	return nil, &Error{Code: eb.Code, Msg: eb.Error, Status: resp.StatusCode}
}

// unwrapURL drops net/http's "Post \"http://shipd/v1/deploy\":" prefix, which names a
// URL that was never dialled.
func unwrapURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) && ue.Err != nil {
		return ue.Err
	}
	return err
}
