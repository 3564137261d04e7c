package cli

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/shipdeploy/ship/pkg/agentapi"
	"github.com/shipdeploy/ship/pkg/config"
	"github.com/shipdeploy/ship/pkg/deploy"
	"github.com/shipdeploy/ship/pkg/image"
	"github.com/shipdeploy/ship/pkg/install"
	"github.com/shipdeploy/ship/pkg/notify"
	"github.com/shipdeploy/ship/pkg/redact"
	"github.com/shipdeploy/ship/pkg/sshhost"
	"github.com/shipdeploy/ship/pkg/sshx"
	"github.com/shipdeploy/ship/pkg/term"
)

// hostFlags are the flags of every command that reaches the hosts.
type hostFlags struct {
	AcceptNewHostKey bool
}

func (h *hostFlags) register(cmd *cobra.Command) {
	cmd.Flags().BoolVar(&h.AcceptNewHostKey, "accept-new-host-key", false,
		"trust the key of a host no known_hosts file knows, and record it in ~/.ssh/known_hosts (a changed key is refused all the same)")
}

// hostAccess is how a command reaches an environment's hosts, with the secrets it
// must scrub and the registry credentials it sends.
type hostAccess struct {
	target   deploy.Target
	redact   *redact.Redactor
	keychain *image.Keychain
}

// environment loads ship.yaml and opens the way to the hosts of its environment name:
// what every command that works on hosts starts with.
func (g *Globals) environment(name string, f hostFlags) (*config.Config, *config.Environment, *term.Printer, *hostAccess, error) {
	cfg, err := g.loadConfig()
	if err != nil {
		return nil, nil, nil, nil, err
	}
	env, err := cfg.Env(name)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	p := newPrinter(g)
	h, err := newHostAccess(g, cfg, env, f, p)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	return cfg, env, p, h, nil
}

func newHostAccess(g *Globals, cfg *config.Config, env *config.Environment, f hostFlags, p *term.Printer) (*hostAccess, error) {
	redact := redact.New()
	if env.EnvFile != "" {
		if err := redact.AddEnvFile(cfg.Path(env.EnvFile)); err != nil {
			return nil, err
		}
	}
	kc, err := keychain(g, cfg)
	if err != nil {
		return nil, err
	}
	redact.Also(kc.Redact)
	opts := sshx.Options{
		AcceptNewHostKey: f.AcceptNewHostKey,
		KeyText:          g.IO.Getenv("SHIP_SSH_KEY"),
		Logger:           g.Logger(),
	}
	if env.KnownHosts != "" {
		opts.KnownHostsFiles = []string{cfg.Path(env.KnownHosts)}
	}
	if g.IO.InTTY {
		opts.Passphrase = g.IO.Passphrase
	}
	lock, err := lockEnv(g.IO.Getenv)
	if err != nil {
		return nil, err
	}
	return &hostAccess{
		redact:   redact,
		keychain: kc,
		target: deploy.Target{
			App: cfg.App,
			Env: env,
			Dial: g.SSH(sshhost.Options{
				SSH: opts, DockerSocket: env.DockerSocket, RegistryAuth: image.PullAuth(kc),
				AgentSocket: g.IO.Getenv("SHIP_AGENT_SOCKET"),
			}),
			RegistryAuth: image.PullAuth(kc),
			Redactor:     redact,
			Progress:     func(e deploy.Event) { renderDeployEvent(g, p, e) },
			LockRefresh:  lock.LockRefresh,
			LockMachine:  lock.LockMachine,
			LockPID:      lock.LockPID,
		},
	}, nil
}

// lockEnv reads the lock's settings from the environment: SHIP_LOCK_REFRESH (how
// often a deploy refreshes its lock's heartbeat) and SHIP_LOCK_AS (machine:pid, the
// identity written in the lock instead of this one's: a test seam).
func lockEnv(getenv func(string) string) (deploy.Target, error) {
	var t deploy.Target
	if getenv == nil {
		return t, nil
	}
	if v := getenv("SHIP_LOCK_REFRESH"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return t, usageErrorf("SHIP_LOCK_REFRESH=%q: want a duration above 0, e.g. 10s", v)
		}
		t.LockRefresh = d
	}
	if v := getenv("SHIP_LOCK_AS"); v != "" {
		machine, pid, ok := strings.Cut(v, ":")
		n, err := strconv.Atoi(pid)
		if !ok || machine == "" || err != nil || n <= 0 {
			return t, usageErrorf("SHIP_LOCK_AS=%q: want MACHINE:PID", v)
		}
		t.LockMachine, t.LockPID = machine, n
	}
	return t, nil
}

// notifier is the webhook of ship.yaml, or nil.
func notifier(cfg *config.Config) *notify.Webhook {
	if cfg.Notify.Webhook == "" {
		return nil
	}
	return &notify.Webhook{URL: cfg.Notify.Webhook}
}

// installDialer reaches the hosts for agent install through the SSH connections of
// pkg/deploy, which run commands and reach shipd as well.
func installDialer(dial deploy.Dialer) install.Dialer {
	return func(ctx context.Context, dest string) (install.Host, error) {
		h, err := dial(ctx, dest)
		if err != nil {
			return nil, err
		}
		rem, ok := h.(remote)
		if !ok {
			_ = h.Close()
			return nil, errors.New("this connection cannot run commands")
		}
		return installHost{Host: h, remote: rem}, nil
	}
}

// remote is what the SSH host of pkg/deploy offers beyond deploy.Host.
type remote interface {
	Run(ctx context.Context, cmd string) (stdout, stderr []byte, err error)
	LoginUser() string
}

type installHost struct {
	deploy.Host
	remote
}

func (h installHost) ShipdStatus(ctx context.Context) (*agentapi.Status, error) {
	if a, ok := h.Host.(deploy.AgentHost); ok {
		if sh := a.Shipd(); sh != nil {
			return sh.Status(ctx)
		}
	}
	return nil, errors.New("this connection cannot reach shipd")
}
