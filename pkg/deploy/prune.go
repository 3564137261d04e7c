package deploy

import (
	"context"
	"fmt"
	"strings"

	"github.com/shipdeploy/ship/pkg/release"
)

// prune removes a host's old releases (Store.Prune: it keeps the newest keep and
// current) and untags the images ship built for them that no kept release uses.
func prune(ctx context.Context, e Engine, st *release.Store, keep int, current, host string, em *emitter) error {
	gone, err := st.Prune(ctx, keep, current)
	var errs []string
	if err != nil {
		errs = append(errs, err.Error())
	}
	for _, ref := range gone.Images {
		if err := e.RemoveImage(ctx, ref); err != nil {
			errs = append(errs, fmt.Sprintf("remove image %s: %v", ref, err))
		}
	}
	if len(gone.Releases) > 0 {
		names := make([]string, len(gone.Releases))
		for i, sha := range gone.Releases {
			names[i] = release.Short(sha)
		}
		msg := fmt.Sprintf("removed %d old release(s): %s", len(names), strings.Join(names, ", "))
		if len(gone.Images) > 0 {
			msg += fmt.Sprintf("; untagged %d image(s)", len(gone.Images))
		}
		em.info(host, StepPrune, msg)
	}
	if len(errs) > 0 {
		return fmt.Errorf("prune: %s", strings.Join(errs, "; "))
	}
	return nil
}
