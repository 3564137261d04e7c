package cli

import (
	"github.com/spf13/cobra"
)

func newCompletionCmd(g *Globals) *cobra.Command {
	return &cobra.Command{
		Use:   "completion bash|zsh|fish|powershell",
		Short: "Print a shell completion script",
		Long: `Print a completion script for your shell. It completes commands and flags, the
environment names of ship.yaml (deploy, ship, status, rollback, ...), the
services of the compose file (logs ENV SERVICE) and the releases the hosts keep
(rollback ENV SHA: read over SSH, without a prompt, for at most 5 seconds).

bash needs the bash-completion package (apt install bash-completion, or
brew install bash-completion@2), loaded by your ~/.bashrc; zsh needs compinit.`,
		Example: `  # bash, this shell only:
  source <(shipctl completion bash)
  # bash, for good:
  shipctl completion bash > ~/.local/share/bash-completion/completions/shipctl
  # zsh:
  shipctl completion zsh > "${fpath[1]}/_shipctl"
  # fish:
  shipctl completion fish > ~/.config/fish/completions/shipctl.fish`,
		Args:      cobra.ExactArgs(1),
		ValidArgs: []string{"bash", "zsh", "fish", "powershell"},
		RunE: func(cmd *cobra.Command, args []string) error {
			root := cmd.Root()
			out := g.IO.Out
			switch args[0] {
			case "bash":
				return root.GenBashCompletionV2(out, true)
			case "zsh":
				return root.GenZshCompletion(out)
			case "fish":
				return root.GenFishCompletion(out, true)
			case "powershell":
				return root.GenPowerShellCompletionWithDesc(out)
			}
			return usageErrorf("completion: unknown shell %q (want bash, zsh, fish or powershell)", args[0])
		},
	}
}
