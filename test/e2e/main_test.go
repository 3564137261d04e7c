// Package e2e runs the shipctl binary the way a user does, against the real Docker
// engine, and asserts on what the user sees: exit codes, output, containers.
package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shipdeploy/ship/test/testenv"
)

var shipctl string

// TestMain builds shipctl into the run's own temporary folder; testenv.Main sweeps
// what killed runs left and removes the folder at the end.
func TestMain(m *testing.M) {
	testenv.Main(m, func() error {
		dir, err := os.MkdirTemp("", "ship-e2e-")
		if err != nil {
			return err
		}
		shipctl = filepath.Join(dir, "shipctl")
		return testenv.Build(shipctl, "./cmd/shipctl")
	})
}

// result is what a user sees of one shipctl run.
type result struct {
	code   int
	stdout string
	stderr string
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\n--- stdout:\n%s\n--- stderr:\n%s", r.code, r.stdout, r.stderr)
}

// run runs shipctl in dir with extra environment variables.
func run(t *testing.T, dir string, env []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testenv.Scale(5*time.Minute))
	defer cancel()
	cmd := testenv.Tied(exec.CommandContext(ctx, shipctl, args...))
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run shipctl %v: %v", args, err)
	}
	return result{code: code, stdout: stdout.String(), stderr: stderr.String()}
}

// exampleRepo is the example app in a git checkout of its own, named appName(t) in
// its ship.yaml: what its runs create on the engine is this test's alone.
func exampleRepo(t *testing.T) string {
	t.Helper()
	app := appName(t)
	testenv.Track(t, "project", app) // its test projects, swept after a killed run
	return testenv.ExampleRepo(t, func(rel string, data []byte) []byte {
		if rel != "ship.yaml" {
			return data
		}
		named := bytes.Replace(data, []byte("\napp: example\n"), []byte("\napp: "+app+"\n"), 1)
		if bytes.Equal(named, data) {
			t.Fatal("fixture: examples/ship.yaml has no line \"app: example\"")
		}
		return named
	})
}

// appName is the example app's name in t's checkouts: "example-" and a hash of the
// test's name and its process (testenv.Owner), unique among the tests of every run on
// this engine, concurrent ones too.
func appName(t *testing.T) string {
	t.Helper()
	owner, err := testenv.Owner()
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(owner + "\x00" + t.Name()))
	return "example-" + hex.EncodeToString(sum[:4])
}

func git(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=ship", "GIT_AUTHOR_EMAIL=ship@example.com",
		"GIT_COMMITTER_NAME=ship", "GIT_COMMITTER_EMAIL=ship@example.com")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}
