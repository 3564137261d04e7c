package compose

import "github.com/compose-spec/compose-go/v2/types"

// Jobs are the project's pre-deploy job services, in ServicesInOrder's order: each
// runs to completion with the new images before anything is switched.
func (p *Project) Jobs() []string {
	var out []string
	for _, name := range p.ServicesInOrder() {
		if p.Ship[name].Job == JobPreDeploy {
			out = append(out, name)
		}
	}
	return out
}

// WithoutJobs is the project the engine keeps running: a copy with every service but
// the jobs. Up of it with RemoveOrphans removes the finished job containers.
func (p *Project) WithoutJobs() *types.Project {
	cp := *p.Project
	cp.Services = types.Services{}
	for name, s := range p.Services {
		if p.Ship[name].Job == "" {
			cp.Services[name] = s
		}
	}
	return &cp
}
