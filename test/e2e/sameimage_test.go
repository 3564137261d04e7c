package e2e

import (
	"context"
	"strings"
	"testing"
)

// TestPlanSameImage: a README-only commit builds the very image the host runs under a
// new tag: the plan says "unchanged: same image" before the deploy, and the container
// is left running (same ID); the new sha tag is on the host for a rollback. A rollback
// against a lock someone holds stops with exit 6 before its plan (the question).
func TestPlanSameImage(t *testing.T) {
	t.Parallel()
	s := newSite(t, siteOptions{})
	shaA := git(t, s.dir, "rev-parse", "HEAD")
	s.push(shaA)
	s.deploy(0, "--untested")
	before := s.containers()["web"]

	s.write("README.md", "# docs only\n")
	shaB := s.commit("README only")
	refB := s.push(shaB)
	r := s.deploy(0, "--untested")
	want := "(unchanged: same image as " + refB + "; left running)"
	if !strings.Contains(r.stdout, "unchanged web") || !strings.Contains(r.stdout, want) {
		t.Errorf("the plan does not say web is unchanged (%q):\n%s", want, r)
	}
	after := s.containers()["web"]
	if after.ID != before.ID || after.State != "running" {
		t.Errorf("web was recreated: %s -> %s (%s)", before.ID, after.ID, after.State)
	}
	if s.current() != shaB {
		t.Errorf("current = %q, want %s", s.current(), shaB)
	}
	if _, err := s.cli.ImageInspect(context.Background(), refB); err != nil {
		t.Errorf("the new sha's tag is not on the host: %v", err)
	}

	// A rollback finds the lock before it shows its plan.
	if l := s.run("lock", "e2e", "--reason", "e2e"); l.code != 0 {
		t.Fatalf("shipctl lock: %s", l)
	}
	rb := s.run("rollback", "e2e")
	if rb.code != 6 || !strings.Contains(rb.stderr, "is locked by") || strings.Contains(rb.stdout, "host(s)):") {
		t.Errorf("rollback of a locked environment: want exit 6 before its plan\n%s", rb)
	}
	if s.current() != shaB {
		t.Errorf("current after the refused rollback = %q, want %s", s.current(), shaB)
	}
	if u := s.run("unlock", "e2e"); u.code != 0 {
		t.Errorf("shipctl unlock: %s", u)
	}
}
