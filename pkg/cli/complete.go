package cli

import (
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/shipdeploy/ship/pkg/compose"
)

// completeArgs gives every command that takes ENV the completion of the environments
// of ship.yaml, and logs its SERVICE arguments the services of the compose file.
func completeArgs(g *Globals, cmd *cobra.Command) {
	_, rest, _ := strings.Cut(cmd.Use, " ")
	if strings.HasPrefix(rest, "ENV") && cmd.ValidArgsFunction == nil {
		services := strings.Contains(rest, "SERVICE")
		cmd.ValidArgsFunction = func(_ *cobra.Command, args []string, _ string) ([]cobra.Completion, cobra.ShellCompDirective) {
			switch {
			case len(args) == 0:
				return completeEnvs(g), cobra.ShellCompDirectiveNoFileComp
			case services:
				return completeServices(g, args[1:]), cobra.ShellCompDirectiveNoFileComp
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
