package image

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/compose-spec/compose-go/v2/types"
	"golang.org/x/sync/errgroup"

	"github.com/shipdeploy/ship/pkg/compose"
)

// parallelBuilds is how many images BuildAll builds at once.
const parallelBuilds = 4

// Target is one image to build: the service that names it and its build config.
type Target struct {
	Service string
	Build   types.BuildConfig
	Ref     string
}

// Targets lists the images a pinned project builds, once each (services sharing an
// image are built once, under the first service's name), sorted by service.
func Targets(p *compose.Project) []Target {
	names := make([]string, 0, len(p.Built))
	for name := range p.Built {
		names = append(names, name)
	}
	sort.Strings(names)
	seen := map[string]bool{}
	var ts []Target
	for _, name := range names {
		ref := p.Built[name]
		s := p.Services[name]
		if seen[ref] || s.Build == nil {
			continue
		}
		seen[ref] = true
		ts = append(ts, Target{Service: name, Build: *s.Build, Ref: ref})
	}
	return ts
}

// Built is one image BuildAll built.
type Built struct {
	Target
	ID       string
	Duration time.Duration
}

// BuildAll builds targets, a few at once; the first failure stops the others. Events
// reach o.Progress one at a time.
func (b *Builder) BuildAll(ctx context.Context, targets []Target, o Options) ([]Built, error) {
	var mu sync.Mutex
	progress := o.Progress
	results := make([]Built, len(targets))
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(parallelBuilds)
	for i, t := range targets {
		g.Go(func() error {
			start := time.Now()
			res := Built{Target: t}
			to := o
			to.Progress = func(e Event) {
				if e.Kind == KindImage {
					res.ID = e.Msg
				}
				if progress != nil {
					mu.Lock()
					defer mu.Unlock()
					progress(e)
				}
			}
			to.emit(Event{Service: t.Service, Kind: KindBuild, Msg: "building " + t.Ref, Ref: t.Ref})
			if err := b.Build(ctx, t.Service, t.Build, t.Ref, to); err != nil {
				return err
			}
			res.Duration = time.Since(start)
			results[i] = res
			done := res
			to.emit(Event{Service: t.Service, Kind: KindBuild, Msg: fmt.Sprintf("built %s in %.1fs", t.Ref, res.Duration.Seconds()), Ref: t.Ref, Built: &done})
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return results, nil
}
