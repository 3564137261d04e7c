package image

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/compose-spec/compose-go/v2/types"
	cerrdefs "github.com/containerd/errdefs"
	controlapi "github.com/moby/buildkit/api/services/control"
	"github.com/moby/buildkit/session"
	"github.com/moby/buildkit/session/auth"
	"github.com/moby/buildkit/session/filesync"
	"github.com/moby/moby/api/types/build"
	"github.com/moby/moby/client"
	"github.com/tonistiigi/fsutil"
	fstypes "github.com/tonistiigi/fsutil/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// buildKit builds with the engine's BuildKit: a session over the engine's API (POST
// /session, upgraded to h2c) serves the context and the Dockerfile from this machine
// and registry credentials when the builder asks; the build request names the session.
// A *refusedError means the engine would not do it, and nothing was built.
func (b *Builder) buildKit(ctx context.Context, service string, src source, cfg types.BuildConfig, tag string, o Options) error {
	s, stop, err := b.startSession(ctx, service, src, o)
	if err != nil {
		return err
	}
	defer stop()

	buildID := randomID()
	opts := client.ImageBuildOptions{
		Version:       build.BuilderBuildKit,
		SessionID:     s.ID(),
		BuildID:       buildID,
		RemoteContext: "client-session",
		Dockerfile:    path.Base(src.rel),
		Tags:          []string{tag},
		BuildArgs:     cfg.Args,
		Target:        cfg.Target,
		Labels:        cfg.Labels,
		CacheFrom:     cfg.CacheFrom,
		NoCache:       cfg.NoCache,
		PullParent:    o.Pull || cfg.Pull,
		ExtraHosts:    cfg.ExtraHosts.AsList(":"),
		NetworkMode:   cfg.Network,
	}
	resp, err := b.api.ImageBuild(ctx, nil, opts)
	if err != nil {
		if ctx.Err() == nil && refusesBuildKit(err) {
			return &refusedError{reason: err.Error()}
		}
		return fmt.Errorf("build %s: %w", service, err)
	}
	defer resp.Body.Close()
	o.emit(Event{Service: service, Kind: KindBuilder, Msg: "builder: buildkit"})
	defer b.cancelOnDone(ctx, buildID)()

	err = readBuildKit(resp.Body, service, o)
	if err != nil && ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// cancelOnDone cancels the build by its ID if ctx ends before the returned function
// is called: closing the stream does not always stop the builder.
func (b *Builder) cancelOnDone(ctx context.Context, buildID string) func() {
	finished, cancelled := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(cancelled)
		select {
		case <-ctx.Done():
			cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, _ = b.api.BuildCancel(cctx, buildID, client.BuildCancelOptions{})
		case <-finished:
		}
	}()
	return func() {
		close(finished)
		<-cancelled
	}
}

// startSession opens the build session that serves src's context and Dockerfile and
// the keychain's credentials, and waits until the engine has taken it; stop closes it.
// A *refusedError means the engine has no session endpoint.
func (b *Builder) startSession(ctx context.Context, service string, src source, o Options) (s *session.Session, stop func(), err error) {
	// The shared key lets the engine keep the context it was sent last time and ask
	// only for what changed.
	s, err = session.NewSession(ctx, sharedKey(src.dir))
	if err != nil {
		return nil, nil, &refusedError{reason: err.Error()}
	}
	ctxFS, err := fsutil.NewFS(src.dir)
	if err != nil {
		return nil, nil, fmt.Errorf("build %s: context: %w", service, err)
	}
	// Files belong to root in the image, as with docker build.
	ctxFS, err = fsutil.NewFilterFS(ctxFS, &fsutil.FilterOpt{ExcludePatterns: src.excludes, Map: rootOwned})
	if err != nil {
		return nil, nil, fmt.Errorf("build %s: .dockerignore: %w", service, err)
	}
	dfFS, err := fsutil.NewFS(filepath.Dir(src.dockerfile))
	if err != nil {
		return nil, nil, fmt.Errorf("build %s: %w", service, err)
	}
	s.Allow(filesync.NewFSSyncProvider(filesync.StaticDirSource{"context": ctxFS, "dockerfile": dfFS}))
	s.Allow(&sessionAuth{kc: o.Auth})

	sessCtx, stopSession := context.WithCancel(context.WithoutCancel(ctx))
	dialed := make(chan error, 1)
	ran := make(chan struct{})
	go func() {
		defer close(ran)
		err := s.Run(sessCtx, func(ctx context.Context, proto string, meta map[string][]string) (net.Conn, error) {
			conn, err := b.api.DialHijack(ctx, "/session", proto, meta)
			dialed <- err
			return conn, err
		})
		if err != nil {
			select {
			case dialed <- err:
			default:
			}
		}
	}()
	stop = func() {
		s.Close()
		stopSession()
		<-ran
	}
	if err := sessionStarted(ctx, dialed, ran); err != nil {
		stop()
		return nil, nil, err
	}
	return s, stop, nil
}

// sessionStarted waits for the session's dial to the engine and tells how it went.
func sessionStarted(ctx context.Context, dialed <-chan error, ran <-chan struct{}) error {
	var dialErr error
	select {
	case dialErr = <-dialed:
	case <-ran:
		select {
		case dialErr = <-dialed:
		default:
			return &refusedError{reason: "the build session ended before it started"}
		}
	case <-ctx.Done():
		return ctx.Err()
	}
	if dialErr != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return &refusedError{reason: "the engine has no build session endpoint: " + dialErr.Error()}
	}
	return nil
}

// refusesBuildKit tells the engine turning a BuildKit request down from a build that
// could not start for another reason.
func refusesBuildKit(err error) bool {
	msg := strings.ToLower(err.Error())
	if cerrdefs.IsNotImplemented(err) {
		return true
	}
	return strings.Contains(msg, "buildkit") || strings.Contains(msg, "session") ||
		strings.Contains(msg, "builder version") || strings.Contains(msg, "unknown version")
}

func rootOwned(_ string, st *fstypes.Stat) fsutil.MapResult {
	st.Uid, st.Gid = 0, 0
	return fsutil.MapResultKeep
}

func sharedKey(dir string) string {
	sum := sha256.Sum256([]byte("ship:" + dir))
	return hex.EncodeToString(sum[:])
}

func randomID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// readBuildKit reads a BuildKit build's JSON message stream to its end: the builder's
// status arrives as protobuf in the aux field of "moby.buildkit.trace" messages.
func readBuildKit(r io.Reader, service string, o Options) error {
	t := newTracker(service, o)
	dec := json.NewDecoder(r)
	for {
		var m engineMessage
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("build %s: read the engine's answer: %w", service, err)
		}
		if msg, failed := m.failure(); failed {
			return t.failure(msg)
		}
		switch {
		case m.ID == "moby.buildkit.trace" && m.Aux != nil:
			var data []byte
			if err := json.Unmarshal(*m.Aux, &data); err != nil {
				continue
			}
			var st controlapi.StatusResponse
			if err := st.UnmarshalVT(data); err != nil {
				continue
			}
			t.update(&st)
		case m.ID == "moby.image.id" && m.Aux != nil:
			var res build.Result
			if json.Unmarshal(*m.Aux, &res) == nil && res.ID != "" {
				o.emit(Event{Service: service, Kind: KindImage, Msg: res.ID})
			}
		case strings.TrimSpace(m.Stream) != "":
			for _, l := range strings.Split(strings.TrimRight(m.Stream, "\n"), "\n") {
				o.emit(Event{Service: service, Kind: KindStatus, Msg: l})
			}
		}
	}
}

// sessionAuth answers the builder's questions for registry credentials through the
// session, from the keychain. Token authorities are left to the builder.
type sessionAuth struct {
	auth.UnimplementedAuthServer
	kc *Keychain
}

func (a *sessionAuth) Register(s *grpc.Server) { auth.RegisterAuthServer(s, a) }

func (a *sessionAuth) Credentials(ctx context.Context, req *auth.CredentialsRequest) (*auth.CredentialsResponse, error) {
	c, err := a.kc.Credentials(ctx, req.Host)
	if err != nil {
		return nil, status.Error(codes.Unavailable, a.kc.Redact(err.Error()))
	}
	if c.IdentityToken != "" {
		return &auth.CredentialsResponse{Secret: c.IdentityToken}, nil
	}
	return &auth.CredentialsResponse{Username: c.Username, Secret: c.Password}, nil
}

func (a *sessionAuth) FetchToken(ctx context.Context, req *auth.FetchTokenRequest) (*auth.FetchTokenResponse, error) {
	c, err := a.kc.Credentials(ctx, req.Host)
	if err != nil {
		return nil, status.Error(codes.Unavailable, a.kc.Redact(err.Error()))
	}
	tok, err := fetchToken(ctx, defaultHTTP, tokenRequest{Realm: req.Realm, Service: req.Service, Scopes: req.Scopes, Creds: c})
	if err != nil {
		return nil, status.Error(codes.Unauthenticated, a.kc.Redact(err.Error()))
	}
	resp := &auth.FetchTokenResponse{Token: tok.Token, ExpiresIn: tok.ExpiresIn}
	if !tok.IssuedAt.IsZero() {
		resp.IssuedAt = tok.IssuedAt.Unix()
	}
	return resp, nil
}
