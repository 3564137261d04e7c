package deploy

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/shipdeploy/ship/pkg/release"
)

// prune removes a host's old releases: it keeps the newest keep releases (by the time
// in their release.json) and current, and removes the other folders and the images
// ship built for them that no kept release uses. Images of other origin (postgres:16)
// are never removed: another app on the host may use them.
func prune(ctx context.Context, h Host, l release.Layout, keep int, current, host string, em *emitter) error {
	if keep < 1 {
		keep = 1
	}
	releases, err := readReleases(ctx, h, l)
	if err != nil {
		return fmt.Errorf("prune: %w", err)
	}
	kept := map[string]bool{}
	var gone []release.Info
	for i, r := range releases {
		if i < keep || r.SHA == current {
			kept[r.SHA] = true
			continue
		}
		gone = append(gone, r)
	}
	if len(gone) == 0 {
		return nil
	}
	used := map[string]bool{}
	for _, r := range releases {
		if kept[r.SHA] {
			for _, ref := range r.Built {
				used[ref] = true
			}
		}
	}
	var names, errs []string
	unused := map[string]bool{}
	for _, r := range gone {
		if err := h.RemoveAll(ctx, l.Release(r.SHA)); err != nil {
			errs = append(errs, fmt.Sprintf("remove %s: %v", l.Release(r.SHA), err))
			continue
		}
		names = append(names, short(r.SHA))
		for _, ref := range r.Built {
			if !used[ref] {
				unused[ref] = true
			}
		}
	}
	refs := make([]string, 0, len(unused))
	for ref := range unused {
		refs = append(refs, ref)
	}
	sort.Strings(refs)
	for _, ref := range refs {
		if err := h.RemoveImage(ctx, ref); err != nil {
			errs = append(errs, fmt.Sprintf("remove image %s: %v", ref, err))
		}
	}
	if len(names) > 0 {
		msg := fmt.Sprintf("removed %d old release(s): %s", len(names), strings.Join(names, ", "))
		if len(refs) > 0 {
			msg += fmt.Sprintf("; untagged %d image(s)", len(refs))
		}
		em.info(host, StepPrune, msg)
	}
	if len(errs) > 0 {
		return fmt.Errorf("prune: %s", strings.Join(errs, "; "))
	}
	return nil
}
