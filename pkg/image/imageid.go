package image

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// maxManifest bounds a manifest read from a registry.
const maxManifest = 4 << 20

// ImageIDs gives the IDs that the image ref in its registry has on an engine once
// pulled: its config's digest (the engine's classic image store), and the digest of
// its manifest (an engine that names images by it, the containerd image store). An
// index of several platforms gives its digest alone (which platform the host pulls is
// not known here); one image platform and its attestations give that image's config
// digest too. A tag not in the registry gives none.
func (r *Registries) ImageIDs(ctx context.Context, ref string) ([]string, error) {
	c, repo, tag, kc, err := r.client(ctx, ref)
	if err != nil {
		return nil, err
	}
	ids, err := c.imageIDs(ctx, repo, tag)
	return ids, kc.RedactError(err)
}

// manifestDoc is the part of an image manifest or an index that ImageIDs reads.
type manifestDoc struct {
	MediaType string `json:"mediaType"`
	Config    struct {
		Digest string `json:"digest"`
	} `json:"config"`
	Manifests []struct {
		Digest      string            `json:"digest"`
		Annotations map[string]string `json:"annotations"`
		Platform    *struct {
			OS string `json:"os"`
		} `json:"platform"`
	} `json:"manifests"`
}

func (c *registryClient) imageIDs(ctx context.Context, repo, tag string) ([]string, error) {
	doc, digest, ok, err := c.getManifest(ctx, repo, tag)
	if err != nil || !ok {
		return nil, err
	}
	ids := []string{digest}
	if doc.Config.Digest != "" {
		return append(ids, doc.Config.Digest), nil
	}
	var images []string
	for _, m := range doc.Manifests {
		if m.Annotations["vnd.docker.reference.type"] == "attestation-manifest" || (m.Platform != nil && m.Platform.OS == "unknown") {
			continue
		}
		images = append(images, m.Digest)
	}
	if len(images) != 1 {
		return ids, nil
	}
	one, _, ok, err := c.getManifest(ctx, repo, images[0])
	if err != nil || !ok {
		return ids, err
	}
	if one.Config.Digest != "" {
		ids = append(ids, one.Config.Digest)
	}
	return ids, nil
}

// getManifest reads the manifest of repo at ref (a tag or a digest), and its digest.
func (c *registryClient) getManifest(ctx context.Context, repo, ref string) (manifestDoc, string, bool, error) {
	path := "/v2/" + repo + "/manifests/" + ref
	accept := map[string]string{"Accept": strings.Join(manifestTypes, ", ")}
	resp, err := c.get(ctx, http.MethodGet, path, accept, "")
	if err != nil {
		return manifestDoc{}, "", false, err
	}
	if resp.StatusCode == http.StatusUnauthorized {
		auth, aerr := c.authorize(ctx, resp, []string{"repository:" + repo + ":pull"})
		resp.Body.Close()
		if aerr != nil {
			return manifestDoc{}, "", false, aerr
		}
		if resp, err = c.get(ctx, http.MethodGet, path, accept, auth); err != nil {
			return manifestDoc{}, "", false, err
		}
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNotFound:
		return manifestDoc{}, "", false, nil
	case http.StatusUnauthorized, http.StatusForbidden:
		return manifestDoc{}, "", false, c.refused()
	default:
		return manifestDoc{}, "", false, fmt.Errorf("GET %s on %s: %s", path, c.host, resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxManifest))
	if err != nil {
		return manifestDoc{}, "", false, fmt.Errorf("GET %s on %s: %w", path, c.host, err)
	}
	var doc manifestDoc
	if err := json.Unmarshal(body, &doc); err != nil {
		return manifestDoc{}, "", false, fmt.Errorf("GET %s on %s: not a manifest: %w", path, c.host, err)
	}
	digest := resp.Header.Get("Docker-Content-Digest")
	if digest == "" {
		digest = fmt.Sprintf("sha256:%x", sha256.Sum256(body))
	}
	return doc, digest, true, nil
}
