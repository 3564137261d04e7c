package install

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// builtShipd builds cmd/shipd for linux with Version v1.2.3 linked in, with more go
// build flags (-trimpath).
func builtShipd(t *testing.T, flags ...string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "shipd")
	args := append(append([]string{"build"}, flags...), "-ldflags", "-X github.com/shipdeploy/ship/pkg/version.Version=v1.2.3", "-o", bin, "github.com/shipdeploy/ship/cmd/shipd")
	cmd := exec.Command("go", args...)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build shipd: %v\n%s", err, out)
	}
	return bin
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, data, 0o755); err != nil {
		t.Fatal(err)
	}
}

// TestReadShipdTrimpath: -trimpath, as make build uses it, leaves -ldflags out of the
// build settings; the version is the one shipd --version prints.
func TestReadShipdTrimpath(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("shipd for linux runs only here on linux")
	}
	sf, err := ReadShipd(builtShipd(t, "-trimpath"))
	if err != nil || sf.Build.Version != "v1.2.3" {
		t.Fatalf("read %+v, %v; want version v1.2.3", sf, err)
	}
}

func TestFinder(t *testing.T) {
	bin := builtShipd(t)
	sf, err := ReadShipd(bin)
	if err != nil {
		t.Fatal(err)
	}
	if sf.GOOS != "linux" || sf.GOARCH != runtime.GOARCH || sf.Build.Version != "v1.2.3" {
		t.Fatalf("read %+v", sf)
	}
	arch := runtime.GOARCH
	other := "arm64"
	if arch == "arm64" {
		other = "amd64"
	}
	want := Build{Version: "v1.2.3", Commit: sf.Build.Commit}

	t.Run("shipd beside shipctl", func(t *testing.T) {
		dir := t.TempDir()
		copyFile(t, bin, filepath.Join(dir, "shipd"))
		f := &Finder{Dir: dir, Want: want}
		data, from, err := f.Find(arch)
		if err != nil || from != filepath.Join(dir, "shipd") || len(data) == 0 {
			t.Fatalf("find: %s, %v", from, err)
		}
		// Another architecture: shipd is the wrong one, and the hint says how to build it.
		_, _, err = f.Find(other)
		if err == nil || !strings.Contains(err.Error(), "shipd is for linux/"+arch) || !strings.Contains(err.Error(), "GOARCH="+other) || !strings.Contains(err.Error(), "shipd-linux-"+other) {
			t.Errorf("find %s: %v", other, err)
		}
		if errors.Is(err, ErrBinary) {
			t.Errorf("a shipd that is not there is not the user's --binary: %v", err)
		}
	})
	t.Run("shipd-linux-ARCH first", func(t *testing.T) {
		dir := t.TempDir()
		copyFile(t, bin, filepath.Join(dir, "shipd-linux-"+arch))
		if err := os.WriteFile(filepath.Join(dir, "shipd"), []byte("not a binary"), 0o755); err != nil {
			t.Fatal(err)
		}
		f := &Finder{Dir: dir, Want: want}
		if _, from, err := f.Find(arch); err != nil || filepath.Base(from) != "shipd-linux-"+arch {
			t.Errorf("find: %s, %v", from, err)
		}
	})
	t.Run("another version", func(t *testing.T) {
		dir := t.TempDir()
		copyFile(t, bin, filepath.Join(dir, "shipd"))
		f := &Finder{Dir: dir, Want: Build{Version: "v2.0.0"}}
		_, _, err := f.Find(arch)
		if err == nil || !strings.Contains(err.Error(), "shipd is shipd v1.2.3") || !strings.Contains(err.Error(), "not v2.0.0") {
			t.Errorf("find: %v", err)
		}
	})
	t.Run("not shipd", func(t *testing.T) {
		self, err := os.Executable()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ReadShipd(self); err == nil || !strings.Contains(err.Error(), "is not shipd") {
			t.Errorf("ReadShipd of the test binary: %v", err)
		}
	})
	t.Run("--binary", func(t *testing.T) {
		f := &Finder{Explicit: bin, Want: Build{Version: "v2.0.0"}}
		if _, from, err := f.Find(arch); err != nil || from != bin || !strings.Contains(f.Mismatch(), "the versions differ") {
			t.Errorf("find: %s, %v, %q", from, err, f.Mismatch())
		}
		f = &Finder{Explicit: bin, Want: want}
		_, _, err := f.Find(other)
		if !errors.Is(err, ErrBinary) || !strings.HasPrefix(err.Error(), "--binary "+bin+" is for linux/"+arch) {
			t.Errorf("--binary for another architecture: %v", err)
		}
	})
}

func TestBuild(t *testing.T) {
	a := Build{Version: "v1", Commit: "abc"}
	for _, tc := range []struct {
		b    Build
		want bool
	}{
		{Build{Version: "v1", Commit: "abc"}, true},
		{Build{Version: "v1"}, true},
		{Build{Version: "v1", Commit: "def"}, false},
		{Build{Version: "v2", Commit: "abc"}, false},
	} {
		if got := a.Matches(tc.b); got != tc.want {
			t.Errorf("%s matches %s: %v", a, tc.b, got)
		}
	}
	if a.String() != "v1 (abc)" || (Build{Version: "v1"}).String() != "v1" {
		t.Errorf("String: %q", a)
	}
}
