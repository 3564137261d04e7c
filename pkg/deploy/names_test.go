package deploy

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/types"

	"github.com/shipdeploy/ship/pkg/release"
)

// TestReleaseNames: with the real names, the same commit resolved with another
// environment is another release; the failed one leaves the first untouched on the
// host and the restore puts back exactly the first's file. An identical Prepare
// names the same release.
func TestReleaseNames(t *testing.T) {
	nameFor = release.NameFor
	t.Cleanup(func() { nameFor = func(version string, _ []byte, _ ...release.File) string { return version } })
	f := newFixture(t, "docker-compose.yml")
	prepare := func(version string) *Release {
		rel, err := Prepare(context.Background(), PrepareOptions{
			Config: f.cfg, Env: f.env, SHA: shaA, Environ: []string{"VERSION=" + version}, Redactor: f.redact,
		})
		if err != nil {
			t.Fatal(err)
		}
		for _, ref := range rel.Built {
			f.reg[ref] = true
			f.hosts[0].registry[ref] = true
		}
		return rel
	}
	one, same, other := prepare("v1"), prepare("v1"), prepare("v2")
	if one.Name != same.Name || one.Name == other.Name || one.SHA != shaA || other.SHA != shaA {
		t.Fatalf("names %s, %s, %s: want the first two equal, the third another", one.Name, same.Name, other.Name)
	}
	if !strings.HasPrefix(one.Name, shaA+"-") || len(one.Name) != len(shaA)+1+release.HashLen {
		t.Errorf("the release is named %s, want %s-<hash>", one.Name, shaA)
	}
	f.mustDeploy(one)
	h := f.hosts[0]
	file, _ := h.file(root + "/releases/" + one.Name + "/docker-compose.yml")
	h.unhealthy = func(s types.ServiceConfig) bool {
		return s.Environment["VERSION"] != nil && *s.Environment["VERSION"] == "v2"
	}
	sum, err := f.deploy(other)
	if !errors.Is(err, ErrDeployFailed) || errors.Is(err, ErrRestoreFailed) || sum.Hosts[0].Current != one.Name {
		t.Fatalf("the failed redeploy: %v, %+v", err, sum.Hosts)
	}
	if again, _ := h.file(root + "/releases/" + one.Name + "/docker-compose.yml"); again != file {
		t.Errorf("the first release's file was rewritten")
	}
	if _, ok := h.file(root + "/releases/" + other.Name + "/docker-compose.yml"); !ok {
		t.Errorf("the second release is not beside the first")
	}
	if got := h.link(root + "/current"); got != "releases/"+one.Name {
		t.Errorf("current -> %s", got)
	}
}
