package install

import (
	"context"
	"debug/buildinfo"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/shipdeploy/ship/pkg/version"
)

// ErrBinary marks a shipd executable named by the user (Finder.Explicit) that cannot be
// installed: not shipd, or for another platform. It is the user's to fix (exit 2).
var ErrBinary = errors.New("the shipd named cannot be installed")

// binaryError is an error about Finder.Explicit: its message as given, matching ErrBinary.
type binaryError struct{ error }

func (e binaryError) Is(target error) bool { return target == ErrBinary }
func (e binaryError) Unwrap() error        { return e.error }

// Build is what identifies a build of ship: the version set at link time and the
// commit it was built from (when known).
type Build struct {
	Version, Commit string
}

func (b Build) String() string {
	if b.Commit == "" {
		return b.Version
	}
	return b.Version + " (" + b.Commit + ")"
}

// Matches reports whether two builds are of the same version: the same Version, and
// the same commit when both know theirs.
func (b Build) Matches(o Build) bool {
	return b.Version == o.Version && (b.Commit == "" || o.Commit == "" || b.Commit == o.Commit)
}

// OwnBuild is the build of the running program.
func OwnBuild() Build { return Build{Version: version.Version, Commit: version.Commit()} }

var versionFlag = regexp.MustCompile(`-X[= ]?'?"?github\.com/shipdeploy/ship/pkg/version\.Version=([^\s'"]+)`)

// Executable is a shipd executable's platform and build, read from the Go build
// information in it (and, for one of this platform built with -trimpath, from its
// --version).
type Executable struct {
	Path, GOOS, GOARCH string
	Build              Build
}

// ReadShipd reads the build information of the shipd executable at path; an
// executable that is not shipd is an error.
func ReadShipd(path string) (Executable, error) {
	bi, err := buildinfo.ReadFile(path)
	if err != nil {
		return Executable{}, fmt.Errorf("%s: not a Go executable: %w", path, err)
	}
	if bi.Path != "github.com/shipdeploy/ship/cmd/shipd" {
		return Executable{}, fmt.Errorf("%s is not shipd (it is %s)", path, bi.Path)
	}
	f := Executable{Path: path, Build: Build{Version: "dev"}}
	for _, s := range bi.Settings {
		switch s.Key {
		case "GOOS":
			f.GOOS = s.Value
		case "GOARCH":
			f.GOARCH = s.Value
		case "-ldflags":
			if m := versionFlag.FindStringSubmatch(s.Value); m != nil {
				f.Build.Version = m[1]
			}
		}
	}
	f.Build.Commit = version.CommitOf(bi.Settings)
	if f.Build.Version == "dev" && f.GOOS == runtime.GOOS && f.GOARCH == runtime.GOARCH {
		// -trimpath (make build) leaves -ldflags out of the build settings: ask the
		// executable, as it answers `shipd --version`.
		if v, err := askVersion(path); err == nil {
			f.Build.Version = v
		}
	}
	return f, nil
}

// askVersion runs `shipd --version` and returns the version it prints ("shipd VERSION
// (COMMIT) GO OS/ARCH").
func askVersion(path string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, path, "--version").Output()
	if err != nil {
		return "", fmt.Errorf("%s --version: %w", path, err)
	}
	fields := strings.Fields(string(out))
	if len(fields) < 2 || fields[0] != "shipd" {
		return "", fmt.Errorf("%s --version printed %q", path, out)
	}
	return fields[1], nil
}

// Finder finds the shipd executable for a host's architecture: Explicit (--binary),
// else shipd-linux-ARCH or shipd in Dir (beside shipctl's executable), of Want's
// version. Its Find is Options.Binary; safe for use from several goroutines.
type Finder struct {
	Explicit string
	Dir      string
	Want     Build

	mu       sync.Mutex
	cache    map[string]found
	mismatch string
}

type found struct {
	data []byte
	from string
	err  error
}

// Mismatch says, after Find, that Explicit is of another version than Want ("": it
// is not): a warning, not an error.
func (f *Finder) Mismatch() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.mismatch
}

// Find returns the executable for linux/arch and where it comes from.
func (f *Finder) Find(arch string) ([]byte, string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if got, ok := f.cache[arch]; ok {
		return got.data, got.from, got.err
	}
	data, from, err := f.look(arch)
	if f.cache == nil {
		f.cache = map[string]found{}
	}
	f.cache[arch] = found{data, from, err}
	return data, from, err
}

func (f *Finder) look(arch string) ([]byte, string, error) {
	platform := "linux/" + arch
	if f.Explicit != "" {
		sf, err := ReadShipd(f.Explicit)
		if err != nil {
			return nil, "", binaryError{fmt.Errorf("--binary %w", err)}
		}
		if sf.GOOS != "linux" || sf.GOARCH != arch {
			return nil, "", binaryError{fmt.Errorf("--binary %s is for %s/%s, the host is %s", f.Explicit, sf.GOOS, sf.GOARCH, platform)}
		}
		if !sf.Build.Matches(f.Want) {
			f.mismatch = fmt.Sprintf("installing shipd %s (--binary) with shipctl %s: the versions differ", sf.Build, f.Want)
		}
		data, err := os.ReadFile(f.Explicit)
		return data, f.Explicit, err
	}
	var why []string
	for _, name := range []string{"shipd-linux-" + arch, "shipd"} {
		path := filepath.Join(f.Dir, name)
		if _, err := os.Stat(path); err != nil {
			why = append(why, name+": not there")
			continue
		}
		sf, err := ReadShipd(path)
		switch {
		case err != nil:
			why = append(why, err.Error())
			continue
		case sf.GOOS != "linux" || sf.GOARCH != arch:
			why = append(why, fmt.Sprintf("%s is for %s/%s", name, sf.GOOS, sf.GOARCH))
			continue
		case !sf.Build.Matches(f.Want):
			why = append(why, fmt.Sprintf("%s is shipd %s, not %s", name, sf.Build, f.Want))
			continue
		}
		data, err := os.ReadFile(path)
		return data, path, err
	}
	hint := "`make build` builds bin/shipd beside bin/shipctl"
	if runtime.GOOS != "linux" || runtime.GOARCH != arch {
		hint = fmt.Sprintf("build it with CGO_ENABLED=0 GOOS=linux GOARCH=%s go build -trimpath -ldflags '-X github.com/shipdeploy/ship/pkg/version.Version=%s' -o %s ./cmd/shipd",
			arch, f.Want.Version, filepath.Join(f.Dir, "shipd-linux-"+arch))
	}
	return nil, "", fmt.Errorf("no shipd %s for %s next to shipctl in %s (%s): %s; or name one with --binary",
		f.Want, platform, f.Dir, strings.Join(why, "; "), hint)
}
