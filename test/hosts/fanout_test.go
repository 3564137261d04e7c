package hosts

import (
	"strings"
	"testing"
	"time"

	"github.com/shipdeploy/ship/test/testhost"
)

// TestDeployToThreeHosts: one environment of three hosts, each with its own engine
// pulling from the registry through its own loopback: agent install and deploys reach
// every one, and each serves the release.
func TestDeployToThreeHosts(t *testing.T) {
	began := time.Now()
	c := testhost.Start(t, 3)
	s := newSite(t, c, siteOptions{restart: "unless-stopped"})
	v1, v2 := s.version("v1"), s.version("v2")
	r := s.install()
	if n := strings.Count(r.stdout, "shipd.service started"); n != 3 {
		t.Errorf("agent install started shipd on %d of 3 hosts:\n%s", n, r)
	}
	u := unit{c.Hosts[0]}
	for _, h := range c.Hosts {
		u.h = h
		u.waitServing(t, 0)
	}
	for _, d := range []struct{ sha, version string }{{v1, "v1"}, {v2, "v2"}, {v1, "v1"}} {
		begin := time.Now()
		s.deploy(d.sha)
		t.Logf("deploy of %s to 3 hosts: %s", d.version, time.Since(begin).Round(time.Millisecond))
		s.mustServe(d.version)
		for _, h := range c.Hosts {
			if got := s.current(h); got != d.sha {
				t.Errorf("%s: current %s, want %s", h.Name, short(got), short(d.sha))
			}
		}
	}
	t.Logf("the whole test took %s", time.Since(began).Round(time.Second))
}
