package deploy

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/shipdeploy/ship/pkg/config"
	"github.com/shipdeploy/ship/pkg/release"
)

// TestStatusDrift: current points at A while the containers run B: status says which
// container runs what, and the command that fixes it; in sync, no drift.
func TestStatusDrift(t *testing.T) {
	f := newFixture(t, "docker-compose.yml")
	f.mustDeploy(f.release(shaA))
	f.mustDeploy(f.release(shaB))
	st, err := Status(context.Background(), f.target())
	if err != nil || st[0].Err != nil || len(st[0].Drift) != 0 {
		t.Fatalf("status in sync: %+v, %v", st, err)
	}
	f.hosts[0].switchTo(shaA)
	st, _ = Status(context.Background(), f.target())
	d := st[0].Drift
	if len(d) != 1 || d[0].Service != "web" || d[0].Release != shaB ||
		d[0].Msg != "shop-web-1 runs another configuration of web than current release "+release.Short(shaA)+" (created by release "+release.Short(shaB)+")" {
		t.Errorf("drift = %+v", d)
	}
	if want := "shipctl rollback prod " + release.Short(shaA); !strings.HasPrefix(st[0].Fix, want) {
		t.Errorf("fix = %q, want %q...", st[0].Fix, want)
	}
}

// TestPlaceOfAnotherEnvironment: before anything changes, a deploy is refused on a
// folder whose current release another environment deployed, and on a project that
// runs containers of another folder.
func TestPlaceOfAnotherEnvironment(t *testing.T) {
	f := newFixture(t, "docker-compose.yml")
	f.mustDeploy(f.release(shaA))
	h := f.hosts[0]
	prod := f.env

	f.env = &config.Environment{Name: "staging", Path: root, Keep: 5, EnvFile: ".env.prod", Hosts: prod.Hosts}
	ops := len(h.ops)
	_, err := f.deploy(f.release(shaB))
	if !errors.Is(err, ErrOtherEnvironment) || !strings.Contains(err.Error(), "holds environment prod's releases") {
		t.Errorf("a folder of prod: %v", err)
	}
	f.env = &config.Environment{Name: "staging", Path: "/srv/shop-staging", Keep: 5, EnvFile: ".env.prod", Hosts: prod.Hosts, Project: "shop"}
	_, err = f.deploy(f.release(shaB))
	if !errors.Is(err, ErrOtherEnvironment) || !strings.Contains(err.Error(), "the compose project shop on this host runs shop-redis-1 from "+root+"/releases/"+shaA) {
		t.Errorf("a project of prod: %v", err)
	}
	reads := map[string]bool{"containers": true, "read": true, "readlink": true, "readdir": true, "ping": true, "check": true, "hasimage": true}
	for _, op := range h.ops[ops:] {
		name, p, _ := strings.Cut(op, " ")
		// The lock, and the upload's stage the preflight makes (removed again).
		lock := strings.Contains(p, "/.lock") || strings.Contains(p, "/.tmp/unlocked-") ||
			((name == "mkdir" || name == "remove") && strings.Contains(p, "/.tmp/release-")) ||
			((name == "mkdirall" || name == "remove") && (p == root || p == root+"/.tmp" || p == "/srv/shop-staging" || p == "/srv/shop-staging/.tmp"))
		if !reads[name] && !lock { // the lock is taken before the checks and released
			t.Errorf("a refused deploy did %s", op)
		}
	}
	for _, p := range h.under(root + "/.tmp") {
		if strings.HasPrefix(p, "release-") {
			t.Errorf("the refused deploy left its stage %s", p)
		}
	}
	if h.exists("/srv/shop-staging") {
		t.Errorf("the refused deploy left its folder: %v", h.under("/srv/shop-staging"))
	}
	if got := h.link(root + "/current"); got != "releases/"+shaA {
		t.Errorf("current -> %s", got)
	}
}
