package engine

import (
	"context"
	"fmt"

	"github.com/compose-spec/compose-go/v2/types"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"
)

// RecreateKey is the key of a top-level volume that consents to its recreation: with
// `x-ship-recreate: true`, a volume whose definition changed since it was made is
// removed (its data with it) and made again; without it, Up refuses (VolumeChangedError).
const RecreateKey = "x-ship-recreate"

// VolumeChangedError is Up's refusal to recreate a volume whose definition changed
// since it was made, which would lose its data, without the file's consent.
type VolumeChangedError struct {
	// Volume is the volume's key in the file, Name the engine's name of it.
	Volume, Name string
}

func (e *VolumeChangedError) Error() string {
	return fmt.Sprintf("volume %q (%s) was made from another definition (driver, driver_opts, labels or name changed) "+
		"and ship keeps its data: put the old definition back, or, to remove it and make it again empty, "+
		"add `%s: true` under volumes.%s in the compose file (and remove it after this deploy)",
		e.Volume, e.Name, RecreateKey, e.Volume)
}

func recreateConsent(v types.VolumeConfig) bool {
	b, ok := v.Extensions[RecreateKey].(bool)
	return ok && b
}

// removeDivergedNetwork removes a project network made from another definition, as
// docker compose does before it makes it again: the project's containers on it are
// stopped and removed first (Up creates them again), anyone else's are disconnected.
func (e *Engine) removeDivergedNetwork(ctx context.Context, p *types.Project, n network.Summary, rep *reporter) error {
	rep.event("", "", "network", "recreate "+n.Name+": its definition changed")
	users, err := e.api.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: make(client.Filters).Add("network", n.ID)})
	if err != nil {
		return fmt.Errorf("list the containers on network %s: %w", n.Name, err)
	}
	for _, c := range users.Items {
		if c.Labels[labelProject] == p.Name {
			if err := e.stopRemove(ctx, c.ID, c.Labels[labelService], containerLabelName(c), false, rep); err != nil {
				return err
			}
			continue
		}
		if _, err := e.api.NetworkDisconnect(ctx, n.ID, client.NetworkDisconnectOptions{Container: c.ID, Force: true}); err != nil {
			return fmt.Errorf("disconnect container %s from network %s: %w", containerLabelName(c), n.Name, err)
		}
	}
	if _, err := e.api.NetworkRemove(ctx, n.ID, client.NetworkRemoveOptions{}); err != nil {
		return fmt.Errorf("remove network %s: %w", n.Name, err)
	}
	return nil
}

// removeDivergedVolume removes a project volume made from another definition, with the
// file's consent: the project's containers that mount it are stopped and removed first
// (Up creates them again); a container of anyone else's that mounts it is refused.
func (e *Engine) removeDivergedVolume(ctx context.Context, p *types.Project, name string, rep *reporter) error {
	users, err := e.api.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: make(client.Filters).Add("volume", name)})
	if err != nil {
		return fmt.Errorf("list the containers of volume %s: %w", name, err)
	}
	for _, c := range users.Items {
		if c.Labels[labelProject] != p.Name {
			return fmt.Errorf("volume %s: its definition changed, but container %s of another project mounts it; remove that container first", name, containerLabelName(c))
		}
	}
	rep.event("", "", "volume", "recreate "+name+": its definition changed ("+RecreateKey+")")
	for _, c := range users.Items {
		if err := e.stopRemove(ctx, c.ID, c.Labels[labelService], containerLabelName(c), false, rep); err != nil {
			return err
		}
	}
	if _, err := e.api.VolumeRemove(ctx, name, client.VolumeRemoveOptions{}); err != nil {
		return fmt.Errorf("remove volume %s: %w", name, err)
	}
	return nil
}
