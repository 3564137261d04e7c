package engine

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"

	"github.com/compose-spec/compose-go/v2/types"
	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/image"
	"github.com/moby/moby/client"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"
)

// ensureImages makes sure every service's image is on the engine, pulling by the
// services' pull_policy, and returns each service's image.
func (e *Engine) ensureImages(ctx context.Context, p *types.Project, services []string, rep *reporter) (map[string]image.InspectResponse, error) {
	type want struct {
		ref, platform string
		services      []string
		always, pull  bool
		policy        string // of the first service, for the error when it may not pull
	}
	byRef := map[string]*want{}
	var refs []string
	for _, name := range services {
		s := p.Services[name]
		ref := imageRef(p.Name, s)
		key := ref + "\x00" + s.Platform
		w := byRef[key]
		if w == nil {
			w = &want{ref: ref, platform: s.Platform}
			byRef[key] = w
			refs = append(refs, key)
		}
		w.services = append(w.services, name)
		policy, _ := pullPolicy(s) // checked already
		if w.policy == "" {
			w.policy = policy
		}
		switch policy {
		case types.PullPolicyAlways:
			w.always, w.pull = true, true
		case types.PullPolicyMissing:
			w.pull = true
		}
	}
	sort.Strings(refs)

	var mu sync.Mutex
	out := map[string]image.InspectResponse{}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(4)
	for _, key := range refs {
		w := byRef[key]
		g.Go(func() error {
			who := strings.Join(w.services, ",")
			img, err := e.imageInspect(gctx, w.ref)
			missing := cerrdefs.IsNotFound(err)
			if err != nil && !missing {
				return fmt.Errorf("inspect image %s: %w", w.ref, err)
			}
			if missing && !w.pull {
				return fmt.Errorf("image %s for service %s is not on the engine and pull_policy is %s", w.ref, who, w.policy)
			}
			if missing || w.always {
				rep.event(who, "", "pull", "pulling "+w.ref)
				if err := e.pull(gctx, w.ref, w.platform); err != nil {
					return fmt.Errorf("pull %s for service %s: %w", w.ref, who, err)
				}
				rep.event(who, "", "pull", "pulled "+w.ref)
				if img, err = e.imageInspect(gctx, w.ref); err != nil {
					return fmt.Errorf("inspect image %s: %w", w.ref, err)
				}
			}
			mu.Lock()
			for _, s := range w.services {
				out[s] = img
			}
			mu.Unlock()
			return nil
		})
	}
	return out, g.Wait()
}

// pull pulls ref and reads the engine's progress to its end, failing on its errors.
func (e *Engine) pull(ctx context.Context, ref, platform string) error {
	var opts client.ImagePullOptions
	if platform != "" {
		pl, err := parsePlatform(platform)
		if err != nil {
			return err
		}
		opts.Platforms = []ocispec.Platform{*pl}
	}
	if e.RegistryAuth != nil {
		auth, err := e.RegistryAuth(ref)
		if err != nil {
			return fmt.Errorf("registry credentials: %w", err)
		}
		opts.RegistryAuth = auth
	}
	resp, err := e.api.ImagePull(ctx, ref, opts)
	if err != nil {
		return err
	}
	defer resp.Close()
	// Read the progress to its end; an error message in it is the pull's error.
	return resp.Wait(ctx)
}
