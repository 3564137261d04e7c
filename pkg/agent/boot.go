package agent

import (
	"context"
	"os"
	"sort"
	"time"

	"github.com/moby/moby/client"
)

// The compose labels that startStopped reads.
const (
	composeProject = "com.docker.compose.project"
	composeService = "com.docker.compose.service"
	composeOneOff  = "com.docker.compose.oneoff"
)

// startStopped runs at start, before reconcile: it starts the containers of each app's
// current release that the Docker engine's last restart left stopped. A reboot (or a
// restart of dockerd) stops every container, and the engine starts again only those
// with a restart: policy; the others would leave their routes answering 503 until the
// next deploy. A container counts as stopped by the engine's restart when it finished
// before the engine's socket was made (the engine's start); one stopped since (by
// hand, or a crash the engine did not restart) is left alone, as are one-off job
// containers, the containers of a routed service that are not of the current release
// (strays, removed by reconcile) and the apps whose deploy was cut off (reconcile puts
// their release back).
func (a *agent) startStopped(ctx context.Context) {
	if a.docker == nil {
		return // reconcile's tests: an engine of their own, and nothing to start
	}
	fi, err := os.Stat(a.cfg.Docker)
	if err != nil {
		a.log.Warn("boot: the Docker socket", "err", err)
		return
	}
	engineStart := fi.ModTime()
	snap := a.store.snapshot()
	names := make([]string, 0, len(snap.Apps))
	for name, app := range snap.Apps {
		if app.Deploying == nil && app.Release != "" {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	for _, name := range names {
		app := snap.Apps[name]
		// An engine that hangs holds up the start (connections wait in the backlog):
		// not for long.
		lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		a.startApp(lctx, app, engineStart)
		cancel()
	}
}

// startApp starts one app's containers that the engine's restart left stopped.
func (a *agent) startApp(ctx context.Context, app *AppState, engineStart time.Time) {
	log := a.log.With("app", app.App)
	res, err := a.docker.ContainerList(ctx, client.ContainerListOptions{
		All: true, Filters: make(client.Filters).Add("label", composeProject+"="+app.App),
	})
	if err != nil {
		log.Warn("boot: list the app's containers", "err", err)
		return
	}
	for _, c := range res.Items {
		service := c.Labels[composeService]
		_, routed := app.Routes[service]
		switch {
		case c.State == "running" || c.State == "restarting" || c.State == "paused":
			continue
		case c.Labels[composeOneOff] == "True":
			continue
		case routed && c.Labels[ReleaseLabel] != app.Release:
			continue
		}
		ins, err := a.docker.ContainerInspect(ctx, c.ID, client.ContainerInspectOptions{})
		if err != nil || ins.Container.State == nil {
			log.Warn("boot: inspect a stopped container", "container", c.ID, "err", err)
			continue
		}
		finished, err := time.Parse(time.RFC3339Nano, ins.Container.State.FinishedAt)
		if err != nil || finished.IsZero() || !finished.Before(engineStart) {
			continue
		}
		name := ins.Container.Name
		if _, err := a.docker.ContainerStart(ctx, c.ID, client.ContainerStartOptions{}); err != nil {
			log.Error("boot: start a container of the current release", "service", service, "container", name, "err", err)
			continue
		}
		log.Info("boot: started a container of the current release that the engine's restart left stopped",
			"service", service, "container", name, "release", app.Release, "finished", finished, "engine_start", engineStart)
	}
}
