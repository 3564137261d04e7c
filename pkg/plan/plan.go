// Package plan compares what a release wants on a host with what the host runs, and
// says what a deploy will do there, service by service. It does no I/O.
package plan

import (
	"fmt"
	"sort"
	"strings"

	"github.com/compose-spec/compose-go/v2/types"

	"github.com/shipdeploy/ship/pkg/compose"
	"github.com/shipdeploy/ship/pkg/engine"
)

// Action is what happens to one service.
type Action string

const (
	Create    Action = "create"    // not running on the host yet
	Recreate  Action = "recreate"  // running with another configuration or image
	Unchanged Action = "unchanged" // running as wanted; left alone
	Remove    Action = "remove"    // running, but no longer in the release
	Job       Action = "run"       // a pre-deploy job, run to completion first
)

// Observed is one service as it runs on a host now.
type Observed struct {
	Service    string
	Image      string
	ConfigHash string
	Running    bool
	// ImageID is the ID of the image the container runs ("" unknown).
	ImageID string
}

// Step is the action for one service.
type Step struct {
	Service string
	Action  Action
	From    string // the image running now ("" when none)
	To      string // the image the release runs ("" when removed)
	Why     string
}

// Plan is what a deploy does on one host.
type Plan struct {
	Host  string
	Steps []Step
	// Notes say what of the release is accepted but not acted on (deploy keys only
	// Swarm reads, which docker compose ignores too), one line each.
	Notes []string
}

// Changes reports whether the plan changes anything on the host.
func (p Plan) Changes() bool {
	for _, s := range p.Steps {
		if s.Action != Unchanged {
			return true
		}
	}
	return false
}

// Diff plans the release p, whose services have the config hashes in wanted (as the
// engine computes them), against what the host runs.
func Diff(host string, p *compose.Project, wanted map[string]string, observed []Observed) Plan {
	return DiffImages(host, p, wanted, nil, observed)
}

// DiffImages is Diff knowing, per service, the IDs the release's image will have on
// the host (ids: the image's config digest, and its manifest digest for an engine
// that names images by it; none: not known). A service whose new image reference is
// only a new tag of the very image it runs, nothing else changed, is Unchanged
// ("same image"): the engine leaves it running.
func DiffImages(host string, p *compose.Project, wanted map[string]string, ids map[string][]string, observed []Observed) Plan {
	plan := Plan{Host: host}
	running := map[string]Observed{}
	for _, o := range observed {
		running[o.Service] = o
	}
	for _, name := range p.ServicesInOrder() {
		svc := p.Services[name]
		if p.Ship[name].Job != "" {
			plan.Steps = append(plan.Steps, Step{Service: name, Action: Job, To: svc.Image, Why: p.Ship[name].Job + " job"})
			continue
		}
		if keys := compose.SwarmKeys(svc); len(keys) > 0 {
			plan.Notes = append(plan.Notes, fmt.Sprintf("%s: %s ignored (Swarm only; docker compose ignores them too)", name, strings.Join(keys, ", ")))
		}
		o, ok := running[name]
		step := Step{Service: name, To: svc.Image, From: o.Image}
		switch {
		case !ok:
			step.Action, step.Why = Create, "new service"
		case o.ConfigHash != wanted[name] && o.Image != svc.Image && onlyTag(svc, o) && o.Running && sameImage(ids[name], o.ImageID):
			step.Action, step.Why = Unchanged, SameImage
		case o.ConfigHash != wanted[name] && o.Image != svc.Image && onlyTag(svc, o) && len(ids[name]) > 0 && o.ImageID != "":
			step.Action, step.Why = Recreate, "new image"
		case o.ConfigHash != wanted[name] && o.Image != svc.Image && onlyTag(svc, o):
			// Whether the new tag is the same image is known once it is pulled.
			step.Action, step.Why = Recreate, "new image tag; left running if it is the same image"
		case o.ConfigHash != wanted[name] && o.Image != svc.Image:
			step.Action, step.Why = Recreate, "new image"
		case o.ConfigHash != wanted[name]:
			step.Action, step.Why = Recreate, "configuration changed"
		case !o.Running:
			step.Action, step.Why = Recreate, "not running"
		default:
			step.Action = Unchanged
		}
		plan.Steps = append(plan.Steps, step)
	}
	var gone []string
	for name := range running {
		if _, ok := p.Services[name]; !ok {
			gone = append(gone, name)
		}
	}
	sort.Strings(gone)
	for _, name := range gone {
		plan.Steps = append(plan.Steps, Step{Service: name, Action: Remove, From: running[name].Image, Why: "not in the release"})
	}
	return plan
}

// SameImage is the Why of a service left running because its new image tag names
// the image it runs.
const SameImage = "same image"

// sameImage reports whether the running image id is one of ids.
func sameImage(ids []string, id string) bool {
	if id == "" {
		return false
	}
	for _, want := range ids {
		if want == id {
			return true
		}
	}
	return false
}

// onlyTag reports whether the running container differs from svc only by its image
// reference: its config hash is svc's with the reference it runs. The engine leaves
// such a container running when both references are the same image.
func onlyTag(svc types.ServiceConfig, o Observed) bool {
	svc.Image = o.Image
	h, err := engine.ConfigHash(svc)
	return err == nil && h == o.ConfigHash
}

// Format renders the plan for a person, one line per service.
func (p Plan) Format() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s:\n", p.Host)
	width := 0
	for _, s := range p.Steps {
		width = max(width, len(s.Service))
	}
	for _, s := range p.Steps {
		var detail string
		switch s.Action {
		case Create, Job:
			detail = s.To
		case Recreate:
			if s.From != s.To {
				detail = fmt.Sprintf("%s -> %s", s.From, s.To)
			} else {
				detail = s.To
			}
		case Remove:
			detail = s.From
		case Unchanged:
			detail = s.To
			if s.Why == SameImage {
				detail = s.From // it keeps running what it runs
			}
		}
		line := fmt.Sprintf("  %-9s %-*s  %s", s.Action, width, s.Service, detail)
		switch {
		case s.Why == SameImage:
			line += fmt.Sprintf("  (unchanged: same image as %s; left running)", s.To)
		case s.Why != "" && s.Action != Unchanged:
			line += "  (" + s.Why + ")"
		}
		b.WriteString(strings.TrimRight(line, " ") + "\n")
	}
	for _, n := range p.Notes {
		b.WriteString("  note: " + n + "\n")
	}
	return b.String()
}
