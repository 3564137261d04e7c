// Package configs holds ship's example configuration files: ship.yaml for an app,
// and shipd.yaml and shipd.service for a server. `shipctl agent install` writes the
// last two to the hosts from the copies embedded here, so the files in this folder are
// the only source of both.
package configs

import _ "embed"

// ShipdService is shipd's systemd unit (shipd.service).
//
//go:embed shipd.service
var ShipdService string

// ShipdYAML is shipd's configuration with every default written out (shipd.yaml).
//
//go:embed shipd.yaml
var ShipdYAML string
