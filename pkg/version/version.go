// Package version holds the build's version, set at link time.
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// Version is set with -ldflags "-X github.com/shipdeploy/ship/pkg/version.Version=v1.2.3".
var Version = "dev"

// Commit is the git commit the binary was built from, when known.
func Commit() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return ""
	}
	return CommitOf(info.Settings)
}

// CommitOf is the commit a Go build's settings name (vcs.revision, 12 hex digits, with
// "-dirty" for vcs.modified); "" when they name none. shipctl reads shipd's with it.
func CommitOf(settings []debug.BuildSetting) string {
	var rev, dirty string
	for _, s := range settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "-dirty"
			}
		}
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if rev == "" {
		return ""
	}
	return rev + dirty
}

// String is the one-line version shown by `shipctl version` and `shipd --version`.
func String(program string) string {
	s := fmt.Sprintf("%s %s", program, Version)
	if c := Commit(); c != "" {
		s += " (" + c + ")"
	}
	return s + fmt.Sprintf(" %s %s/%s", runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
