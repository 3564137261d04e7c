package deploy

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"golang.org/x/crypto/ssh"
)

// fakeRemote answers uname and systemctl the way a host with systemd does; shipd.service
// is enabled and active once started.
type fakeRemote struct {
	mu      sync.Mutex
	cmds    []string
	enabled bool
	active  bool
}

func (r *fakeRemote) Run(ctx context.Context, cmd string) ([]byte, []byte, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cmds = append(r.cmds, cmd)
	fail := &ssh.ExitError{}
	switch cmd {
	case "uname -m":
		return []byte("x86_64\n"), nil, nil
	case "systemctl is-enabled --quiet shipd.service":
		if !r.enabled {
			return nil, nil, fail
		}
	case "systemctl is-active --quiet shipd.service":
		if !r.active {
			return nil, nil, fail
		}
	case "systemctl enable --quiet shipd.service":
		r.enabled = true
	case "systemctl start shipd.service":
		r.active = true
	}
	return nil, nil, nil
}

func (r *fakeRemote) LoginUser() string { return "root" }

func (r *fakeRemote) took() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.cmds
	r.cmds = nil
	return out
}

type remoteConn struct {
	agentConn
	*fakeRemote
}

func TestInstallAgent(t *testing.T) {
	f := newFixture(t, "agent.yml")
	f.env.Path = "/home/deploy/shop"
	h := f.hosts[0]
	h.put("/etc/passwd", []byte("root:x:0:0:root:/root:/bin/bash\ndeploy:x:1000:1001::/home/deploy:/bin/sh\n"))
	h.put("/etc/group", []byte("root:x:0:\ndocker:x:999:deploy\nstaff:x:1001:\n"))
	sh := &fakeShipd{h: h, dial: f.net.dial}
	rem := &fakeRemote{}
	binary := []byte("shipd v1")
	var dialed []string
	opts := func(force bool) InstallOptions {
		t := f.target()
		t.Dial = func(ctx context.Context, dest string) (Host, error) {
			dialed = append(dialed, dest)
			c, err := sh.dial(ctx, strings.Replace(dest, "root@", "deploy@", 1))
			if err != nil {
				return nil, err
			}
			return remoteConn{agentConn{Host: c, sh: sh}, rem}, nil
		}
		return InstallOptions{
			Target: t, Prefix: "/opt/p", Force: force, SSHUser: "root",
			Binary: func(arch string) ([]byte, string, error) {
				if arch != "amd64" {
					return nil, "", errors.New("no binary for " + arch)
				}
				return binary, "bin/shipd", nil
			},
		}
	}
	install := func(force bool) HostInstall {
		t.Helper()
		hosts, err := InstallAgent(context.Background(), opts(force))
		if err != nil {
			t.Fatalf("install: %v\n%s", err, f.eventText())
		}
		return hosts[0]
	}
	actions := func(hi HostInstall) string {
		var out []string
		for _, f := range hi.Files {
			out = append(out, f.Action)
		}
		return strings.Join(out, ",")
	}

	// No systemd: the files, and shipd not started.
	hi := install(false)
	if len(dialed) != 1 || dialed[0] != "root@web1" {
		t.Errorf("dialed %v, want root@ the host", dialed)
	}
	if hi.Service != ServiceNoSystemd || hi.Systemd || actions(hi) != "written,written,written" || hi.User != "deploy" || hi.Group != "staff" || hi.Arch != "amd64" {
		t.Errorf("first install: %+v", hi)
	}
	if hi.Command != "/opt/p/usr/local/bin/shipd run --config /opt/p/etc/shipd/shipd.yaml" {
		t.Errorf("command %q", hi.Command)
	}
	if got := rem.took(); strings.Join(got, ";") != "uname -m" {
		t.Errorf("commands without systemd: %v", got)
	}
	if data, _ := h.file("/opt/p" + ShipdBinaryPath); data != "shipd v1" || h.nodes["/opt/p"+ShipdBinaryPath].mode != 0o755 {
		t.Errorf("binary %q mode %v", data, h.nodes["/opt/p"+ShipdBinaryPath].mode)
	}
	unit, _ := h.file("/opt/p" + ShipdUnitPath)
	for _, want := range []string{
		"\nExecStart=/opt/p/usr/local/bin/shipd run --config /opt/p/etc/shipd/shipd.yaml\n",
		"\nUser=deploy\n", "\nGroup=staff\n", "\nReadWritePaths=/home/deploy/shop /srv\n", "\nType=notify\n",
	} {
		if !strings.Contains(unit, want) {
			t.Errorf("the unit lacks %q:\n%s", want, unit)
		}
	}
	if cfg, _ := h.file("/opt/p" + ShipdConfigPath); !strings.Contains(cfg, "\nsocket_group: staff\n") {
		t.Errorf("shipd.yaml:\n%s", cfg)
	}
	if left := h.under("/opt/p/usr/local/bin"); len(left) != 1 {
		t.Errorf("temporary files left: %v", left)
	}

	// Again: nothing changes. An edited shipd.yaml is kept, unless --force.
	if hi := install(false); actions(hi) != "unchanged,unchanged,unchanged" {
		t.Errorf("second install: %s", actions(hi))
	}
	h.put("/opt/p"+ShipdConfigPath, []byte("log_level: debug\n"))
	if hi := install(false); actions(hi) != "unchanged,kept,unchanged" {
		t.Errorf("with an edited shipd.yaml: %s", actions(hi))
	}
	if hi := install(true); actions(hi) != "unchanged,replaced,unchanged" {
		t.Errorf("with --force: %s", actions(hi))
	}

	// With systemd.
	rem.took()
	h.put(systemdRunDir+"/.keep", nil)
	hi = install(false)
	if hi.Service != ServiceStarted || hi.Version == "" {
		t.Errorf("with systemd: %+v", hi)
	}
	want := "uname -m;systemctl is-enabled --quiet shipd.service;systemctl enable --quiet /opt/p/etc/systemd/system/shipd.service;systemctl is-active --quiet shipd.service;systemctl start shipd.service"
	if got := strings.Join(rem.took(), ";"); got != want {
		t.Errorf("commands:\n%s\nwant:\n%s", got, want)
	}
	rem.enabled = true
	if hi := install(false); hi.Service != ServiceRunning {
		t.Errorf("nothing changed: %+v", hi)
	}
	if got := strings.Join(rem.took(), ";"); strings.Contains(got, "start") || strings.Contains(got, "reload") {
		t.Errorf("nothing changed, yet: %s", got)
	}
	binary = []byte("shipd v2")
	if hi := install(false); hi.Service != ServiceReloaded || actions(hi) != "replaced,unchanged,unchanged" {
		t.Errorf("a new binary: %+v", hi)
	}
	if got := strings.Join(rem.took(), ";"); !strings.HasSuffix(got, "systemctl reload shipd.service") {
		t.Errorf("a new binary: %s", got)
	}
}

func TestGoArch(t *testing.T) {
	for machine, want := range map[string]string{"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386", "sparc64": ""} {
		if got := GoArch(machine); got != want {
			t.Errorf("%s: %q, want %q", machine, got, want)
		}
	}
}
