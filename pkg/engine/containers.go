package engine

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/compose-spec/compose-go/v2/types"
	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/image"
	"github.com/moby/moby/client"
	"golang.org/x/sync/errgroup"
)

// Containers lists the project's containers, stopped and one-off ones too, like
// `docker compose ps -a`, sorted by service and number.
func (e *Engine) Containers(ctx context.Context, project string) ([]Container, error) {
	cs, err := e.list(ctx, project, true)
	if err != nil {
		return nil, err
	}
	// The inspects go out together: one round trip to a far engine, not one each.
	inspects := make([]container.InspectResponse, len(cs))
	errs := make([]error, len(cs))
	var g errgroup.Group
	g.SetLimit(16)
	for i, c := range cs {
		g.Go(func() error { inspects[i], errs[i] = e.inspect(ctx, c.ID); return nil })
	}
	_ = g.Wait()
	out := make([]Container, 0, len(cs))
	for i, c := range cs {
		ins, err := inspects[i], errs[i]
		if cerrdefs.IsNotFound(err) {
			continue // removed since it was listed
		}
		if err != nil {
			return nil, fmt.Errorf("inspect container %s: %w", containerLabelName(c), err)
		}
		ct := Container{
			ID:         c.ID,
			Name:       containerLabelName(c),
			Service:    c.Labels[labelService],
			Number:     containerNumber(c),
			OneOff:     c.Labels[labelOneOff] == "True",
			Image:      c.Image,
			ImageID:    c.ImageID,
			State:      string(c.State),
			ConfigHash: c.Labels[labelConfigHash],
			WorkingDir: c.Labels[labelWorkingDir],
		}
		if st := ins.State; st != nil {
			ct.State = string(st.Status)
			ct.ExitCode = st.ExitCode
			if st.Health != nil {
				ct.Health = string(st.Health.Status)
			}
		}
		if ins.Config != nil && ins.Config.Image != "" {
			ct.Image = ins.Config.Image
		}
		out = append(out, ct)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Service != b.Service {
			return a.Service < b.Service
		}
		if a.OneOff != b.OneOff {
			return !a.OneOff
		}
		if a.Number != b.Number {
			return a.Number < b.Number
		}
		return a.Name < b.Name
	})
	return out, nil
}

// Wait waits until the service's container (number 1) has stopped and returns its
// exit code; it returns at once if the container has already exited.
func (e *Engine) Wait(ctx context.Context, project, service string) (int, error) {
	res, err := e.api.ContainerList(ctx, client.ContainerListOptions{
		All: true,
		Filters: make(client.Filters).Add("label",
			labelProject+"="+project,
			labelService+"="+service,
			labelOneOff+"=False",
			labelNumber+"=1",
		),
	})
	if err != nil {
		return 0, fmt.Errorf("wait for %s: list containers: %w", service, err)
	}
	cs := res.Items
	if len(cs) == 0 {
		return 0, fmt.Errorf("wait for %s: project %s has no container for it", service, project)
	}
	name := containerLabelName(cs[0])
	wait := e.api.ContainerWait(ctx, cs[0].ID, client.ContainerWaitOptions{Condition: container.WaitConditionNotRunning})
	select {
	case res := <-wait.Result:
		if res.Error != nil && res.Error.Message != "" {
			return 0, fmt.Errorf("wait for container %s: %s", name, res.Error.Message)
		}
		return int(res.StatusCode), nil
	case err := <-wait.Error:
		return 0, fmt.Errorf("wait for container %s: %w", name, err)
	}
}

// inspect returns the engine's view of one container.
func (e *Engine) inspect(ctx context.Context, id string) (container.InspectResponse, error) {
	res, err := e.api.ContainerInspect(ctx, id, client.ContainerInspectOptions{})
	return res.Container, err
}

// imageInspect returns the engine's view of one image.
func (e *Engine) imageInspect(ctx context.Context, ref string) (image.InspectResponse, error) {
	res, err := e.api.ImageInspect(ctx, ref)
	return res.InspectResponse, err
}

// list returns the project's containers, one-off ones too, running or not.
func (e *Engine) list(ctx context.Context, project string, all bool) ([]container.Summary, error) {
	cs, err := e.api.ContainerList(ctx, client.ContainerListOptions{
		All:     all,
		Filters: make(client.Filters).Add("label", labelProject+"="+project),
	})
	if err != nil {
		return nil, fmt.Errorf("list containers of %s: %w", project, err)
	}
	return cs.Items, nil
}

// isOrphan tells a container of a service no longer in the project, or an exited
// one-off container, as docker compose does.
func isOrphan(p *types.Project, c container.Summary) bool {
	if c.Labels[labelOneOff] == "True" {
		return c.State == container.StateExited || c.State == container.StateDead
	}
	svc := c.Labels[labelService]
	if _, ok := p.Services[svc]; ok {
		return false
	}
	_, disabled := p.DisabledServices[svc]
	return !disabled
}

// stopRemove stops a container (its own stop timeout applies: stop_grace_period) and
// removes it.
func (e *Engine) stopRemove(ctx context.Context, id, service, name string, volumes bool, rep *reporter) error {
	rep.event(service, name, "remove", "stopping")
	if _, err := e.api.ContainerStop(ctx, id, client.ContainerStopOptions{}); err != nil && !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("stop container %s: %w", name, err)
	}
	if err := e.removeContainer(ctx, id, volumes); err != nil {
		return fmt.Errorf("remove container %s: %w", name, err)
	}
	rep.event(service, name, "remove", "removed")
	return nil
}

// removeContainer removes the container id (forced). One already gone is removed; one
// whose removal another caller has under way (shipd retiring a replaced container
// while the app is taken down) is waited for until it is gone.
func (e *Engine) removeContainer(ctx context.Context, id string, volumes bool) error {
	_, err := e.api.ContainerRemove(ctx, id, client.ContainerRemoveOptions{Force: true, RemoveVolumes: volumes})
	switch {
	case err == nil, cerrdefs.IsNotFound(err):
		return nil
	case !cerrdefs.IsConflict(err) || !strings.Contains(err.Error(), "already in progress"):
		return err
	}
	tick := time.NewTicker(max(e.poll, 100*time.Millisecond))
	defer tick.Stop()
	for {
		if _, ierr := e.api.ContainerInspect(ctx, id, client.ContainerInspectOptions{}); cerrdefs.IsNotFound(ierr) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (waiting for it: %w)", err, ctx.Err())
		case <-tick.C:
		}
	}
}

// containerLabelName is the container's name without the engine's leading slash.
func containerLabelName(c container.Summary) string {
	if len(c.Names) == 0 {
		return c.ID[:min(12, len(c.ID))]
	}
	// A container linked to others is listed under several names; its own has one slash.
	for _, n := range c.Names {
		if strings.Count(n, "/") == 1 {
			return strings.TrimPrefix(n, "/")
		}
	}
	return strings.TrimPrefix(c.Names[0], "/")
}

func containerNumber(c container.Summary) int {
	n, err := strconv.Atoi(c.Labels[labelNumber])
	if err != nil {
		return 0
	}
	return n
}
