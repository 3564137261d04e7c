package engine

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"
	"golang.org/x/sync/errgroup"
)

// Down removes what Up made, found by the project's labels, so it needs no compose
// file and does nothing for a project that is already gone: it stops (each with its
// stop_grace_period) and removes the containers, one-off ones too, dependents before
// what they depend on; then removes the project's networks and, with o.Volumes, its
// named volumes and its containers' anonymous ones. It goes on past failures and
// returns them all.
func (e *Engine) Down(ctx context.Context, project string, o DownOptions) error {
	rep := newReporter(o.Progress)
	cs, err := e.list(ctx, project, true)
	if err != nil {
		return fmt.Errorf("down %s: %w", project, err)
	}
	var errs []error
	for _, level := range stopOrder(cs) {
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(8)
		errc := make(chan error, len(level))
		for _, c := range level {
			g.Go(func() error {
				errc <- e.stopRemove(gctx, c.ID, c.Labels[labelService], containerLabelName(c), o.Volumes, rep)
				return nil
			})
		}
		_ = g.Wait()
		close(errc)
		for err := range errc {
			if err != nil {
				errs = append(errs, err)
			}
		}
	}

	byProject := make(client.Filters).Add("label", labelProject+"="+project)
	netList, err := e.api.NetworkList(ctx, client.NetworkListOptions{Filters: byProject})
	nets := netList.Items
	if err != nil {
		errs = append(errs, fmt.Errorf("list networks of %s: %w", project, err))
	}
	sort.Slice(nets, func(i, j int) bool { return nets[i].Name < nets[j].Name })
	for _, n := range nets {
		if _, err := e.api.NetworkRemove(ctx, n.ID, client.NetworkRemoveOptions{}); err != nil && !cerrdefs.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("remove network %s: %w", n.Name, err))
			continue
		}
		rep.event("", "", "network", "removed "+n.Name)
	}

	if o.Volumes {
		vols, err := e.api.VolumeList(ctx, client.VolumeListOptions{Filters: byProject})
		if err != nil {
			errs = append(errs, fmt.Errorf("list volumes of %s: %w", project, err))
		}
		sort.Slice(vols.Items, func(i, j int) bool { return vols.Items[i].Name < vols.Items[j].Name })
		for _, v := range vols.Items {
			if _, err := e.api.VolumeRemove(ctx, v.Name, client.VolumeRemoveOptions{}); err != nil && !cerrdefs.IsNotFound(err) {
				errs = append(errs, fmt.Errorf("remove volume %s: %w", v.Name, err))
				continue
			}
			rep.event("", "", "volume", "removed "+v.Name)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("down %s: %w", project, errors.Join(errs...))
	}
	return nil
}

// stopOrder groups containers into levels to stop one after the other: a service's
// containers come after those of every service that depends on it (read from the
// depends_on label). Services caught in a cycle go last, together.
func stopOrder(cs []container.Summary) [][]container.Summary {
	bySvc := map[string][]container.Summary{}
	for _, c := range cs {
		svc := c.Labels[labelService]
		bySvc[svc] = append(bySvc[svc], c)
	}
	// dependents[s]: services that depend on s and so must stop first.
	dependents := map[string]map[string]bool{}
	for svc, list := range bySvc {
		for _, c := range list {
			for _, dep := range strings.Split(c.Labels[labelDependsOn], ",") {
				dep, _, _ = strings.Cut(dep, ":")
				if _, ok := bySvc[dep]; !ok || dep == svc {
					continue
				}
				if dependents[dep] == nil {
					dependents[dep] = map[string]bool{}
				}
				dependents[dep][svc] = true
			}
		}
	}
	var levels [][]container.Summary
	left := map[string]bool{}
	for svc := range bySvc {
		left[svc] = true
	}
	for len(left) > 0 {
		var ready []string
		for svc := range left {
			free := true
			for d := range dependents[svc] {
				if left[d] {
					free = false
					break
				}
			}
			if free {
				ready = append(ready, svc)
			}
		}
		if len(ready) == 0 { // a cycle: stop what is left at once
			for svc := range left {
				ready = append(ready, svc)
			}
		}
		sort.Strings(ready)
		var level []container.Summary
		for _, svc := range ready {
			level = append(level, bySvc[svc]...)
			delete(left, svc)
		}
		levels = append(levels, level)
	}
	return levels
}
