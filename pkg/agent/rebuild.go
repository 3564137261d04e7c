package agent

import (
	"context"
	"fmt"
	"path/filepath"
	"sort"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/shipdeploy/ship/pkg/agentapi"
	"github.com/shipdeploy/ship/pkg/engine"
)

// Rebuild at start. The state file may be gone, unreadable, or lack an app whose entry
// was invalid (statecheck.go), while the app's containers run: shipd then finds the
// app again from what the host holds, and routes it, instead of serving nothing until
// the next deploy.
//
//   - Which apps: those of the containers this shipd started (AgentLabel names its
//     state file, so that two shipds on one engine, as in tests, never take each
//     other's apps), by their compose project label, that the state lacks. Containers
//     of a shipd older than the label are not found: their apps get their routes at
//     their next deploy, as before.
//   - Where: the containers' com.docker.compose.project.working_dir label,
//     <path>/releases/<release>, gives the app's folder; it must be a clean absolute
//     path, as a deploy request's.
//   - What: the release `current` points at, read as a deploy reads it; each of its
//     routed services gets its route (x-ship listen, port, health, drain, the network
//     its container is reached on), with the newest running container of that release
//     as the live one. Reconcile then checks it, as it checks every route.
//
// Each decision is logged ("rebuild: ..."). A cut-off deploy cannot be told from the
// host: the routes go to the current release's containers and the other containers of
// a routed service are strays, as in reconcile.

// AgentLabel is set on the containers shipd starts: the state file of the shipd that
// started them (see rebuild).
const AgentLabel = "dev.ship.shipd"

// Compose's labels that rebuild reads.
const (
	labelProject    = "com.docker.compose.project"
	labelService    = "com.docker.compose.service"
	labelWorkingDir = "com.docker.compose.project.working_dir"
	labelOneOff     = "com.docker.compose.oneoff"
)

// containerLabels are the labels of a container shipd starts for release sha.
func (a *agent) containerLabels(sha string) map[string]string {
	labels := map[string]string{ReleaseLabel: sha}
	if a.stateID != "" {
		labels[AgentLabel] = a.stateID
	}
	return labels
}

// agentID is the value of AgentLabel for a shipd whose state file is path.
func agentID(path string) string {
	if abs, err := filepath.Abs(path); err == nil {
		return abs
	}
	return path
}

// containerLister is what rebuild needs of the Docker engine's API.
type containerLister interface {
	ContainerList(ctx context.Context, options client.ContainerListOptions) (client.ContainerListResult, error)
}

// rebuild adds to the state the apps whose containers this shipd started and that the
// state lacks (see above). It reports whether it added any.
func (a *agent) rebuild(ctx context.Context, engineAPI containerLister) bool {
	if engineAPI == nil || a.stateID == "" {
		return false
	}
	lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	res, err := engineAPI.ContainerList(lctx, client.ContainerListOptions{
		All: true, Filters: make(client.Filters).Add("label", AgentLabel+"="+a.stateID),
	})
	cancel()
	if err != nil {
		a.log.Error("rebuild: list the containers shipd started; apps missing from the state get their routes at their next deploy", "err", err)
		return false
	}
	known := a.store.snapshot().Apps
	byApp := map[string][]container.Summary{}
	for _, c := range res.Items {
		if app := c.Labels[labelProject]; known[app] == nil && c.Labels[labelOneOff] != "True" {
			byApp[app] = append(byApp[app], c)
		}
	}
	apps := make([]string, 0, len(byApp))
	for app := range byApp {
		apps = append(apps, app)
	}
	sort.Strings(apps)
	added := false
	for _, app := range apps {
		if a.rebuildApp(ctx, app, byApp[app]) {
			added = true
		}
	}
	return added
}

// rebuildApp adds app to the state from its folder and its containers cs; it reports
// whether it did.
func (a *agent) rebuildApp(ctx context.Context, app string, cs []container.Summary) bool {
	log := a.log.With("app", app)
	path, err := appFolder(app, cs)
	if err != nil {
		log.Error("rebuild: the app is not in the state and its folder is unknown; it gets its routes at its next deploy", "err", err)
		return false
	}
	log = log.With("path", path)
	st := newStore(path)
	current, err := st.Current(ctx)
	switch {
	case err != nil:
		log.Error("rebuild: read the current release; the app gets its routes at its next deploy", "err", err)
		return false
	case current == "":
		log.Warn("rebuild: the app has no current release; it gets its routes at its next deploy")
		return false
	case !shaName.MatchString(current):
		log.Error("rebuild: current does not name a release; the app gets its routes at its next deploy", "current", current)
		return false
	}
	p, err := loadRelease(ctx, app, st, current)
	if err != nil {
		log.Error("rebuild: read the current release; the app gets its routes at its next deploy", "release", current, "err", err)
		return false
	}
	routes := map[string]*RouteState{}
	for _, name := range p.ServicesInOrder() {
		ship := p.Ship[name]
		if !ship.Routed() || ship.Job != "" {
			continue
		}
		var rs *RouteState
		var problems []string
		live := newestOf(cs, name, current)
		for i, r := range shipRoutes(ship) {
			spec := routeSpecOf(r, st.Layout.Release(current))
			e := &RouteState{
				Service: name, Listen: spec.Listen, Port: r.Port, Network: engine.ServiceNetwork(p.Project, name),
				Drain: agentapi.Duration(ship.Drain), Release: current,
				ListenTLS: spec.ListenTLS, Hosts: spec.Hosts, Paths: spec.Paths, TLS: spec.TLS, Cert: spec.Cert, Key: spec.Key,
			}
			if live != nil {
				e.Container = live.ID
			}
			problems = append(problems, checkRoute(name, e)...)
			if i == 0 {
				e.Health, rs = ship.Health, e
				continue
			}
			rs.More = append(rs.More, e)
		}
		if len(problems) > 0 {
			log.Error("rebuild: the release's route cannot be served; the service gets its route at the next deploy", "service", name, "problems", problems)
			continue
		}
		log.Info("rebuild: route", "service", name, "listen", rs.Listen, "port", rs.Port, "health", rs.Health, "release", current, "container", rs.Container)
		routes[name] = rs
	}
	previous, _ := st.RollbackTarget(ctx, current, "")
	a.saveState(func(s *State) {
		s.Apps[app] = &AppState{App: app, Path: path, Release: current, Previous: previous, Since: time.Now().UTC(), Routes: routes}
	})
	log.Warn("rebuild: the app was missing from the state; rebuilt from its folder and its containers", "release", current, "routes", len(routes))
	return true
}

// appFolder is the app's folder as its containers' working directories name it:
// <path>/releases/<release>, the same for all.
func appFolder(app string, cs []container.Summary) (string, error) {
	path := ""
	for _, c := range cs {
		wd := c.Labels[labelWorkingDir]
		rel := filepath.Dir(wd)
		if !isCleanPath(wd) || filepath.Base(rel) != "releases" {
			return "", fmt.Errorf("container %s: working directory %q is not <path>/releases/<release>", c.ID, wd)
		}
		p := filepath.Dir(rel)
		if path != "" && p != path {
			return "", fmt.Errorf("its containers name two folders: %s and %s", path, p)
		}
		path = p
	}
	if err := checkRequest(app, path, "", false); err != nil {
		return "", err
	}
	return path, nil
}

// newestOf is the newest running container of service in release, nil if none.
func newestOf(cs []container.Summary, service, release string) *container.Summary {
	var best *container.Summary
	for i, c := range cs {
		if c.Labels[labelService] != service || c.Labels[ReleaseLabel] != release || c.State != container.StateRunning {
			continue
		}
		if best == nil || c.Created > best.Created {
			best = &cs[i]
		}
	}
	return best
}
