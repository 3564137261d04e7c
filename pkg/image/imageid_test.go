package image

import (
	"context"
	"net/http"
	"net/http/httptest"
	"reflect"
	"testing"
)

// TestImageIDsOfIndex: an index (what BuildKit pushes: the image and its attestation)
// gives its own digest and its one image's config digest; an index of two platforms
// gives its digest alone. The in-process registry of test/testenv holds the engine's
// single manifests (TestRegistryCheck in pkg/deploy); indexes are served by a stand-in.
func TestImageIDsOfIndex(t *testing.T) {
	const image = `{"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"digest":"sha256:config1"}}`
	index := map[string]string{
		"one": `{"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[
			{"digest":"sha256:img1","platform":{"os":"linux","architecture":"amd64"}},
			{"digest":"sha256:att1","platform":{"os":"unknown","architecture":"unknown"},"annotations":{"vnd.docker.reference.type":"attestation-manifest"}}]}`,
		"two": `{"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[
			{"digest":"sha256:img1","platform":{"os":"linux","architecture":"amd64"}},
			{"digest":"sha256:img2","platform":{"os":"linux","architecture":"arm64"}}]}`,
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/v2/app/manifests/{ref}", func(w http.ResponseWriter, r *http.Request) {
		ref := r.PathValue("ref")
		switch {
		case ref == "sha256:img1":
			w.Header().Set("Docker-Content-Digest", ref)
			_, _ = w.Write([]byte(image))
		case index[ref] != "":
			w.Header().Set("Docker-Content-Digest", "sha256:index-"+ref)
			_, _ = w.Write([]byte(index[ref]))
		default:
			http.NotFound(w, r)
		}
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	c := newRegistryClient(hostOf(srv), Credentials{}, func() bool { return true })
	for ref, want := range map[string][]string{
		"one":  {"sha256:index-one", "sha256:config1"},
		"two":  {"sha256:index-two"},
		"none": nil,
	} {
		got, err := c.imageIDs(context.Background(), "app", ref)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("%s: %v, %v; want %v", ref, got, err, want)
		}
	}
}
