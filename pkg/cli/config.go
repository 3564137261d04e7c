package cli

import (
	"strings"

	"github.com/shipdeploy/ship/pkg/config"
)

// loadConfig reads ship.yaml: -c, else $SHIP_CONFIG, else ./ship.yaml; SHIP_* variables
// override what the file says.
func (g *Globals) loadConfig() (*config.Config, error) {
	path := g.ConfigPath
	if path == "" {
		path = g.IO.Getenv("SHIP_CONFIG")
	}
	if path == "" {
		path = config.DefaultFile
	}
	cfg, err := config.Load(path)
	if err != nil {
		return nil, err
	}
	if r := strings.TrimSpace(g.IO.Getenv("SHIP_REGISTRY")); r != "" {
		// Checked as the file's registry: is, before it replaces it.
		if err := config.CheckRegistryEnv("SHIP_REGISTRY", strings.TrimRight(r, "/")); err != nil {
			return nil, err
		}
	}
	cfg.ApplyEnv(g.IO.Getenv)
	return cfg, nil
}
