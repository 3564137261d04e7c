package compose

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/compose-spec/compose-go/v2/types"
	"gopkg.in/yaml.v3"
)

// SwarmKeys names the deploy keys of s that only Swarm acts on (deploy.labels,
// placement, update_config, rollback_config, endpoint_mode), sorted. docker compose
// accepts and ignores them outside Swarm; ship does the same and says so in the plan.
func SwarmKeys(s types.ServiceConfig) []string {
	d := s.Deploy
	if d == nil {
		return nil
	}
	var keys []string
	add := func(key string, set bool) {
		if set {
			keys = append(keys, "deploy."+key)
		}
	}
	add("endpoint_mode", d.EndpointMode != "")
	add("labels", len(d.Labels) > 0)
	p := d.Placement
	add("placement", len(p.Constraints) > 0 || len(p.Preferences) > 0 || p.MaxReplicas != 0 || len(p.Extensions) > 0)
	add("rollback_config", d.RollbackConfig != nil)
	add("update_config", d.UpdateConfig != nil)
	return keys
}

// portProblems finds, when compose-go refused the files, the short-syntax port
// entries it cannot parse ("8080:http") and long-syntax targets that are not port
// numbers, each named by service and file:line: compose-go says only "invalid
// containerPort: http". Entries with a variable are left to it.
func portProblems(paths []string) []Problem {
	var problems []Problem
	loc := newLocator(paths)
	for i, root := range loc.roots {
		file := loc.files[i]
		_, services := child(root, "services")
		if services == nil || services.Kind != yaml.MappingNode {
			continue
		}
		for j := 0; j+1 < len(services.Content); j += 2 {
			name := services.Content[j].Value
			_, ports := child(services.Content[j+1], "ports")
			if ports == nil || ports.Kind != yaml.SequenceNode {
				continue
			}
			for _, e := range ports.Content {
				if e.Kind == yaml.MappingNode {
					// Long syntax: target is the container port, a number.
					if _, t := child(e, "target"); t != nil && t.Kind == yaml.ScalarNode && !strings.Contains(t.Value, "$") {
						if n, err := strconv.Atoi(t.Value); err != nil || n < 1 || n > 65535 {
							problems = append(problems, Problem{File: file, Line: t.Line, Msg: fmt.Sprintf(
								"service %q: ports target %q is not a container port; write a number, e.g. target: 80", name, t.Value)})
						}
					}
					continue
				}
				if e.Kind != yaml.ScalarNode || strings.Contains(e.Value, "$") {
					continue
				}
				if _, err := types.ParsePortConfig(e.Value); err != nil {
					problems = append(problems, Problem{File: file, Line: e.Line, Msg: fmt.Sprintf(
						"service %q: ports entry %q: %v; write [HOST:]CONTAINER[/PROTOCOL] with numbers, e.g. \"8080:80\"", name, e.Value, err)})
				}
			}
		}
	}
	return problems
}
