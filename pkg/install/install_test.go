package install

import (
	"context"
	"errors"
	"io/fs"
	"path"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/shipdeploy/ship/pkg/agentapi"
	"github.com/shipdeploy/ship/pkg/config"
	"github.com/shipdeploy/ship/pkg/event"
	"github.com/shipdeploy/ship/pkg/redact"
)

// fakeHost is a host's file system in memory, and uname and systemctl answered the way
// a host with systemd does: shipd.service is enabled and active once started, and shipd
// answers once it is active.
type fakeHost struct {
	mu      sync.Mutex
	files   map[string][]byte
	modes   map[string]fs.FileMode
	cmds    []string
	enabled bool
	active  bool
	closed  int
}

func newFakeHost() *fakeHost {
	return &fakeHost{files: map[string][]byte{}, modes: map[string]fs.FileMode{}}
}

func (h *fakeHost) put(name string, data []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.files[name] = data
	h.modes[name] = 0o644
}

func (h *fakeHost) file(name string) string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return string(h.files[name])
}

func (h *fakeHost) ReadFile(_ context.Context, name string) ([]byte, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	data, ok := h.files[name]
	if !ok {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
	}
	return append([]byte(nil), data...), nil
}

// ReadDir answers only whether dir holds anything: enough for the systemd check.
func (h *fakeHost) ReadDir(_ context.Context, dir string) ([]fs.FileInfo, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for name := range h.files {
		if strings.HasPrefix(name, dir+"/") {
			return nil, nil
		}
	}
	return nil, &fs.PathError{Op: "readdir", Path: dir, Err: fs.ErrNotExist}
}

func (h *fakeHost) MkdirAll(context.Context, string) error { return nil }

func (h *fakeHost) WriteFile(_ context.Context, name string, data []byte, mode fs.FileMode) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.files[name]; ok {
		return &fs.PathError{Op: "create", Path: name, Err: fs.ErrExist}
	}
	h.files[name], h.modes[name] = append([]byte(nil), data...), mode
	return nil
}

func (h *fakeHost) Rename(_ context.Context, from, to string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	data, ok := h.files[from]
	if !ok {
		return &fs.PathError{Op: "rename", Path: from, Err: fs.ErrNotExist}
	}
	h.files[to], h.modes[to] = data, h.modes[from]
	delete(h.files, from)
	delete(h.modes, from)
	return nil
}

func (h *fakeHost) RemoveAll(_ context.Context, name string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.files, name)
	return nil
}

func (h *fakeHost) Run(_ context.Context, cmd string) ([]byte, []byte, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.cmds = append(h.cmds, cmd)
	fail := &ssh.ExitError{}
	switch cmd {
	case "uname -m":
		return []byte("x86_64\n"), nil, nil
	case "systemctl is-enabled --quiet shipd.service":
		if !h.enabled {
			return nil, nil, fail
		}
	case "systemctl is-active --quiet shipd.service":
		if !h.active {
			return nil, nil, fail
		}
	case "systemctl enable --quiet shipd.service":
		h.enabled = true
	case "systemctl start shipd.service":
		h.active = true
	}
	return nil, nil, nil
}

func (h *fakeHost) LoginUser() string { return "root" }

func (h *fakeHost) ShipdStatus(context.Context) (*agentapi.Status, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.active {
		return nil, errors.New("shipd does not answer")
	}
	return &agentapi.Status{Version: "shipd v1", PID: 42, Uptime: agentapi.Duration(time.Minute)}, nil
}

func (h *fakeHost) Close() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed++
	return nil
}

func (h *fakeHost) took() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := h.cmds
	h.cmds = nil
	return out
}

// under lists the files in dir.
func (h *fakeHost) under(dir string) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for name := range h.files {
		if path.Dir(name) == dir {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}

func TestRun(t *testing.T) {
	h := newFakeHost()
	h.put("/etc/passwd", []byte("root:x:0:0:root:/root:/bin/bash\ndeploy:x:1000:1001::/home/deploy:/bin/sh\n"))
	h.put("/etc/group", []byte("root:x:0:\ndocker:x:999:deploy\nstaff:x:1001:\n"))
	env := &config.Environment{Name: "prod", Path: "/home/deploy/shop", Hosts: []config.Host{{User: "deploy", Name: "web1"}}}
	binary := []byte("shipd v1")
	var dialed []string
	var events []Event
	opts := func(force bool) Options {
		return Options{
			Env: env, Prefix: "/opt/p", Force: force, SSHUser: "root",
			Dial: func(_ context.Context, dest string) (Host, error) {
				dialed = append(dialed, dest)
				return h, nil
			},
			Binary: func(arch string) ([]byte, string, error) {
				if arch != "amd64" {
					return nil, "", errors.New("no binary for " + arch)
				}
				return binary, "bin/shipd", nil
			},
			Progress: func(e Event) { events = append(events, e) },
		}
	}
	install := func(force bool) Result {
		t.Helper()
		hosts, err := Run(context.Background(), opts(force))
		if err != nil {
			t.Fatalf("install: %v", err)
		}
		return hosts[0]
	}
	actions := func(r Result) string {
		var out []string
		for _, f := range r.Files {
			out = append(out, f.Action)
		}
		return strings.Join(out, ",")
	}

	// No systemd: the files, and shipd not started.
	r := install(false)
	if len(dialed) != 1 || dialed[0] != "root@web1" || h.closed != 1 {
		t.Errorf("dialed %v (closed %d), want root@ the host", dialed, h.closed)
	}
	if r.Host != "deploy@web1" || r.Service != ServiceNoSystemd || r.Systemd || actions(r) != "written,written,written" || r.User != "deploy" || r.Group != "staff" || r.Arch != "amd64" {
		t.Errorf("first install: %+v", r)
	}
	if r.Command != "/opt/p/usr/local/bin/shipd run --config /opt/p/etc/shipd/shipd.yaml" {
		t.Errorf("command %q", r.Command)
	}
	if got := h.took(); strings.Join(got, ";") != "uname -m" {
		t.Errorf("commands without systemd: %v", got)
	}
	if data := h.file("/opt/p" + BinaryPath); data != "shipd v1" || h.modes["/opt/p"+BinaryPath] != 0o755 {
		t.Errorf("binary %q mode %v", data, h.modes["/opt/p"+BinaryPath])
	}
	unit := h.file("/opt/p" + UnitPath)
	for _, want := range []string{
		"\nExecStart=/opt/p/usr/local/bin/shipd run --config /opt/p/etc/shipd/shipd.yaml\n",
		"\nUser=deploy\n", "\nGroup=staff\n", "\nReadWritePaths=/home/deploy/shop /srv\n", "\nType=notify\n",
	} {
		if !strings.Contains(unit, want) {
			t.Errorf("the unit lacks %q:\n%s", want, unit)
		}
	}
	if cfg := h.file("/opt/p" + ConfigPath); !strings.Contains(cfg, "\nsocket_group: staff\n") {
		t.Errorf("shipd.yaml:\n%s", cfg)
	}
	if left := h.under("/opt/p/usr/local/bin"); len(left) != 1 {
		t.Errorf("temporary files left: %v", left)
	}
	if len(events) == 0 || events[0].Host != "deploy@web1" || !strings.Contains(events[0].Msg, "linux/amd64 (x86_64): shipd from bin/shipd; it runs as deploy:staff") {
		t.Errorf("events: %+v", events)
	}

	// Again: nothing changes. An edited shipd.yaml is kept, unless --force.
	if r := install(false); actions(r) != "unchanged,unchanged,unchanged" {
		t.Errorf("second install: %s", actions(r))
	}
	h.put("/opt/p"+ConfigPath, []byte("log_level: debug\n"))
	if r := install(false); actions(r) != "unchanged,kept,unchanged" {
		t.Errorf("with an edited shipd.yaml: %s", actions(r))
	}
	if r := install(true); actions(r) != "unchanged,replaced,unchanged" {
		t.Errorf("with --force: %s", actions(r))
	}

	// With systemd.
	h.took()
	h.put(systemdRunDir+"/.keep", nil)
	r = install(false)
	if r.Service != ServiceStarted || r.Version != "shipd v1" {
		t.Errorf("with systemd: %+v", r)
	}
	want := "uname -m;systemctl is-enabled --quiet shipd.service;systemctl enable --quiet /opt/p/etc/systemd/system/shipd.service;systemctl is-active --quiet shipd.service;systemctl start shipd.service"
	if got := strings.Join(h.took(), ";"); got != want {
		t.Errorf("commands:\n%s\nwant:\n%s", got, want)
	}
	if r := install(false); r.Service != ServiceRunning {
		t.Errorf("nothing changed: %+v", r)
	}
	if got := strings.Join(h.took(), ";"); strings.Contains(got, "start") || strings.Contains(got, "reload") {
		t.Errorf("nothing changed, yet: %s", got)
	}
	binary = []byte("shipd v2")
	if r := install(false); r.Service != ServiceReloaded || actions(r) != "replaced,unchanged,unchanged" {
		t.Errorf("a new binary: %+v", r)
	}
	if got := strings.Join(h.took(), ";"); !strings.HasSuffix(got, "systemctl reload shipd.service") {
		t.Errorf("a new binary: %s", got)
	}
}

func TestRunUnreachable(t *testing.T) {
	env := &config.Environment{Name: "prod", Path: "/srv/shop", Hosts: []config.Host{{User: "deploy", Name: "web1"}, {User: "deploy", Name: "web2"}}}
	ok := newFakeHost()
	var events []Event
	var mu sync.Mutex
	hosts, err := Run(context.Background(), Options{
		Env: env, Redactor: redact.New("hunter2-secret"),
		Dial: func(_ context.Context, dest string) (Host, error) {
			if dest == "deploy@web2" {
				return nil, errors.New("dial tcp: refused (key hunter2-secret)")
			}
			return ok, nil
		},
		Binary: func(string) ([]byte, string, error) { return []byte("shipd"), "here", nil },
		Progress: func(e Event) {
			mu.Lock()
			defer mu.Unlock()
			events = append(events, e)
		},
	})
	if err == nil || !strings.Contains(err.Error(), "agent install: deploy@web2: dial tcp: refused (key [redacted])") || strings.Contains(err.Error(), "web1") {
		t.Fatalf("err = %v", err)
	}
	if len(hosts) != 2 || hosts[0].Err != nil || hosts[1].Err == nil || hosts[0].Service != ServiceNoSystemd {
		t.Errorf("hosts: %+v", hosts)
	}
	var failed []string
	for _, e := range events {
		if e.Level == event.LevelError {
			failed = append(failed, e.Host+": "+e.Msg)
		}
	}
	if len(failed) != 1 || !strings.HasPrefix(failed[0], "deploy@web2: dial tcp") || strings.Contains(failed[0], "hunter2") {
		t.Errorf("error events: %v", failed)
	}
}

func TestGoArch(t *testing.T) {
	for machine, want := range map[string]string{"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386", "sparc64": ""} {
		if got := GoArch(machine); got != want {
			t.Errorf("%s: %q, want %q", machine, got, want)
		}
	}
}

// readOnlyHost is a host where the login user may write nothing, as a non-root user
// finds /usr/local/bin and /etc.
type readOnlyHost struct{ *fakeHost }

func (readOnlyHost) WriteFile(_ context.Context, name string, _ []byte, _ fs.FileMode) error {
	return &fs.PathError{Op: "create", Path: name, Err: fs.ErrPermission}
}

func TestRunNotRoot(t *testing.T) {
	env := &config.Environment{Name: "prod", Path: "/srv/shop", Hosts: []config.Host{{User: "deploy", Name: "web1"}}}
	_, err := Run(context.Background(), Options{
		Env:    env,
		Dial:   func(context.Context, string) (Host, error) { return readOnlyHost{newFakeHost()}, nil },
		Binary: func(string) ([]byte, string, error) { return []byte("shipd"), "here", nil },
	})
	if err == nil || !errors.Is(err, fs.ErrPermission) || !strings.Contains(err.Error(), "--ssh-user root") {
		t.Fatalf("err = %v, want a permission error that says --ssh-user root", err)
	}
}
