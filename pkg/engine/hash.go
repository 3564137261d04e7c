package engine

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"

	"github.com/compose-spec/compose-go/v2/types"
)

// ConfigHash is the sha256, in hex, of the service's canonical configuration: its JSON
// without the fields that do not change the container (build, develop, pull_policy,
// scale and deploy.replicas, depends_on, profiles, attach; x- extensions are never
// part of it). Up stores it in the com.docker.compose.config-hash label and recreates
// a container whose label differs.
func ConfigHash(s types.ServiceConfig) (string, error) {
	s.Build = nil
	s.Develop = nil
	s.PullPolicy = ""
	s.PullRefreshAfter = ""
	s.Scale = nil
	if s.Deploy != nil {
		d := *s.Deploy // a copy: the caller's project must not change
		d.Replicas = nil
		s.Deploy = &d
	}
	s.DependsOn = nil
	s.Profiles = nil
	s.Attach = nil
	data, err := json.Marshal(s)
	if err != nil {
		return "", fmt.Errorf("hash service %s: %w", s.Name, err)
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:]), nil
}
