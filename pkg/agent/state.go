package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/shipdeploy/ship/pkg/agentapi"
	"github.com/shipdeploy/ship/pkg/event"
)

// stateVersion is the format of the state file.
const stateVersion = 1

// State is what shipd knows between two runs: per app, the release it made current and
// the route of each routed service (listen address, live container, release). It is
// saved after every change, so that a shipd killed at any moment starts again from the
// last step it took (see reconcile).
type State struct {
	Version int                  `json:"version"`
	Saved   time.Time            `json:"saved"`
	Apps    map[string]*AppState `json:"apps"`
}

// AppState is one app's part of the state.
type AppState struct {
	App  string `json:"app"`
	Path string `json:"path"`
	// Release is the release shipd last made current; Previous the one before.
	Release  string    `json:"release,omitempty"`
	Previous string    `json:"previous,omitempty"`
	Since    time.Time `json:"since,omitzero"`
	// Routes are the app's routed services, by service.
	Routes map[string]*RouteState `json:"routes,omitempty"`
	// Deploying is set while a deploy runs; found at start, it says the deploy was
	// cut off.
	Deploying *Deploying `json:"deploying,omitempty"`

	LastResult event.Result `json:"last_result,omitempty"`
	LastError  string       `json:"last_error,omitempty"`
	LastTime   time.Time    `json:"last_time,omitzero"`
}

// RouteState is one routed service: where it listens and which container is live.
type RouteState struct {
	Service string `json:"service"`
	// Listen is the plain HTTP address ("" for a route served over HTTPS only).
	Listen string `json:"listen"`
	// ListenTLS, Hosts, Paths, TLS, Cert and Key are a route on the front door (see
	// front.go): its HTTPS address, host names, path prefixes, whether it is served
	// over HTTPS, and the custom certificate and key files (else ACME's).
	ListenTLS string   `json:"listen_tls,omitempty"`
	Hosts     []string `json:"hosts,omitempty"`
	Paths     []string `json:"paths,omitempty"`
	TLS       bool     `json:"tls,omitempty"`
	Cert      string   `json:"cert,omitempty"`
	Key       string   `json:"key,omitempty"`
	// Port is the container port; Network the engine network the container is reached on.
	Port    int    `json:"port"`
	Network string `json:"network"`
	// Health is the HTTP health path ("" a TCP connect).
	Health string            `json:"health,omitempty"`
	Drain  agentapi.Duration `json:"drain,omitempty"`
	// Container (ID) and Name are the live container; Target its address.
	Container string    `json:"container,omitempty"`
	Name      string    `json:"name,omitempty"`
	Target    string    `json:"target,omitempty"`
	Release   string    `json:"release,omitempty"`
	Since     time.Time `json:"since,omitzero"`
	// More are the service's other routes (x-ship.routes after the first), each with
	// its own addresses, names, container port and target on the same container. They
	// switch with the first, in one step. A state without them (one route) loads as is.
	More []*RouteState `json:"more,omitempty"`
}

// all returns the service's routes: rs first, then rs.More.
func (rs *RouteState) all() []*RouteState {
	return append([]*RouteState{rs}, rs.More...)
}

// Deploying marks a deploy in progress.
type Deploying struct {
	// Kind is "deploy", "rollback" or "restore".
	Kind    string    `json:"kind"`
	Release string    `json:"release"`
	From    string    `json:"from,omitempty"` // the release current before
	Started time.Time `json:"started"`
	// Service is the service being replaced now.
	Service string `json:"service,omitempty"`
	// Created are the containers the deploy started, by ID.
	Created []string `json:"created,omitempty"`
}

func newState() *State { return &State{Version: stateVersion, Apps: map[string]*AppState{}} }

// clone is a deep copy, through JSON: the state is small.
func (s *State) clone() *State {
	data, err := json.Marshal(s)
	if err != nil {
		panic(err) // plain data: cannot fail
	}
	c := newState()
	if err := json.Unmarshal(data, c); err != nil {
		panic(err)
	}
	if c.Apps == nil {
		c.Apps = map[string]*AppState{}
	}
	return c
}

// store holds the state and writes it to its file after every change.
type store struct {
	path string
	mu   sync.Mutex
	s    *State
	// dropped are the apps of the file that were left out as invalid (see
	// statecheck.go), for the log.
	dropped []dropped
}

// openStore reads the state file; a missing file is an empty state. A file that cannot
// be read as a state is moved aside (state.json.bad-<time>) and reported, and the
// state starts empty; an app whose entry is not valid is left out (st.dropped), and
// the file as found is copied aside. Reconcile then leaves the containers it cannot
// place alone, and the apps the state lacks are rebuilt from the host (rebuild.go).
func openStore(path string) (st *store, warning, err error) {
	st = &store{path: path, s: newState()}
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return st, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("read state %s: %w", path, err)
	}
	aside := fmt.Sprintf("%s.bad-%s", path, time.Now().UTC().Format("20060102T150405Z"))
	s, dropped, err := decodeState(data)
	if err != nil {
		if rerr := os.Rename(path, aside); rerr != nil {
			return nil, nil, fmt.Errorf("state %s is unreadable (%v) and could not be moved aside: %w", path, err, rerr)
		}
		return st, fmt.Errorf("state %s is unreadable (%v); moved it to %s and started empty", path, err, aside), nil
	}
	st.s, st.dropped = s, dropped
	if len(dropped) > 0 {
		if err := writeFileAtomic(aside, data, 0o600); err != nil {
			return st, fmt.Errorf("state %s has invalid entries, and could not be kept aside: %w", path, err), nil
		}
		return st, fmt.Errorf("state %s has invalid entries (%d app(s) left out); kept the file as found in %s", path, len(dropped), aside), nil
	}
	return st, nil, nil
}

// snapshot returns a copy of the state.
func (st *store) snapshot() *State {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.s.clone()
}

// update changes the state with fn and saves it. The change stays in memory even when
// the save fails (the error says so): what shipd serves must not depend on its disk.
func (st *store) update(fn func(s *State)) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	fn(st.s)
	return st.saveLocked()
}

// app returns the app's state, creating it.
func (s *State) app(name, path string) *AppState {
	a := s.Apps[name]
	if a == nil {
		a = &AppState{App: name, Path: path}
		s.Apps[name] = a
	}
	if a.Routes == nil {
		a.Routes = map[string]*RouteState{}
	}
	if path != "" {
		a.Path = path
	}
	return a
}

func (st *store) saveLocked() error {
	st.s.Version = stateVersion
	st.s.Saved = time.Now().UTC()
	data, err := json.MarshalIndent(st.s, "", "  ")
	if err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	return writeFileAtomic(st.path, append(data, '\n'), 0o600)
}

// writeFileAtomic writes name through a temporary file in the same folder: written,
// synced, renamed over name, and the folder synced, so that name always holds either
// the old content or the new, even across a crash.
func writeFileAtomic(name string, data []byte, mode os.FileMode) (err error) {
	dir := filepath.Dir(name)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(name)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
			err = fmt.Errorf("write %s: %w", name, err)
		}
	}()
	if err = f.Chmod(mode); err != nil {
		return err
	}
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(tmp, name); err != nil {
		return err
	}
	// The rename is durable once the folder is synced.
	if d, derr := os.Open(dir); derr == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}
