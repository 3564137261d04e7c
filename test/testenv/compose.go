package testenv

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// composeModule is the Go module docker compose v2 is built from, and its main package.
const (
	composeModule = "github.com/docker/compose/v2"
	composeMain   = composeModule + "/cmd"
)

var (
	composeMu    sync.Mutex
	composeBuilt = map[string]string{}
)

// Compose returns the path of a docker compose v2 binary of release version (e.g.
// "2.40.3", the value of its com.docker.compose.version label), run standalone:
// `docker-compose --project-name NAME -f FILE up -d`. The binary is built from its Go
// module through the module proxy by the Go toolchain, once, and kept in the user's
// cache folder under the version (ship/docker-compose/v<version>/), so later runs reuse
// it. A build that fails is Missing: a failure in CI, a skip elsewhere.
func Compose(t testing.TB, version string) string {
	t.Helper()
	composeMu.Lock()
	defer composeMu.Unlock()
	if bin, ok := composeBuilt[version]; ok {
		return bin
	}
	bin, err := composeBinary(version)
	if err != nil {
		Missing(t, "docker compose "+version, err.Error())
		return ""
	}
	composeBuilt[version] = bin
	return bin
}

// ComposeCacheDir is the folder the compose binary of version is cached in.
func ComposeCacheDir(version string) (string, error) {
	base, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("no user cache folder (set XDG_CACHE_HOME or HOME): %w", err)
	}
	return filepath.Join(base, "ship", "docker-compose", "v"+strings.TrimPrefix(version, "v")), nil
}

// composeBinary returns the cached binary, building it first when it is not there.
func composeBinary(version string) (string, error) {
	version = strings.TrimPrefix(version, "v")
	dir, err := ComposeCacheDir(version)
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "docker-compose")
	if ready(bin) {
		return bin, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	// One build at a time across test processes (go test runs packages in parallel):
	// the others wait for it and use its binary.
	lock, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", fmt.Errorf("lock %s: %w", lock.Name(), err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	if ready(bin) {
		return bin, nil
	}
	// Built into a folder of its own and renamed: a process that does not take the
	// lock never sees half a binary.
	tmp, err := os.MkdirTemp(dir, "build-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	if err := buildCompose(tmp, version); err != nil {
		return "", err
	}
	if err := os.Rename(filepath.Join(tmp, "docker-compose"), bin); err != nil {
		return "", err
	}
	return bin, nil
}

func ready(bin string) bool {
	fi, err := os.Stat(bin)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// buildCompose builds docker compose version into dir/docker-compose, in a module of
// its own in dir that requires compose's module. `go install module/cmd@version` would
// be shorter, but compose's go.mod has exclude directives, which go install refuses:
// they are copied here, so the build selects the versions compose's own build selects.
func buildCompose(dir, version string) error {
	goCmd := func(args ...string) ([]byte, error) {
		cmd := exec.Command("go", args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOWORK=off", "GOFLAGS=")
		out, err := cmd.CombinedOutput()
		if err != nil {
			return out, fmt.Errorf("go %s (needs the Go module proxy): %v\n%s", strings.Join(args, " "), err, out)
		}
		return out, nil
	}
	mod := composeModule + "@v" + version
	gomod := "module ship.test/compose\n\ngo 1.24\n"
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte(gomod), 0o644); err != nil {
		return err
	}
	out, err := goCmd("mod", "download", "-json", mod)
	if err != nil {
		return err
	}
	var dl struct{ GoMod string }
	if err := json.Unmarshal(out, &dl); err != nil {
		return fmt.Errorf("go mod download %s: %w", mod, err)
	}
	out, err = goCmd("mod", "edit", "-json", dl.GoMod)
	if err != nil {
		return err
	}
	var theirs struct {
		Exclude []struct{ Path, Version string }
	}
	if err := json.Unmarshal(out, &theirs); err != nil {
		return fmt.Errorf("read %s's go.mod: %w", mod, err)
	}
	for _, x := range theirs.Exclude {
		if _, err := goCmd("mod", "edit", "-exclude="+x.Path+"@"+x.Version); err != nil {
			return err
		}
	}
	if _, err := goCmd("get", composeMain+"@v"+version); err != nil {
		return err
	}
	// internal.Version is what compose writes in its com.docker.compose.version label;
	// without it a build says "dev" and writes an empty label.
	ldflags := "-s -w -X " + composeModule + "/internal.Version=v" + version
	_, err = goCmd("build", "-trimpath", "-ldflags", ldflags, "-o", filepath.Join(dir, "docker-compose"), composeMain)
	return err
}
