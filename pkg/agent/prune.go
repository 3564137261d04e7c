package agent

import (
	"context"
	"fmt"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/client"

	"github.com/shipdeploy/ship/pkg/agentapi"
)

// pruneTimeout bounds the prune after a deploy: a few folders and image tags.
const pruneTimeout = time.Minute

// prune removes the app's old releases after a deploy that made req.sha current, as
// the request's keep asks (shipctl's keep): the release folders through the local
// Store, the images ship built for them that no kept release uses through the local
// engine. shipctl would do the same over SFTP and the engine's socket, a round trip
// or more for each; here it costs the client none. A failure is a warning: the deploy
// succeeded.
func (a *agent) prune(ctx context.Context, req request, em *emitter) *agentapi.Pruned {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), pruneTimeout)
	defer cancel()
	gone, err := newStore(req.path).Prune(ctx, req.keep, req.sha)
	var errs []string
	if err != nil {
		errs = append(errs, err.Error())
	}
	out := &agentapi.Pruned{Releases: gone.Releases}
	for _, ref := range gone.Images {
		_, err := a.docker.ImageRemove(ctx, ref, client.ImageRemoveOptions{PruneChildren: true})
		switch {
		case err == nil, cerrdefs.IsNotFound(err):
			out.Images = append(out.Images, ref)
		case cerrdefs.IsConflict(err):
			// In use (another app runs it): it stays, as shipctl's prune leaves it.
		default:
			errs = append(errs, fmt.Sprintf("remove image %s: %v", ref, err))
		}
	}
	if msg := gone.Said(len(out.Images)); msg != "" {
		em.info(agentapi.StepPrune, "", msg)
	}
	if len(errs) > 0 {
		out.Error = "prune: " + strings.Join(errs, "; ")
		em.warn(agentapi.StepPrune, "", out.Error)
	}
	return out
}
