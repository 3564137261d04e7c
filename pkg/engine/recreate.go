package engine

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/compose-spec/compose-go/v2/types"
	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/image"
	"github.com/moby/moby/client"
)

// recreate replaces the service's container old (as Up's container list showed it).
// The new container is created beside the old one, under a temporary name, and
// started the moment the old one has stopped (replace): never two copies of a service
// running on its volumes and ports, and the gap is a stop and a start. The old
// container's anonymous volumes are read from the list, not from an inspect: on a far
// host, a round trip less.
func (r *run) recreate(ctx context.Context, in createInput, old container.Summary, name string, img image.InspectResponse) (target, error) {
	e := r.e
	in.inherit = anonymousVolumes(in.service, old.Mounts, img)
	nc, err := r.createOnly(ctx, in, tempName(old.ID, name))
	if err != nil {
		return target{}, err
	}
	if err := ctx.Err(); err != nil { // not begun: the old container runs on
		own, cancel := context.WithTimeout(context.WithoutCancel(ctx), ownTimeout)
		defer cancel()
		_, _ = e.api.ContainerRemove(own, nc.id, client.ContainerRemoveOptions{Force: true})
		return target{}, err
	}
	return r.replace(ctx, old.ID, containerLabelName(old), nc, name)
}

// replace stops the old container, starts the new one (created by createOnly) while
// the old one is removed, then has the new one given its name (rename). It is one change to the
// host: once begun it runs to its end under a context of its own, so that a
// cancellation never leaves a stop in flight behind the caller's back (the restore
// that follows sees the host as it is). The caller's cancellation is reported once it
// is over.
func (r *run) replace(ctx context.Context, oldID, oldName string, nc target, name string) (target, error) {
	e := r.e
	// The old container's stop timeout is its own (the engine applies it); this bounds
	// the whole change however long that is.
	own, cancel := context.WithTimeout(context.WithoutCancel(ctx), replaceTimeout)
	defer cancel()
	r.rep.event(nc.service, oldName, "remove", "stopping")
	if _, err := e.api.ContainerStop(own, oldID, client.ContainerStopOptions{}); err != nil && !cerrdefs.IsNotFound(err) {
		_, _ = e.api.ContainerRemove(own, nc.id, client.ContainerRemoveOptions{Force: true})
		return target{}, fmt.Errorf("stop container %s: %w", oldName, err)
	}
	// The start and the old container's removal do not depend on each other: on a far
	// host, one round trip for both.
	var startErr error
	started := make(chan struct{})
	go func() {
		defer close(started)
		if _, startErr = e.api.ContainerStart(own, nc.id, client.ContainerStartOptions{}); startErr == nil {
			r.rep.event(nc.service, name, "start", "started")
		}
	}()
	removeErr := e.removeContainer(own, oldID, false)
	<-started
	if removeErr != nil {
		return target{}, fmt.Errorf("remove container %s: %w", oldName, removeErr)
	}
	r.rep.event(nc.service, oldName, "remove", "removed")
	if startErr != nil {
		return target{}, fmt.Errorf("start container %s: %w", name, startErr)
	}
	r.rename(ctx, nc, name)
	return target{service: nc.service, id: nc.id, name: name}, ctx.Err()
}

// rename gives the new container c the service's container name once the old one is
// gone. Nothing after it needs the name (the wait and the services that depend on it
// use the ID), so it runs beside them: on a far host, its round trip overlaps the
// health wait. Up waits for it before it returns (renamed).
func (r *run) rename(ctx context.Context, c target, name string) {
	own, cancel := context.WithTimeout(context.WithoutCancel(ctx), ownTimeout)
	r.renames.Go(func() {
		defer cancel()
		if _, err := r.e.api.ContainerRename(own, c.id, client.ContainerRenameOptions{NewName: name}); err != nil {
			r.mu.Lock()
			r.renameErr = errors.Join(r.renameErr, fmt.Errorf("rename container %s to %s: %w", c.name, name, err))
			r.mu.Unlock()
		}
	})
}

// renamed waits for the renames under way and returns what failed of them.
func (r *run) renamed() error {
	r.renames.Wait()
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.renameErr
}

// replaceTimeout bounds a replace: the old container's stop (its own stop timeout,
// which can be long) and the requests after it.
const replaceTimeout = 10 * time.Minute

// ownTimeout bounds a change that runs under its own context, beyond the container's
// stop timeout.
const ownTimeout = 2 * time.Minute

// stopRemoveOwn is stopRemove under a context of its own (see replace).
func (e *Engine) stopRemoveOwn(ctx context.Context, id, service, name string, rep *reporter) error {
	own, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Minute)
	defer cancel()
	if err := e.stopRemove(own, id, service, name, false, rep); err != nil {
		return err
	}
	return ctx.Err()
}

// tempName is the name of a new container while the one it replaces still holds its
// name, as docker compose names it.
func tempName(oldID, name string) string {
	return oldID[:min(12, len(oldID))] + "_" + name
}

// stopDependents stops, as docker compose does before it recreates service, the
// running containers of the services that depend on it with restart: true; each is
// started again once service is back (their converge finds them exited).
func (r *run) stopDependents(ctx context.Context, service string) error {
	for _, name := range r.p.ServiceNames() {
		d, ok := r.p.Services[name].DependsOn[service]
		if _, selected := r.ready[name]; !ok || !d.Restart || !selected {
			continue
		}
		r.mu.Lock()
		cs := r.existing[name]
		r.mu.Unlock()
		for i, c := range cs {
			if c.State != container.StateRunning && c.State != container.StateRestarting {
				continue
			}
			r.rep.event(name, containerLabelName(c), "stop", "dependency "+service+" is recreated")
			if _, err := r.e.api.ContainerStop(ctx, c.ID, client.ContainerStopOptions{}); err != nil {
				return fmt.Errorf("stop container %s: %w", containerLabelName(c), err)
			}
			r.mu.Lock()
			cs[i].State = container.StateExited
			r.mu.Unlock()
		}
	}
	return nil
}

// sameImage reports whether old differs from s only by its image reference, both
// references naming the same image (imageID): a new tag of an image whose content did
// not change (a commit that changed no file of the image). Such a container is left
// running, its labels and its reference (the older tag, kept for rollback) as they are.
func (r *run) sameImage(ctx context.Context, s types.ServiceConfig, old container.Summary, imageID string) bool {
	if imageID == "" || old.Labels[labelImage] != imageID {
		return false
	}
	// The list shows the reference the container was created from while it still
	// names the container's image, else the image's ID: then an inspect tells it.
	ref := old.Image
	if strings.HasPrefix(ref, "sha256:") || ref == "" {
		inspect, err := r.e.inspect(ctx, old.ID)
		if err != nil || inspect.Config == nil {
			return false
		}
		ref = inspect.Config.Image
	}
	if ref == s.Image {
		return false
	}
	s.Image = ref
	h, err := r.hash(s)
	return err == nil && h == old.Labels[labelConfigHash]
}

// hash is the service's config hash as docker compose computes it once the services
// it shares a namespace with run: network_mode service:x hashed as container:<x's ID>.
func (r *run) hash(s types.ServiceConfig) (string, error) {
	return ConfigHash(WithContainerRefs(s, func(name string) string { return r.started(name).id }))
}
