package install

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/shipdeploy/ship/configs"
	"github.com/shipdeploy/ship/pkg/release"
	"github.com/shipdeploy/ship/pkg/sshx"
)

// systemd makes shipd.service run: daemon-reload when the unit changed, enable, and
// start, restart (the unit changed) or reload (the binary or shipd.yaml changed; a
// handover). Then it waits for shipd to answer.
func systemd(ctx context.Context, h Host, name, prefix, unitPath string, unitChanged, changed bool, hi *Result) error {
	run := func(args ...string) error {
		cmd := sshx.ShellQuote(args...)
		_, stderr, err := h.Run(ctx, cmd)
		if err != nil {
			if msg := strings.TrimSpace(string(stderr)); msg != "" {
				return fmt.Errorf("%s: %w: %s", cmd, err, msg)
			}
			return fmt.Errorf("%s: %w", cmd, err)
		}
		return nil
	}
	unit := "shipd.service"
	enableArg := unit
	if prefix != "" {
		// Outside systemd's search path: enable links the file in.
		enableArg = unitPath
	}
	if unitChanged {
		if err := run("systemctl", "daemon-reload"); err != nil {
			return err
		}
	}
	if unitChanged || run("systemctl", "is-enabled", "--quiet", unit) != nil {
		if err := run("systemctl", "enable", "--quiet", enableArg); err != nil {
			return err
		}
	}
	active := run("systemctl", "is-active", "--quiet", unit) == nil
	var err error
	switch {
	case !active:
		hi.Service, err = ServiceStarted, run("systemctl", "start", unit)
	case unitChanged:
		hi.Service, err = ServiceRestarted, run("systemctl", "restart", unit)
	case changed:
		hi.Service, err = ServiceReloaded, run("systemctl", "reload", unit)
	default:
		hi.Service = ServiceRunning
	}
	if err != nil {
		return fmt.Errorf("%w (agent install needs a user that may run systemctl: --ssh-user root)", err)
	}
	// shipd answers once it serves; a reload answers from its successor.
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, err := shipdStatus(ctx, h)
		if err == nil {
			hi.Version = st.Version
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("shipd.service is %s but shipd does not answer (%v); see journalctl -u shipd on %s", hi.Service, err, name)
		}
		sleep(ctx, 250*time.Millisecond)
	}
}

// putFile writes data to name unless it holds that already: to a temporary name in the
// same folder, renamed over it. An existing file that differs is replaced only with
// replace.
func putFile(ctx context.Context, f Host, name string, data []byte, mode fs.FileMode, replace bool) (string, error) {
	action := FileWritten
	old, err := f.ReadFile(ctx, name)
	switch {
	case err == nil && bytes.Equal(old, data):
		return FileUnchanged, nil
	case err == nil && !replace:
		return FileKept, nil
	case err == nil:
		action = FileReplaced
	case !errors.Is(err, fs.ErrNotExist):
		return "", err
	}
	dir := path.Dir(name)
	if err := f.MkdirAll(ctx, dir); err != nil {
		return "", err
	}
	tmp := path.Join(dir, "."+path.Base(name)+".ship-"+release.TempSuffix()+".tmp")
	if err := release.WriteStaged(ctx, f, tmp, name, data, mode); err != nil {
		return "", err
	}
	return action, nil
}

// GoArch is the GOARCH of a `uname -m`; "" for one shipd is not built for.
func GoArch(machine string) string {
	switch machine {
	case "x86_64", "amd64":
		return "amd64"
	case "aarch64", "arm64", "aarch64_be":
		return "arm64"
	case "armv7l", "armv6l", "armv7", "armv6":
		return "arm"
	case "i386", "i686":
		return "386"
	case "riscv64":
		return "riscv64"
	case "ppc64le":
		return "ppc64le"
	case "s390x":
		return "s390x"
	}
	return ""
}

// primaryGroup is the name of user's primary group, from the host's /etc/passwd and
// /etc/group; the user's own name when they do not say.
func primaryGroup(ctx context.Context, f Host, user string) string {
	field := func(file string, key string, want, at int) string {
		data, err := f.ReadFile(ctx, file)
		if err != nil {
			return ""
		}
		sc := bufio.NewScanner(bytes.NewReader(data))
		for sc.Scan() {
			parts := strings.Split(sc.Text(), ":")
			if len(parts) > max(want, at) && parts[at] == key {
				return parts[want]
			}
		}
		return ""
	}
	if gid := field("/etc/passwd", user, 3, 0); gid != "" {
		if name := field("/etc/group", gid, 0, 2); name != "" {
			return name
		}
	}
	return user
}

// rwPaths are the folders shipd.service lets shipd write: /srv, those an existing unit
// lists (another app's), and the app's path when it is elsewhere.
func rwPaths(oldUnit, appPath string) []string {
	set := map[string]bool{"/srv": true}
	for _, line := range strings.Split(oldUnit, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "ReadWritePaths="); ok {
			for _, p := range strings.Fields(v) {
				set[p] = true
			}
		}
	}
	if appPath != "" && appPath != "/srv" && !strings.HasPrefix(appPath, "/srv/") {
		set[appPath] = true
	}
	out := make([]string, 0, len(set))
	for p := range set {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

// unitFile is configs/shipd.service for this host: shipd at binPath with cfgPath, run
// as user:group, allowed to write paths.
func unitFile(binPath, cfgPath, user, group string, paths []string) string {
	lines := strings.Split(configs.ShipdService, "\n")
	for i, line := range lines {
		key, _, ok := strings.Cut(line, "=")
		if !ok || strings.HasPrefix(line, "#") {
			continue
		}
		switch key {
		case "ExecStart":
			lines[i] = "ExecStart=" + unitQuote(binPath) + " run --config " + unitQuote(cfgPath)
		case "User":
			lines[i] = "User=" + user
		case "Group":
			lines[i] = "Group=" + group
		case "ReadWritePaths":
			quoted := make([]string, len(paths))
			for j, p := range paths {
				quoted[j] = unitQuote(p)
			}
			lines[i] = "ReadWritePaths=" + strings.Join(quoted, " ")
		}
	}
	return strings.Join(lines, "\n")
}

// unitQuote quotes a path for a unit file where it needs it.
func unitQuote(s string) string {
	if !strings.ContainsAny(s, " \t\"'\\") {
		return s
	}
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

// shipdYAML is configs/shipd.yaml with the socket owned by group.
func shipdYAML(group string) string {
	lines := strings.Split(configs.ShipdYAML, "\n")
	for i, line := range lines {
		if strings.HasPrefix(line, "socket_group:") {
			lines[i] = "socket_group: " + group
		}
	}
	return strings.Join(lines, "\n")
}
