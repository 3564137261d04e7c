package agentapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shipdeploy/ship/pkg/agentapi"
)

// serve runs h on a unix socket and returns a Client for it.
func serve(t *testing.T, h http.Handler) *agentapi.Client {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "api.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	c := agentapi.NewClient(agentapi.UnixDialer(sock))
	t.Cleanup(c.Close)
	return c
}

// stream answers a deploy with events and then result (nil: the stream is cut).
func stream(events []agentapi.Event, result *agentapi.Result) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != agentapi.PathDeploy {
			http.Error(w, "wrong endpoint", http.StatusTeapot)
			return
		}
		var req agentapi.DeployRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.App != "web" || req.Health.Deadline != agentapi.Duration(3*time.Second) {
			http.Error(w, fmt.Sprintf("request %+v: %v", req, err), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/x-ndjson")
		enc := json.NewEncoder(w)
		for _, e := range events {
			enc.Encode(agentapi.Message{Event: &e})
			w.(http.Flusher).Flush()
		}
		if result != nil {
			enc.Encode(agentapi.Message{Result: result})
		}
	}
}

var request = agentapi.DeployRequest{
	App: "web", Path: "/srv/web", SHA: "abc", RegistryAuth: map[string]string{"reg.example.com": "c2VjcmV0"},
	Health: &agentapi.HealthCheck{Deadline: agentapi.Duration(3 * time.Second)},
}

func TestDeployStreamsEventsThenResult(t *testing.T) {
	events := []agentapi.Event{
		{Step: agentapi.StepPull, Msg: "pulled"},
		{Step: agentapi.StepSwitch, Service: "web", Msg: "switched"},
	}
	tests := []struct {
		name     string
		result   *agentapi.Result
		sentinel error
	}{
		{"deployed", &agentapi.Result{Result: agentapi.ResultDeployed, Current: "abc"}, nil},
		{"failed", &agentapi.Result{Result: agentapi.ResultFailed, Current: "old", Error: "unhealthy", Logs: []string{"boom"}}, agentapi.ErrDeployFailed},
		{"restore failed", &agentapi.Result{Result: agentapi.ResultRestoreFailed, Error: "worse"}, agentapi.ErrRestoreFailed},
		{"cut", nil, agentapi.ErrNoResult},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := serve(t, stream(events, tt.result))
			var got []string
			res, err := c.Deploy(context.Background(), request, func(e agentapi.Event) { got = append(got, e.Msg) })
			if strings.Join(got, ",") != "pulled,switched" {
				t.Errorf("events %v", got)
			}
			if tt.sentinel == nil {
				if err != nil || res.Current != "abc" {
					t.Fatalf("res %+v, err %v", res, err)
				}
				return
			}
			if !errors.Is(err, tt.sentinel) {
				t.Fatalf("err %v, want %v", err, tt.sentinel)
			}
			for _, other := range []error{agentapi.ErrDeployFailed, agentapi.ErrRestoreFailed, agentapi.ErrNoResult, agentapi.ErrLocked} {
				if other != tt.sentinel && errors.Is(err, other) {
					t.Errorf("err %v also matches %v", err, other)
				}
			}
			var ae *agentapi.Error
			if tt.result != nil && (!errors.As(err, &ae) || ae.Result == nil || ae.Result.Error != tt.result.Error || res == nil) {
				t.Errorf("err %#v: want the result in it", err)
			}
		})
	}
}

func TestRefusalsAreTyped(t *testing.T) {
	for code, sentinel := range map[string]error{
		agentapi.CodeLocked:     agentapi.ErrLocked,
		agentapi.CodeNotFound:   agentapi.ErrNotFound,
		agentapi.CodeBadRequest: agentapi.ErrBadRequest,
	} {
		c := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusConflict)
			json.NewEncoder(w).Encode(agentapi.ErrorBody{Code: code, Error: "app web is locked"})
		}))
		_, err := c.Deploy(context.Background(), request, nil)
		if !errors.Is(err, sentinel) || !strings.Contains(err.Error(), "app web is locked") {
			t.Errorf("%s: err %v, want %v", code, err, sentinel)
		}
	}
	// An answer that is not shipd's.
	c := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "oops", http.StatusBadGateway)
	}))
	if _, err := c.Status(context.Background()); err == nil || !strings.Contains(err.Error(), "502") {
		t.Errorf("status from a bad gateway: %v", err)
	}
}

func TestStatus(t *testing.T) {
	want := agentapi.Status{Version: "shipd test", PID: 42, Uptime: agentapi.Duration(90 * time.Second),
		Routes: []agentapi.Route{{App: "web", Service: "web", Listen: ":80", Target: "172.17.0.2:8080"}}}
	c := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(want)
	}))
	got, err := c.Status(context.Background())
	if err != nil || got.PID != 42 || got.Uptime != want.Uptime || len(got.Routes) != 1 || got.Routes[0].Target != "172.17.0.2:8080" {
		t.Errorf("status %+v, %v", got, err)
	}
}

func TestNoDaemon(t *testing.T) {
	c := agentapi.NewClient(agentapi.UnixDialer(filepath.Join(t.TempDir(), "none.sock")))
	_, err := c.Status(context.Background())
	if err == nil || strings.Contains(err.Error(), "http://shipd") || !strings.Contains(err.Error(), "none.sock") {
		t.Errorf("err %v: want the socket named, not the URL", err)
	}
}

func TestDurationJSON(t *testing.T) {
	b, _ := json.Marshal(agentapi.HealthCheck{Interval: agentapi.Duration(1500 * time.Millisecond)})
	if string(b) != `{"interval":"1.5s"}` {
		t.Errorf("marshal: %s", b)
	}
	var h agentapi.HealthCheck
	if err := json.Unmarshal([]byte(`{"interval":"2s","timeout":1000000000}`), &h); err != nil || h.Interval.Std() != 2*time.Second || h.Timeout.Std() != time.Second {
		t.Errorf("unmarshal: %+v %v", h, err)
	}
	if err := json.Unmarshal([]byte(`{"interval":"soon"}`), &h); err == nil {
		t.Error("a bad duration was accepted")
	}
}

func TestRequestsKeepCredentialsOutOfLogs(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	log.Info("deploy", "request", request)
	log.Info("rollback", "request", agentapi.RollbackRequest{App: "web", RegistryAuth: request.RegistryAuth})
	text := buf.String() + fmt.Sprint(request) + fmt.Sprintf("%v %+v %#v", request, request, request)
	if strings.Contains(text, "c2VjcmV0") {
		t.Errorf("the credential shows:\n%s", text)
	}
}
