package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"sync"
	"time"

	"github.com/shipdeploy/ship/pkg/agentapi"
	"github.com/shipdeploy/ship/pkg/compose"
	"github.com/shipdeploy/ship/pkg/proxy"
	"github.com/shipdeploy/ship/pkg/release"
)

// maxRequest bounds a request body: a deploy request is a few KiB.
const maxRequest = 1 << 20

// handler serves the API (see agentapi).
func (a *agent) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+agentapi.PathStatus, a.handleStatus)
	mux.HandleFunc("POST "+agentapi.PathDeploy, a.handleDeploy)
	mux.HandleFunc("POST "+agentapi.PathRollback, a.handleRollback)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, agentapi.CodeNotFound, fmt.Sprintf("no such endpoint: %s %s", r.Method, r.URL.Path))
	})
	return mux
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, agentapi.ErrorBody{Code: code, Error: msg})
}

func writeAPIError(w http.ResponseWriter, err error) {
	var ae *agentapi.Error
	if errors.As(err, &ae) {
		status := ae.Status
		if status == 0 {
			status = http.StatusInternalServerError
		}
		writeError(w, status, ae.Code, ae.Msg)
		return
	}
	writeError(w, http.StatusInternalServerError, agentapi.CodeInternal, err.Error())
}

func (a *agent) handleStatus(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, a.status())
}

func decode(r *http.Request, v any) error {
	data, err := io.ReadAll(io.LimitReader(r.Body, maxRequest+1))
	if err != nil {
		return err
	}
	if len(data) > maxRequest {
		return fmt.Errorf("request larger than %d bytes", maxRequest)
	}
	return json.Unmarshal(data, v)
}

func badRequest(msg string) error {
	return &agentapi.Error{Code: agentapi.CodeBadRequest, Msg: msg, Status: http.StatusBadRequest}
}

// baseRequest fills what deploys and rollbacks share from the request and shipd's
// defaults.
func (a *agent) baseRequest(kind, app, path, sha string, auth map[string]string, health *agentapi.HealthCheck, wait agentapi.Duration, origin agentapi.Origin) request {
	req := request{
		kind: kind, app: app, path: path, sha: sha, auth: auth, origin: origin,
		health: proxy.HealthCheck{Interval: a.cfg.Health.Interval, Timeout: a.cfg.Health.Timeout, Deadline: a.cfg.Health.Deadline},
		wait:   a.cfg.WaitTimeout, job: a.cfg.JobTimeout,
	}
	if h := health; h != nil {
		if h.Interval > 0 {
			req.health.Interval = h.Interval.Std()
		}
		if h.Timeout > 0 {
			req.health.Timeout = h.Timeout.Std()
		}
		if h.Deadline > 0 {
			req.health.Deadline = h.Deadline.Std()
		}
	}
	if wait > 0 {
		req.wait = wait.Std()
	}
	return req
}

func (a *agent) handleDeploy(w http.ResponseWriter, r *http.Request) {
	var in agentapi.DeployRequest
	if err := decode(r, &in); err != nil {
		writeAPIError(w, badRequest("read the deploy request: "+err.Error()))
		return
	}
	if err := checkRequest(in.App, in.Path, in.SHA, true); err != nil {
		writeAPIError(w, badRequest(err.Error()))
		return
	}
	req := a.baseRequest(kindDeploy, in.App, in.Path, in.SHA, in.RegistryAuth, in.Health, in.WaitTimeout, in.Origin)
	if in.JobTimeout > 0 {
		req.job = in.JobTimeout.Std()
	}
	if in.Keep > 0 {
		req.keep = in.Keep
	}
	req.unlock = in.Unlock
	a.log.Info("deploy requested", "request", in)
	a.serveDeploy(w, r, req)
}

func (a *agent) handleRollback(w http.ResponseWriter, r *http.Request) {
	var in agentapi.RollbackRequest
	if err := decode(r, &in); err != nil {
		writeAPIError(w, badRequest("read the rollback request: "+err.Error()))
		return
	}
	if err := checkRequest(in.App, in.Path, in.SHA, false); err != nil {
		writeAPIError(w, badRequest(err.Error()))
		return
	}
	a.log.Info("rollback requested", "request", in)
	req := a.baseRequest(kindRollback, in.App, in.Path, in.SHA, in.RegistryAuth, in.Health, in.WaitTimeout, in.Origin)
	req.unlock = in.Unlock
	a.serveDeploy(w, r, req)
}

// serveDeploy takes the app's lock, reads and checks the release (refusals are 4xx
// answers, before anything is touched), then runs the deploy and streams its events
// and result. The deploy does not depend on the client: it runs to its end (or to
// shipd's stop) even when the client goes away.
func (a *agent) serveDeploy(w http.ResponseWriter, r *http.Request, req request) {
	free, err := a.acquire(req.app, req.kind+" of "+release.Name(req.sha))
	if err != nil {
		writeAPIError(w, err)
		return
	}
	unlock := sync.OnceFunc(free)
	defer unlock()
	ctx := a.deployCtx
	st := newStore(req.path)
	if req.kind == kindRollback {
		current, err := st.Current(ctx)
		if err != nil {
			writeAPIError(w, err)
			return
		}
		sha, err := st.RollbackTarget(ctx, current, req.sha)
		if err != nil {
			writeAPIError(w, &agentapi.Error{Code: agentapi.CodeNotFound, Msg: fmt.Sprintf("rollback of %s: %v", req.app, err), Status: http.StatusNotFound})
			return
		}
		req.sha = sha
	}
	lctx, cancel := context.WithTimeout(ctx, time.Minute)
	p, err := loadRelease(lctx, req.app, st, req.sha)
	cancel()
	switch {
	case errors.Is(err, fs.ErrNotExist):
		writeAPIError(w, &agentapi.Error{Code: agentapi.CodeNotFound, Msg: fmt.Sprintf("release %s of %s is not on the host: %s is missing; upload it first", release.Short(req.sha), req.app, st.Layout.ComposeFile(req.sha)), Status: http.StatusNotFound})
		return
	case errors.Is(err, compose.ErrInvalid):
		writeAPIError(w, badRequest(err.Error()))
		return
	case err != nil:
		writeAPIError(w, fmt.Errorf("read release %s: %w", req.sha, err))
		return
	}
	if err := a.checkRelease(req.app, st, req.sha, p); err != nil {
		writeAPIError(w, badRequest(err.Error()))
		return
	}
	if err := checkWritable(req.path); err != nil {
		writeAPIError(w, badRequest(err.Error()))
		return
	}

	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	enc := json.NewEncoder(w)
	gone := false
	send := func(m agentapi.Message) {
		if gone {
			return
		}
		// A client that went away is not waited for: the deploy goes on.
		_ = rc.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if err := enc.Encode(m); err != nil {
			gone = true
			a.log.Warn("the client went away; the deploy goes on", "app", req.app, "err", err)
			return
		}
		_ = rc.Flush()
	}
	em := &emitter{log: a.log.With("app", req.app, "release", req.sha, "kind", req.kind), fn: func(ev agentapi.Event) {
		send(agentapi.Message{Event: &ev})
	}}
	res := a.deploy(ctx, req, p, em)
	// The app is free before the client hears the result: its next deploy may follow at
	// once, and must not find the lock still held.
	unlock()
	em.mu.Lock()
	send(agentapi.Message{Result: &res})
	em.mu.Unlock()
	a.log.Info(req.kind+" finished", "app", req.app, "release", req.sha, "result", res.Result, "current", res.Current, "duration", time.Duration(res.Duration).String())
}
