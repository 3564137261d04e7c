package cli

import (
	"context"
	"errors"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/client"
	"github.com/spf13/cobra"

	"github.com/shipdeploy/ship/pkg/deploy"
	"github.com/shipdeploy/ship/pkg/sshhost"
)

// parse runs cmd's flag parsing on args and returns what its run function got.
func parse[O any](t *testing.T, newCmd func(*Globals, func(context.Context, *O) error) *cobra.Command, args ...string) *O {
	t.Helper()
	io, _, _ := testIO("", false)
	var got *O
	cmd := newCmd(&Globals{Factory: NewFactory(io)}, func(_ context.Context, o *O) error {
		got = o
		return nil
	})
	cmd.SetArgs(args)
	if err := cmd.Execute(); err != nil {
		t.Fatalf("%v: %v", args, err)
	}
	if got == nil {
		t.Fatalf("%v: the run function was not called", args)
	}
	return got
}

func TestFlagsToOptions(t *testing.T) {
	t.Run("deploy", func(t *testing.T) {
		got := parse(t, newDeployCmd, "prod", "--sha", "1a2b3c4", "--lock-wait", "5m", "--parallel", "2", "--untested", "--accept-new-host-key")
		want := &deployOptions{hostFlags: hostFlags{AcceptNewHostKey: true}, Env: "prod", SHA: "1a2b3c4", LockWait: 5 * time.Minute, Parallel: 2, Untested: true}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("got %+v, want %+v", got, want)
		}
	})
	t.Run("rollback", func(t *testing.T) {
		got := parse(t, newRollbackCmd, "prod", "abc123", "--parallel", "1")
		want := &rollbackOptions{Env: "prod", SHA: "abc123", Parallel: 1}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("got %+v, want %+v", got, want)
		}
	})
	t.Run("logs", func(t *testing.T) {
		got := parse(t, newLogsCmd, "prod", "web", "worker", "-f", "--tail", "all", "-t")
		want := &logsOptions{Env: "prod", Services: []string{"web", "worker"}, Follow: true, Tail: "all", Timestamps: true}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("got %+v, want %+v", got, want)
		}
	})
	t.Run("history defaults", func(t *testing.T) {
		if got := parse(t, newHistoryCmd, "prod"); got.Limit != 20 || got.Env != "prod" {
			t.Errorf("got %+v", got)
		}
	})
	t.Run("ship", func(t *testing.T) {
		got := parse(t, newShipCmd, "staging", "--no-pull", "--latest", "--allow-dirty")
		want := &shipOptions{Env: "staging", NoPull: true, Latest: true, AllowDirty: true}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("got %+v, want %+v", got, want)
		}
	})
	t.Run("build", func(t *testing.T) {
		got := parse(t, newBuildCmd, "web", "--no-pull")
		if !reflect.DeepEqual(got, &buildOptions{NoPull: true, Services: []string{"web"}}) {
			t.Errorf("got %+v", got)
		}
	})
	t.Run("agent install", func(t *testing.T) {
		got := parse(t, newAgentInstallCmd, "prod", "--ssh-user", "root", "--prefix", "/opt/p", "--force", "--binary", "./shipd")
		want := &agentInstallOptions{Env: "prod", SSHUser: "root", Prefix: "/opt/p", Force: true, Binary: "./shipd"}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("got %+v, want %+v", got, want)
		}
	})
	t.Run("unlock", func(t *testing.T) {
		if got := parse(t, newUnlockCmd, "prod", "--force"); !got.Force || got.Env != "prod" {
			t.Errorf("got %+v", got)
		}
	})
}

// unreachable is a Factory whose hosts never answer, and which notes how it was asked
// to reach them.
type unreachable struct {
	opts  []sshhost.Options
	dests []string
}

func (u *unreachable) factory(io *IOStreams) *Factory {
	f := NewFactory(io)
	f.SSH = func(o sshhost.Options) deploy.Dialer {
		u.opts = append(u.opts, o)
		return func(_ context.Context, dest string) (deploy.Host, error) {
			u.dests = append(u.dests, dest)
			return nil, errors.New("dial tcp: connection refused")
		}
	}
	f.Engine = func() (*client.Client, error) { return nil, errors.New("no engine in this test") }
	// A folder without shipd in it.
	f.Executable = func() (string, error) { return filepath.Join("/nonexistent", "bin", "shipctl"), nil }
	return f
}

const hostsYAML = "app: shop\nregistry: r.example.com\nenvironments:\n  prod:\n    hosts: [deploy@web1]\n    path: /srv/shop\n"

func TestRunWithFakes(t *testing.T) {
	files := map[string]string{"ship.yaml": hostsYAML, "docker-compose.yml": "services:\n  web:\n    image: nginx\n"}
	t.Run("status of an unreachable host", func(t *testing.T) {
		appDir(t, "shop", files)
		io, out, errOut := testIO("", false)
		io.Getenv = func(k string) string {
			return map[string]string{"SHIP_SSH_KEY": "KEY TEXT", "SHIP_AGENT_SOCKET": "/run/other.sock", "DOCKER_CONFIG": t.TempDir()}[k]
		}
		u := &unreachable{}
		g := &Globals{Factory: u.factory(io)}
		err := runStatus(context.Background(), g, &statusOptions{Env: "prod", hostFlags: hostFlags{AcceptNewHostKey: true}})
		if err == nil || exitCode(err) != ExitError || err.Error() != "status of prod: 1 of 1 host(s) could not be read" {
			t.Errorf("err = %v (exit %d)", err, exitCode(err))
		}
		if want := "deploy@web1: cannot read it: dial tcp: connection refused\n"; out.String() != want {
			t.Errorf("stdout %q, want %q; stderr %q", out, want, errOut)
		}
		if len(u.opts) != 1 || u.opts[0].SSH.KeyText != "KEY TEXT" || u.opts[0].AgentSocket != "/run/other.sock" || !u.opts[0].SSH.AcceptNewHostKey {
			t.Errorf("SSH options: %+v", u.opts)
		}
		if strings.Join(u.dests, ",") != "deploy@web1" {
			t.Errorf("dialed %v", u.dests)
		}
	})
	t.Run("lock through the root command", func(t *testing.T) {
		appDir(t, "shop", files)
		io, out, errOut := testIO("", false)
		u := &unreachable{}
		if code := run([]string{"lock", "prod", "--json"}, u.factory(io)); code != ExitError {
			t.Errorf("exit %d; stdout %q", code, out)
		}
		if !strings.Contains(errOut.String(), "error: ") || !strings.Contains(errOut.String(), "connection refused") {
			t.Errorf("stderr %q", errOut)
		}
	})
	t.Run("agent install with no shipd beside shipctl", func(t *testing.T) {
		appDir(t, "shop", files)
		io, out, _ := testIO("", false)
		u := &unreachable{}
		g := &Globals{Factory: u.factory(io)}
		err := runAgentInstall(context.Background(), g, &agentInstallOptions{Env: "prod", SSHUser: "root"})
		if err == nil || !strings.HasPrefix(err.Error(), "agent install: deploy@web1: dial tcp: connection refused") {
			t.Errorf("err = %v", err)
		}
		if strings.Join(u.dests, ",") != "root@web1" {
			t.Errorf("dialed %v, want root@web1", u.dests)
		}
		if !strings.Contains(out.String(), "==> deploy@web1: agent install FAILED: dial tcp: connection refused") {
			t.Errorf("stdout %q", out)
		}
	})
	t.Run("build without an engine", func(t *testing.T) {
		dir := appDir(t, "shop", map[string]string{"ship.yaml": hostsYAML, "docker-compose.yml": "services:\n  web:\n    build: .\n    image: shop/web\n", "Dockerfile": "FROM scratch\n"})
		git(t, dir, "init", "-q")
		git(t, dir, "add", ".")
		git(t, dir, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "first")
		io, out, _ := testIO("", false)
		io.Getenv = func(k string) string { return map[string]string{"DOCKER_CONFIG": t.TempDir()}[k] }
		u := &unreachable{}
		err := runBuild(context.Background(), &Globals{Factory: u.factory(io)}, &buildOptions{})
		if err == nil || err.Error() != "connect to the Docker engine: no engine in this test" {
			t.Errorf("err = %v", err)
		}
		if out.Len() != 0 {
			t.Errorf("stdout before the engine answered: %q", out)
		}
	})
}

func git(t *testing.T, dir string, args ...string) {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("git %v: %v\n%s", args, err, out)
	}
}
