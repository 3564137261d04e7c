package engine_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/moby/moby/client"

	"github.com/shipdeploy/ship/pkg/engine"
	"github.com/shipdeploy/ship/test/testenv"
)

// What Up changes, and leaves alone, as docker compose does: a new tag of the same
// image, a changed network or volume, a dependency with restart: true.

// A new tag of the same image (a commit that changed no file of the image: the tag is
// the sha) leaves the container running, and its volume with it; both tags stay on the
// host. Another change with the new tag recreates it.
func TestUpLeavesRunningANewTagOfTheSameImage(t *testing.T) {
	t.Parallel()
	cli := testenv.Docker(t)
	testenv.AppImage(t, cli)
	ctx := context.Background()
	s := newStack(t)
	oldRef, newRef := "ship-test/sametag:"+s.name+"-a", "ship-test/sametag:"+s.name+"-b"
	t.Cleanup(func() { // registered before the stack's Down: runs after it
		for _, ref := range []string{oldRef, newRef} {
			// Only the tags: the image is the shared test app's.
			if _, err := cli.ImageRemove(ctx, ref, client.ImageRemoveOptions{}); err != nil {
				t.Errorf("remove tag %s: %v", ref, err)
			}
		}
	})
	for _, ref := range []string{oldRef, newRef} {
		if _, err := cli.ImageTag(ctx, client.ImageTagOptions{Source: testenv.AppImageRef, Target: ref}); err != nil {
			t.Fatal(err)
		}
	}
	yaml := func(ref, version string) string {
		return `
services:
  kv:
    image: ` + ref + `
    pull_policy: never
    environment: {VERSION: "` + version + `"}
    volumes: [data:/data]
volumes:
  data: {}
`
	}
	s.mustUp(s.load(yaml(oldRef, "1")), engine.UpOptions{})
	first := s.inspect(s.name + "-kv-1")

	rec := s.mustUp(s.load(yaml(newRef, "1")), engine.UpOptions{})
	if i := rec.index("kv", "unchanged"); i < 0 || rec.events[i].Msg != "same image" || rec.has("kv", "recreate") {
		t.Errorf("new tag, same image: want unchanged (same image); got\n%s", rec)
	}
	if c := s.inspect(s.name + "-kv-1"); c.ID != first.ID || !c.State.Running || c.Config.Image != oldRef {
		t.Errorf("container %s (%s, running %v), want %s left running on %s", c.ID[:12], c.Config.Image, c.State.Running, first.ID[:12], oldRef)
	}
	for _, ref := range []string{oldRef, newRef} {
		if _, err := cli.ImageInspect(ctx, ref); err != nil {
			t.Errorf("tag %s is gone: %v", ref, err)
		}
	}
	// shipd's swap asks Outdated: the same answer.
	reps, err := s.eng.Replicas(ctx, s.name, "kv")
	if err != nil || len(reps) != 1 {
		t.Fatalf("replicas: %v, %v", reps, err)
	}
	if why, err := s.eng.Outdated(ctx, s.load(yaml(newRef, "1")), "kv", reps[0]); why != "" || err != nil {
		t.Errorf("Outdated for a new tag of the same image: %q, %v", why, err)
	}
	if why, _ := s.eng.Outdated(ctx, s.load(yaml(newRef, "2")), "kv", reps[0]); why != "configuration changed" {
		t.Errorf("Outdated for a new tag and a new environment: %q", why)
	}

	rec = s.mustUp(s.load(yaml(newRef, "2")), engine.UpOptions{})
	if i := rec.index("kv", "recreate"); i < 0 || rec.events[i].Msg != "configuration changed" {
		t.Errorf("new tag and new environment: want recreate; got\n%s", rec)
	}
	if c := s.inspect(s.name + "-kv-1"); c.ID == first.ID || c.Config.Image != newRef {
		t.Errorf("container runs %s, want a new one on %s", c.Config.Image, newRef)
	}
}

// Networks and volumes carry docker compose's config hash. A network whose definition
// changed is made again, its containers stopped first and created again on it; a
// changed volume is refused, naming it and the consent, before anything changes, and
// with `x-ship-recreate: true` it is made again.
func TestUpRecreatesChangedNetworkAndVolumeWithConsent(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	ctx := context.Background()
	yaml := func(netLabel, volLabel, consent string) string {
		return `
services:
  web:
    image: ${IMAGE}
    networks: [back]
    volumes: [data:/data]
networks:
  back:
    labels: {ship.test: "` + netLabel + `"}
volumes:
  data:
    labels: {ship.test: "` + volLabel + `"}
` + consent
	}
	p := s.load(yaml("1", "1", ""))
	s.mustUp(p, engine.UpOptions{})
	first := s.inspect(s.name + "-web-1")
	netHash := func() string {
		t.Helper()
		n, err := s.cli.NetworkInspect(ctx, s.name+"_back", client.NetworkInspectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return n.Network.Labels["com.docker.compose.config-hash"]
	}
	want, err := engine.NetworkHash(p.Networks["back"])
	if err != nil {
		t.Fatal(err)
	}
	if got := netHash(); got != want {
		t.Errorf("network config-hash label %q, want %q", got, want)
	}
	vol, err := s.cli.VolumeInspect(ctx, s.name+"_data", client.VolumeInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if want, _ := engine.VolumeHash(p.Volumes["data"]); vol.Volume.Labels["com.docker.compose.config-hash"] != want {
		t.Errorf("volume config-hash label %q, want %q", vol.Volume.Labels["com.docker.compose.config-hash"], want)
	}

	// An Up of some services (shipd's swap, a job) leaves a changed network as it is:
	// the other containers on it would not be made again.
	s.mustUp(s.load(yaml("2", "2", "")), engine.UpOptions{Services: []string{"web"}})
	if c := s.inspect(s.name + "-web-1"); c.ID != first.ID || netHash() != want {
		t.Errorf("an Up of some services changed the network: container %s, label %s", c.ID[:12], netHash())
	}

	rec := s.mustUp(s.load(yaml("2", "1", "")), engine.UpOptions{})
	second := s.inspect(s.name + "-web-1")
	if second.ID == first.ID || !second.State.Running || netHash() == want {
		t.Errorf("changed network: container %s -> %s (running %v), label %s; events:\n%s", first.ID[:12], second.ID[:12], second.State.Running, netHash(), rec)
	}
	if i, j := rec.index("web", "remove"), rec.index("web", "create"); i < 0 || j < i {
		t.Errorf("changed network: want web stopped, then created again; events:\n%s", rec)
	}

	_, err = s.up(s.load(yaml("2", "2", "")), engine.UpOptions{})
	var vc *engine.VolumeChangedError
	if !errors.As(err, &vc) || vc.Volume != "data" || !strings.Contains(err.Error(), "x-ship-recreate: true") {
		t.Fatalf("changed volume without consent: err = %v", err)
	}
	if c := s.inspect(s.name + "-web-1"); c.ID != second.ID || !c.State.Running {
		t.Errorf("the refused up changed the container: %s running %v", c.ID[:12], c.State.Running)
	}

	rec = s.mustUp(s.load(yaml("2", "2", "    x-ship-recreate: true\n")), engine.UpOptions{})
	vol2, err := s.cli.VolumeInspect(ctx, s.name+"_data", client.VolumeInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if vol2.Volume.Labels["ship.test"] != "2" { // labels of a volume change only when it is made again
		t.Errorf("volume not made again: %+v; events:\n%s", vol2.Volume, rec)
	}
	if c := s.inspect(s.name + "-web-1"); c.ID == second.ID || !c.State.Running {
		t.Errorf("with consent: container %s running %v, want a new one", c.ID[:12], c.State.Running)
	}
}

// depends_on restart: true: the dependent is stopped before its dependency is
// recreated and started again after (same container), as docker compose does; without
// it the dependent runs on untouched.
func TestUpRestartsDependentsWithRestartTrue(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	yaml := func(version string) string {
		return `
services:
  db:
    image: ${IMAGE}
    environment: {VERSION: "` + version + `"}
  app:
    image: ${IMAGE}
    depends_on:
      db: {condition: service_started, restart: true}
  other:
    image: ${IMAGE}
    depends_on:
      db: {condition: service_started}
`
	}
	s.mustUp(s.load(yaml("1")), engine.UpOptions{})
	app, other := s.inspect(s.name+"-app-1"), s.inspect(s.name+"-other-1")

	rec := s.mustUp(s.load(yaml("2")), engine.UpOptions{})
	stop, recreate, start := rec.index("app", "stop"), rec.index("db", "recreate"), rec.index("app", "start")
	if stop < 0 || recreate < 0 || start < 0 || !(recreate < stop && stop < start) {
		t.Errorf("want db recreate, app stop, app start in that order; got\n%s", rec)
	}
	if c := s.inspect(s.name + "-app-1"); c.ID != app.ID || !c.State.Running || c.State.StartedAt == app.State.StartedAt {
		t.Errorf("app: %s running %v started %s, want the same container started again", c.ID[:12], c.State.Running, c.State.StartedAt)
	}
	if c := s.inspect(s.name + "-other-1"); c.ID != other.ID || c.State.StartedAt != other.State.StartedAt || rec.has("other", "stop") {
		t.Errorf("other (no restart: true) was touched:\n%s", rec)
	}
}
