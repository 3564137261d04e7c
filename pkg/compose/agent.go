package compose

import (
	"fmt"
	"sort"
	"strings"

	"github.com/compose-spec/compose-go/v2/types"
)

// The rules of a blue-green deploy through shipd (environments with agent: true).
// shipd runs two containers of a routed service at once during a swap, reaches the new
// one on the project network, and switches traffic before the old one stops; so a routed
// service cannot:
//
//   - publish ports (two containers cannot bind one host port; shipd serves
//     x-ship.listen instead),
//   - have a container_name (two containers cannot share a name),
//   - have a network_mode (shipd reaches the container on the project network),
//   - mount a named volume writable (never two copies on one volume; read_only is fine),
//
// and a service that is not routed cannot have x-ship.health (shipd checks it on the
// routed port; agentless deploys check it on the first published port too),
//
// and a pre-deploy job, which runs before any switch, cannot depend on a routed service
// (the new one does not serve yet, the old one is about to go).
//
// shipctl checks these before it uploads anything (deploy.Prepare, for agent
// environments); shipd checks them again before it touches anything (pkg/agent).

// AgentError lists what shipd cannot deploy blue-green, each problem with its service
// and, where known, file:line. It matches ErrInvalid.
type AgentError struct {
	Files    []string
	Problems []Problem
}

func (e *AgentError) Error() string {
	var b strings.Builder
	what := "the release"
	if len(e.Files) > 0 {
		what = strings.Join(e.Files, ", ")
	}
	fmt.Fprintf(&b, "%s: %d problem(s) that shipd cannot deploy blue-green (agent: true):", what, len(e.Problems))
	for _, p := range e.Problems {
		b.WriteString("\n  " + p.String())
	}
	return b.String()
}

// Is makes errors.Is(err, ErrInvalid) true.
func (e *AgentError) Is(target error) bool { return target == ErrInvalid }

// AgentProblems lists, by service (sorted), what shipd cannot deploy blue-green. files
// are where the project was read from, for file:line in the problems; none: the
// project's ComposeFiles.
func (p *Project) AgentProblems(files ...string) []Problem {
	if len(files) == 0 {
		files = p.ComposeFiles
	}
	loc := newLocator(files)
	where := func(path ...string) Problem {
		pr := loc.at(path)
		if pr.File == "" && len(files) > 0 {
			pr.File = files[len(files)-1]
		}
		return pr
	}
	var problems []Problem
	add := func(pr Problem, format string, a ...any) {
		pr.Msg = fmt.Sprintf(format, a...)
		problems = append(problems, pr)
	}
	for _, name := range p.ServicesInOrder() {
		s, ship := p.Services[name], p.Ship[name]
		if ship.Job != "" {
			deps := make([]string, 0, len(s.DependsOn))
			for dep := range s.DependsOn {
				deps = append(deps, dep)
			}
			sort.Strings(deps)
			for _, dep := range deps {
				if p.Ship[dep].Routed() {
					add(where("services", name, "depends_on", dep), "service %q: a pre-deploy job runs before any switch, so it cannot depend on the routed service %q", name, dep)
				}
			}
			continue
		}
		if !ship.Routed() {
			if ship.Health != "" {
				add(where("services", name, ShipKey, "health"), "service %q: shipd checks %s.health on the routed port, and the service is not routed; add port and listen, or remove health (shipd then waits for the image's HEALTHCHECK)", name, ShipKey)
			}
			continue
		}
		if len(s.Ports) > 0 {
			add(where("services", name, "ports"), "service %q publishes ports, but shipd serves it on %s (x-ship.listen) and runs two containers of it during a deploy; remove ports: from the service", name, ship.Addresses())
		}
		if s.ContainerName != "" {
			add(where("services", name, "container_name"), "service %q has container_name %q, but shipd runs two containers of it during a deploy; remove container_name", name, s.ContainerName)
		}
		if s.NetworkMode != "" {
			add(where("services", name, "network_mode"), "service %q has network_mode %q, but shipd reaches it on the project network; remove network_mode", name, s.NetworkMode)
		}
		for i, v := range s.Volumes {
			if v.Type == types.VolumeTypeVolume && v.Source != "" && !v.ReadOnly {
				add(where("services", name, "volumes", fmt.Sprint(i)), "service %q mounts the named volume %q writable, but shipd runs two containers of it during a deploy (never two copies on one volume); mount it read_only, or move the data to a service that is not routed", name, v.Source)
			}
		}
	}
	return problems
}

// CheckAgent refuses, all at once, what shipd cannot deploy blue-green (see
// AgentProblems): an *AgentError, or nil.
func (p *Project) CheckAgent(files ...string) error {
	problems := p.AgentProblems(files...)
	if len(problems) == 0 {
		return nil
	}
	if len(files) == 0 {
		files = p.ComposeFiles
	}
	return &AgentError{Files: files, Problems: problems}
}
