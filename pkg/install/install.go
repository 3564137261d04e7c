// Package install puts shipd on an environment's hosts over SSH (`shipctl agent
// install`): the binary for each host's architecture, shipd.yaml and the systemd unit,
// then systemctl. It also finds the shipd executable to install (Finder).
package install

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/shipdeploy/ship/pkg/agentapi"
	"github.com/shipdeploy/ship/pkg/config"
	"github.com/shipdeploy/ship/pkg/event"
	"github.com/shipdeploy/ship/pkg/redact"
)

// Where agent install puts shipd on a host (under Options.Prefix).
const (
	BinaryPath = "/usr/local/bin/shipd"
	ConfigPath = "/etc/shipd/shipd.yaml"
	UnitPath   = "/etc/systemd/system/shipd.service"
)

// systemdRunDir exists on a host whose init is systemd (sd_booted(3)).
const systemdRunDir = "/run/systemd/system"

// What an install did to a file (File.Action).
const (
	FileWritten   = "written"   // it was not there
	FileReplaced  = "replaced"  // it was there with other content
	FileUnchanged = "unchanged" // it was there with this content
	FileKept      = "kept"      // shipd.yaml was there with other content, and Force was not given
)

// What an install did to the shipd service (Result.Service).
const (
	ServiceStarted   = "started"    // it was not running
	ServiceRestarted = "restarted"  // the unit changed (the listening sockets wait in systemd's store)
	ServiceReloaded  = "reloaded"   // the binary or shipd.yaml changed: handover, no connection refused
	ServiceRunning   = "running"    // nothing changed and it runs: left alone
	ServiceNoSystemd = "no-systemd" // the host has no systemd: the files are in place, shipd was not started
)

// Host is one connection to a host, as agent install uses it: a few file operations
// (paths absolute, errors for a missing path matching fs.ErrNotExist), a command
// (uname, systemctl), the user the connection logged in as, and shipd's status.
type Host interface {
	ReadFile(ctx context.Context, name string) ([]byte, error)
	ReadDir(ctx context.Context, dir string) ([]fs.FileInfo, error)
	// MkdirAll makes dir and its missing parents.
	MkdirAll(ctx context.Context, dir string) error
	// WriteFile creates name, which must not exist yet, with mode.
	WriteFile(ctx context.Context, name string, data []byte, mode fs.FileMode) error
	// Rename moves from to to in one step, replacing a file at to.
	Rename(ctx context.Context, from, to string) error
	// RemoveAll removes path; a path that is not there is no error.
	RemoveAll(ctx context.Context, path string) error
	Run(ctx context.Context, cmd string) (stdout, stderr []byte, err error)
	LoginUser() string
	// ShipdStatus asks shipd on the host how it is.
	ShipdStatus(ctx context.Context) (*agentapi.Status, error)
	Close() error
}

// Dialer connects to dest, a host as written in ship.yaml (user@host[:port]).
type Dialer func(ctx context.Context, dest string) (Host, error)

// Event is one thing an install did on a host, for the caller to render. Its text
// never holds a secret: it passes Options.Redactor first.
type Event struct {
	Host  string
	Step  event.Step // always event.StepInstall
	Level event.Level
	Msg   string
}

// Options say how to install shipd on an environment's hosts.
type Options struct {
	Env  *config.Environment
	Dial Dialer
	// Binary returns shipd's executable for a host's architecture (a GOARCH: amd64,
	// arm64, ...) and where it comes from, for messages.
	Binary func(arch string) (data []byte, from string, err error)
	// Prefix goes before every path installed (tests, unusual layouts): the unit then
	// runs Prefix/usr/local/bin/shipd with Prefix/etc/shipd/shipd.yaml. "" installs at
	// the real paths.
	Prefix string
	// Force replaces a shipd.yaml that is there and differs (by default it is kept).
	Force bool
	// SSHUser logs in as this user instead of the environment's (root, which may write
	// /usr/local/bin and run systemctl); shipd still runs as the environment's user.
	SSHUser string
	// Progress receives events, one at a time; may be nil.
	Progress func(Event)
	// Redactor scrubs secrets from events and errors; may be nil.
	Redactor *redact.Redactor
}

// File is one file an install wrote or left.
type File struct {
	Path   string
	Action string
	Size   int
}

// Result is what an install did on one host.
type Result struct {
	Host string
	// Arch is the host's architecture as a GOARCH; From where its shipd came from.
	Arch, From string
	// User and Group run shipd (User=, Group= and socket_group).
	User, Group string
	Files       []File
	// Systemd says whether the host runs systemd; Service what was done to shipd.service.
	Systemd bool
	Service string
	// Command starts shipd by hand (where there is no systemd).
	Command string
	// Version is the version of the shipd that answers after the install (systemd only).
	Version string
	Err     error
}

// Run installs shipd on every host of the environment, all at once: the binary for
// the host's architecture, shipd.yaml and the systemd unit (each written to a
// temporary name and renamed, each left alone when it has the content already), then
// `systemctl daemon-reload`, `enable` and `start` (or `reload` when it ran and the
// binary or shipd.yaml changed, `restart` when the unit changed). Running it again with
// nothing changed restarts nothing. On a host without systemd the files are put in
// place and shipd is not started (Service ServiceNoSystemd). The error names the hosts
// that failed.
func Run(ctx context.Context, o Options) ([]Result, error) {
	switch {
	case o.Binary == nil:
		return nil, errors.New("agent install: no shipd binary")
	case o.Env == nil || len(o.Env.Hosts) == 0:
		return nil, errors.New("the environment has no hosts")
	case o.Dial == nil:
		return nil, errors.New("no way to reach the hosts (Dial is nil)")
	}
	em := &emitter{fn: o.Progress, redact: o.Redactor}
	out := make([]Result, len(o.Env.Hosts))
	var g errgroup.Group
	for i, h := range o.Env.Hosts {
		g.Go(func() error {
			out[i] = installOn(ctx, o, em, h)
			return nil
		})
	}
	_ = g.Wait()
	var errs []error
	for _, r := range out {
		if r.Err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", r.Host, r.Err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return out, fmt.Errorf("agent install: %w", err)
	}
	return out, nil
}

// installOn dials one host (as SSHUser when given) and installs on it.
func installOn(ctx context.Context, o Options, em *emitter, h config.Host) Result {
	r := Result{Host: h.String()}
	deployUser := h.User
	if o.SSHUser != "" {
		h.User = o.SSHUser
	}
	c, err := o.Dial(ctx, h.String())
	if err == nil {
		err = installHost(ctx, c, em, r.Host, o, deployUser, &r)
		_ = c.Close()
	}
	if r.Err = o.Redactor.Error(err); r.Err != nil {
		em.emit(r.Host, event.LevelError, r.Err.Error())
	}
	return r
}

func installHost(ctx context.Context, h Host, em *emitter, name string, o Options, deployUser string, hi *Result) error {
	out, _, err := h.Run(ctx, "uname -m")
	if err != nil {
		return fmt.Errorf("find the architecture: %w", err)
	}
	machine := strings.TrimSpace(string(out))
	if hi.Arch = GoArch(machine); hi.Arch == "" {
		return fmt.Errorf("architecture %q (uname -m): shipd is not built for it", machine)
	}
	bin, from, err := o.Binary(hi.Arch)
	if err != nil {
		return err
	}
	hi.From = from
	hi.User = deployUser
	if hi.User == "" {
		hi.User = h.LoginUser()
	}
	hi.Group = primaryGroup(ctx, h, hi.User)
	em.emit(name, event.LevelInfo, fmt.Sprintf("linux/%s (%s): shipd from %s; it runs as %s:%s", hi.Arch, machine, from, hi.User, hi.Group))

	binPath, cfgPath, unitPath := o.Prefix+BinaryPath, o.Prefix+ConfigPath, o.Prefix+UnitPath
	var oldUnit string
	if data, err := h.ReadFile(ctx, unitPath); err == nil {
		oldUnit = string(data)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	unit := unitFile(binPath, cfgPath, hi.User, hi.Group, rwPaths(oldUnit, o.Env.Path))
	changed := map[string]bool{}
	for _, f := range []struct {
		path    string
		data    []byte
		mode    fs.FileMode
		replace bool
	}{
		{binPath, bin, 0o755, true},
		{cfgPath, []byte(shipdYAML(hi.Group)), 0o644, o.Force},
		{unitPath, []byte(unit), 0o644, true},
	} {
		action, err := putFile(ctx, h, f.path, f.data, f.mode, f.replace)
		if err != nil {
			return rootHint(fmt.Errorf("install %s: %w", f.path, err), binPath, cfgPath, unitPath)
		}
		hi.Files = append(hi.Files, File{Path: f.path, Action: action, Size: len(f.data)})
		changed[f.path] = action == FileWritten || action == FileReplaced
		if action == FileKept {
			em.emit(name, event.LevelWarn, fmt.Sprintf("%s is there and differs from the default: kept (--force replaces it)", f.path))
		} else {
			em.emit(name, event.LevelInfo, fmt.Sprintf("%s %s (%d bytes)", f.path, action, len(f.data)))
		}
	}
	hi.Command = fmt.Sprintf("%s run --config %s", binPath, cfgPath)

	if _, err := h.ReadDir(ctx, systemdRunDir); errors.Is(err, fs.ErrNotExist) {
		hi.Service = ServiceNoSystemd
		em.emit(name, event.LevelInfo, fmt.Sprintf("the host does not run systemd (%s is missing): shipd is not started", systemdRunDir))
		return nil
	} else if err != nil {
		return fmt.Errorf("look for systemd: %w", err)
	}
	hi.Systemd = true
	return systemd(ctx, h, name, o.Prefix, unitPath, changed[unitPath], changed[binPath] || changed[cfgPath], hi)
}

// rootHint adds to a permission error what agent install needs: a user that may write
// the files and run systemctl, which is root (--ssh-user root) unless sudo is set up.
func rootHint(err error, paths ...string) error {
	if !errors.Is(err, fs.ErrPermission) && !strings.Contains(strings.ToLower(err.Error()), "permission denied") {
		return err
	}
	return fmt.Errorf("%w (agent install writes %s and runs systemctl daemon-reload, enable, start, reload and restart shipd.service: log in as root with --ssh-user root)",
		err, strings.Join(paths, ", "))
}

// shipdStatus asks the host's shipd for its status, within a few seconds.
func shipdStatus(ctx context.Context, h Host) (*agentapi.Status, error) {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	return h.ShipdStatus(ctx)
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// emitter sends events to the caller's function, one at a time, redacted.
type emitter struct {
	mu     sync.Mutex
	fn     func(Event)
	redact *redact.Redactor
}

func (e *emitter) emit(host string, level event.Level, msg string) {
	if e.fn == nil {
		return
	}
	msg = e.redact.String(msg)
	e.mu.Lock()
	defer e.mu.Unlock()
	e.fn(Event{Host: host, Step: event.StepInstall, Level: level, Msg: msg})
}
