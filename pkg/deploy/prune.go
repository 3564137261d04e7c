package deploy

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/shipdeploy/ship/pkg/release"
)

// prune removes a host's old releases (Store.Prune: it keeps the newest keep and
// current) and untags the images ship built for them that no kept release uses.
func prune(ctx context.Context, e Engine, st *release.Store, keep int, current, host string, em *emitter) error {
	return pruneListed(ctx, e, st, nil, keep, current, host, em)
}

// pruneListed is prune with the releases as listed (nil: listed now).
func pruneListed(ctx context.Context, e Engine, st *release.Store, listed *listing, keep int, current, host string, em *emitter) error {
	var gone release.Pruned
	var err error
	if releases, lerr := listed.wait(); listed != nil && lerr == nil {
		gone, err = st.PruneListed(ctx, releases, keep, current)
	} else {
		gone, err = st.Prune(ctx, keep, current)
	}
	var errs []string
	if err != nil {
		errs = append(errs, err.Error())
	}
	for _, ref := range gone.Images {
		if err := e.RemoveImage(ctx, ref); err != nil {
			errs = append(errs, fmt.Sprintf("remove image %s: %v", ref, err))
		}
	}
	if msg := gone.Said(len(gone.Images)); msg != "" {
		em.info(host, StepPrune, msg)
	}
	if len(errs) > 0 {
		return fmt.Errorf("prune: %s", strings.Join(errs, "; "))
	}
	return nil
}

// listing is the host's releases listed in the background while the deploy runs, for
// prune.
type listing struct {
	done     chan struct{}
	releases []release.Info
	err      error
}

// listReleases starts the listing.
func listReleases(ctx context.Context, st *release.Store) *listing {
	l := &listing{done: make(chan struct{})}
	go func() {
		defer close(l.done)
		l.releases, l.err = st.Releases(ctx)
	}()
	return l
}

// wait waits for the listing; a nil listing is none (an error).
func (l *listing) wait() ([]release.Info, error) {
	if l == nil {
		return nil, errNoListing
	}
	<-l.done
	return l.releases, l.err
}

var errNoListing = errors.New("no listing")
