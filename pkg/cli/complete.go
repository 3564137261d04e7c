package cli

import (
	"context"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/shipdeploy/ship/pkg/compose"
	"github.com/shipdeploy/ship/pkg/deploy"
	"github.com/shipdeploy/ship/pkg/release"
)

// completeTimeout bounds the reading of the hosts' releases for a completion.
const completeTimeout = 5 * time.Second

// completeReleases are the releases the hosts of env keep, newest first, each with
// its subject: what rollback ENV SHA can go back to. The hosts are read without
// asking anything (no passphrase) and without a word on the terminal.
func completeReleases(ctx context.Context, g *Globals, envName string) []cobra.Completion {
	if ctx == nil {
		ctx = context.Background()
	}
	quiet := *g.IO
	quiet.InTTY = false
	f := *g.Factory
	f.IO = &quiet
	qg := *g
	qg.Factory = &f
	cfg, err := qg.loadConfig()
	if err != nil {
		return nil
	}
	env, err := cfg.Env(envName)
	if err != nil {
		return nil
	}
	h, err := newHostAccess(&qg, cfg, env, hostFlags{}, newPrinter(&qg))
	if err != nil {
		return nil
	}
	h.target.Progress = nil
	ctx, cancel := context.WithTimeout(ctx, completeTimeout)
	defer cancel()
	hosts, err := deploy.History(ctx, h.target, 1)
	if err != nil {
		return nil
	}
	seen := map[string]bool{}
	var out []cobra.Completion
	for _, hh := range hosts {
		for _, r := range hh.Releases {
			short := release.Short(r.SHA)
			if seen[short] {
				continue
			}
			seen[short] = true
			out = append(out, cobra.CompletionWithDesc(short, r.Subject))
		}
	}
	return out
}

// completeArgs gives every command that takes ENV the completion of the environments
// of ship.yaml, and logs its SERVICE arguments the services of the compose file.
func completeArgs(g *Globals, cmd *cobra.Command) {
	_, rest, _ := strings.Cut(cmd.Use, " ")
	if strings.HasPrefix(rest, "ENV") && cmd.ValidArgsFunction == nil {
		services := strings.Contains(rest, "SERVICE")
		releases := strings.Contains(rest, "[SHA]")
		cmd.ValidArgsFunction = func(c *cobra.Command, args []string, _ string) ([]cobra.Completion, cobra.ShellCompDirective) {
			switch {
			case len(args) == 0:
				return completeEnvs(g), cobra.ShellCompDirectiveNoFileComp
			case services:
				return completeServices(g, args[1:]), cobra.ShellCompDirectiveNoFileComp
			case releases && len(args) == 1:
				return completeReleases(c.Context(), g, args[0]), cobra.ShellCompDirectiveNoFileComp
			}
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
	}
	for _, c := range cmd.Commands() {
		completeArgs(g, c)
	}
}

func completeEnvs(g *Globals) []cobra.Completion {
	cfg, err := g.loadConfig()
	if err != nil {
		return nil
	}
	return cfg.EnvNames()
}

// completeServices are the compose file's services not given yet, read as written.
func completeServices(g *Globals, given []string) []cobra.Completion {
	cfg, err := g.loadConfig()
	if err != nil {
		return nil
	}
	data, err := os.ReadFile(cfg.Path(cfg.Compose))
	if err != nil {
		return nil
	}
	facts, err := compose.ReadFacts(data)
	if err != nil {
		return nil
	}
	var out []cobra.Completion
	for _, s := range facts.Services {
		if !contains(given, s.Name) {
			out = append(out, s.Name)
		}
	}
	return out
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
