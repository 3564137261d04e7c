package cli

import (
	"encoding/json"
	"fmt"
	"runtime"

	"github.com/shipdeploy/ship/pkg/version"
	"github.com/spf13/cobra"
)

func newVersionCmd(g *Globals) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print shipctl's version",
		Long: `Print shipctl's version, the commit it was built from, its Go version and
platform. shipd's version must match it (shipctl agent install puts the shipd of
this version on the hosts).`,
		Example: `  shipctl version
  shipctl version --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if g.JSON {
				return json.NewEncoder(g.IO.Out).Encode(map[string]string{
					"version": version.Version, "commit": version.Commit(),
					"go": runtime.Version(), "platform": runtime.GOOS + "/" + runtime.GOARCH,
				})
			}
			_, err := fmt.Fprintln(g.IO.Out, version.String("shipctl"))
			return err
		},
	}
}
