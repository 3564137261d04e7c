package engine

import (
	"context"
	"fmt"
	"maps"
	"os"
	"slices"
	"sort"
	"sync"

	"github.com/compose-spec/compose-go/v2/types"
	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/image"
	"github.com/moby/moby/api/types/mount"
	"github.com/moby/moby/client"
)

// volumeMounts maps the service's volumes. Binds that may create their host path use
// the legacy Binds list, which does; binds with create_host_path: false use a bind
// mount, which fails when the path is missing, as docker compose does. Anonymous
// volumes of a replaced container are mounted again at the same place (inherit).
func volumeMounts(p *types.Project, s types.ServiceConfig, inherit map[string]string) ([]string, []mount.Mount) {
	var binds []string
	var mounts []mount.Mount
	used := map[string]bool{}
	for _, v := range s.Volumes {
		used[v.Target] = true
		switch v.Type {
		case types.VolumeTypeBind:
			if v.Bind != nil && !bool(v.Bind.CreateHostPath) {
				m := mount.Mount{Type: mount.TypeBind, Source: v.Source, Target: v.Target, ReadOnly: v.ReadOnly}
				if v.Bind.Propagation != "" {
					m.BindOptions = &mount.BindOptions{Propagation: mount.Propagation(v.Bind.Propagation)}
				}
				mounts = append(mounts, m)
				continue
			}
			binds = append(binds, v.String())
		case types.VolumeTypeVolume:
			if _, declared := p.Volumes[v.Source]; declared && v.Source != "" && !volumeNeedsMount(v.Volume) {
				// As docker compose: the older Binds API where no option needs a mount.
				binds = append(binds, volumeBind(volumeName(p, v.Source), v))
				continue
			}
			m := mount.Mount{Type: mount.TypeVolume, Target: v.Target, ReadOnly: v.ReadOnly}
			if v.Source != "" {
				m.Source = volumeName(p, v.Source)
			} else if name, ok := inherit[v.Target]; ok {
				m.Source = name
			}
			if v.Volume != nil { // as docker compose: options, empty or not, when the file has the section
				m.VolumeOptions = &mount.VolumeOptions{NoCopy: v.Volume.NoCopy, Subpath: v.Volume.Subpath}
			}
			mounts = append(mounts, m)
		case types.VolumeTypeTmpfs:
			m := mount.Mount{Type: mount.TypeTmpfs, Target: v.Target, ReadOnly: v.ReadOnly}
			if v.Tmpfs != nil && (v.Tmpfs.Size != 0 || v.Tmpfs.Mode != 0) {
				m.TmpfsOptions = &mount.TmpfsOptions{SizeBytes: int64(v.Tmpfs.Size), Mode: os.FileMode(v.Tmpfs.Mode)}
			}
			mounts = append(mounts, m)
		}
	}
	// Volumes declared by the image (VOLUME) that the service does not mount.
	targets := make([]string, 0, len(inherit))
	for target := range inherit {
		targets = append(targets, target)
	}
	sort.Strings(targets)
	for _, target := range targets {
		if used[target] {
			continue
		}
		mounts = append(mounts, mount.Mount{Type: mount.TypeVolume, Source: inherit[target], Target: target})
	}
	return binds, mounts
}

// volumeNeedsMount reports whether a named volume's options need the Mounts API.
func volumeNeedsMount(o *types.ServiceVolumeVolume) bool {
	return o != nil && (o.NoCopy || o.Subpath != "" || len(o.Labels) > 0)
}

// volumeBind is a named volume's Binds entry, as docker compose writes it: name:target:rw
// (or ro).
func volumeBind(name string, v types.ServiceVolumeConfig) string {
	access := "rw"
	if v.ReadOnly {
		access = "ro"
	}
	return name + ":" + v.Target + ":" + access
}

// anonymousVolumes finds the anonymous volumes the old container has at places the
// service or its image declare one, so the new container keeps their data.
func anonymousVolumes(s types.ServiceConfig, mounts []container.MountPoint, img image.InspectResponse) map[string]string {
	declared := map[string]bool{}
	if img.Config != nil {
		for target := range img.Config.Volumes {
			declared[target] = true
		}
	}
	for _, v := range s.Volumes {
		if v.Type == types.VolumeTypeVolume && v.Source == "" {
			declared[v.Target] = true
		} else {
			declared[v.Target] = false // mounted from elsewhere now
		}
	}
	out := map[string]string{}
	for _, m := range mounts {
		if m.Type == "volume" && m.Name != "" && declared[m.Destination] {
			out[m.Destination] = m.Name
		}
	}
	return out
}

// ensureVolumes creates the named volumes the services mount that do not exist yet,
// and checks that the external ones do. With whole (an Up of the whole project), a
// volume made from another definition is refused, or made again with the file's consent;
// otherwise it is used as it is (see ensureNetworks).
//
// reads are the volumes' inspects made beforehand (inspectVolumes); nil: they are
// made here, all at once. removed says a volume made from another definition was
// removed with the containers that used it.
func (e *Engine) ensureVolumes(ctx context.Context, p *types.Project, services []string, whole bool, rep *reporter, reads map[string]volumeRead) (removed bool, err error) {
	sorted := volumeKeys(p, services)
	if reads == nil {
		reads = e.inspectVolumes(ctx, p, sorted)
	}
	for _, key := range sorted {
		v := p.Volumes[key]
		name := volumeName(p, key)
		hash, err := VolumeHash(v)
		if err != nil {
			return removed, err
		}
		res, err := reads[key].res, reads[key].err
		switch {
		case err == nil && bool(v.External):
			continue
		case err == nil:
			// As docker compose: a volume without the label (made by an older version)
			// is kept; one made from another definition is made again only with consent.
			if h, ok := res.Volume.Labels[labelConfigHash]; !ok || h == hash || !whole {
				continue
			}
			if !recreateConsent(v) {
				return removed, &VolumeChangedError{Volume: key, Name: name}
			}
			if err := e.removeDivergedVolume(ctx, p, name, rep); err != nil {
				return removed, err
			}
			removed = true
		case !cerrdefs.IsNotFound(err):
			return removed, fmt.Errorf("inspect volume %s: %w", name, err)
		case bool(v.External):
			return removed, fmt.Errorf("volume %s is declared external but does not exist", name)
		}
		labels := objectLabels(p.Name, labelVolume, key, hash, v.Labels, v.CustomLabels)
		if _, err := e.api.VolumeCreate(ctx, client.VolumeCreateOptions{
			Name: name, Driver: v.Driver, DriverOpts: v.DriverOpts, Labels: labels,
		}); err != nil {
			return removed, fmt.Errorf("create volume %s: %w", name, err)
		}
		rep.event("", "", "volume", "created "+name)
	}
	return removed, nil
}

// volumeRead is one volume's inspect: its result or its error.
type volumeRead struct {
	res client.VolumeInspectResult
	err error
}

// volumeKeys are the project's volumes (keys of p.Volumes) that services mount, sorted.
func volumeKeys(p *types.Project, services []string) []string {
	keys := map[string]bool{}
	for _, name := range services {
		for _, v := range p.Services[name].Volumes {
			if v.Type == types.VolumeTypeVolume && v.Source != "" {
				keys[v.Source] = true
			}
		}
	}
	return slices.Sorted(maps.Keys(keys))
}

// inspectVolumes inspects the volumes of keys all at once: one round trip to a far
// engine, not one each.
func (e *Engine) inspectVolumes(ctx context.Context, p *types.Project, keys []string) map[string]volumeRead {
	reads := make([]volumeRead, len(keys))
	var wg sync.WaitGroup
	for i, key := range keys {
		wg.Go(func() {
			res, err := e.api.VolumeInspect(ctx, volumeName(p, key), client.VolumeInspectOptions{})
			reads[i] = volumeRead{res, err}
		})
	}
	wg.Wait()
	out := make(map[string]volumeRead, len(keys))
	for i, key := range keys {
		out[key] = reads[i]
	}
	return out
}
