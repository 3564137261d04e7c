package engine_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/shipdeploy/ship/pkg/engine"
)

// slowStopYAML is a web whose stop takes its whole stop_grace_period: the app ignores
// SIGWINCH, so the engine waits, then kills it.
const slowStopYAML = `
services:
  web:
    image: ${IMAGE}
    pull_policy: never
    environment: {VERSION: "%s"}
    ports: ["127.0.0.1::8080"]
    stop_signal: SIGWINCH
    stop_grace_period: 2s
    healthcheck: {interval: 500ms, timeout: 2s, retries: 3}
`

// TestUpRecreateCreatesBeforeStop (issue 13, item 4): a recreated container is created
// while the old one still runs and started right after the old one has stopped; the
// new container ends with the service's container name and the old one is gone.
func TestUpRecreateCreatesBeforeStop(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	s.mustUp(s.load(fmt.Sprintf(slowStopYAML, "1")), engine.UpOptions{Wait: true})
	old := s.inspect(s.name + "-web-1")

	rec := s.mustUp(s.load(fmt.Sprintf(slowStopYAML, "2")), engine.UpOptions{Wait: true})
	created, stopping, started := rec.index("web", "create"), rec.index("web", "remove"), rec.index("web", "start")
	if created < 0 || stopping < 0 || started < 0 || created > stopping || started < stopping {
		t.Errorf("want create, then the old one stopping, then start; got\n%s", rec)
	}
	web := s.inspect(s.name + "-web-1")
	if web.ID == old.ID || !web.State.Running || !strings.Contains(strings.Join(web.Config.Env, " "), "VERSION=2") {
		t.Errorf("%s-web-1 after the recreate: %s running=%v env=%v (old %s)", s.name, web.ID[:12], web.State.Running, web.Config.Env, old.ID[:12])
	}
	if _, err := s.cli.ContainerInspect(context.Background(), old.ID, client.ContainerInspectOptions{}); !cerrdefs.IsNotFound(err) {
		t.Errorf("the old container is still there: %v", err)
	}
}

// TestUpCancelledWhileStoppingFinishesTheSwap (issue 9, item 3): a cancellation while
// the old container stops does not leave the stop in flight behind the caller: Up
// returns once the old container is gone and the new one runs, then says it was
// cancelled.
func TestUpCancelledWhileStoppingFinishesTheSwap(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	s.mustUp(s.load(fmt.Sprintf(slowStopYAML, "1")), engine.UpOptions{Wait: true})
	old := s.inspect(s.name + "-web-1")

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := s.eng.Up(ctx, s.load(fmt.Sprintf(slowStopYAML, "2")), engine.UpOptions{Wait: true, Progress: func(e engine.Event) {
		if e.Action == "remove" && e.Msg == "stopping" {
			cancel()
		}
	}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("up: %v, want context.Canceled", err)
	}
	if _, ierr := s.cli.ContainerInspect(context.Background(), old.ID, client.ContainerInspectOptions{}); !cerrdefs.IsNotFound(ierr) {
		t.Errorf("Up returned while the old container was still there (its stop in flight): %v", ierr)
	}
	web := s.inspect(s.name + "-web-1")
	if web.ID == old.ID || !web.State.Running {
		t.Errorf("after the swap: %s-web-1 is %s running=%v", s.name, web.ID[:12], web.State.Running)
	}
}

// TestUpWaitsForHTTPHealth (issue 10, item 4 / issue 13, item 4): without shipd,
// x-ship.health is waited for as well: Up returns once GET /up answers 2xx on the
// container's address (here the image's HEALTHCHECK is off, so only the GET waits),
// and a path that never answers 2xx fails with a *HealthError that says so.
func TestUpWaitsForHTTPHealth(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	p := s.load(`
services:
  web:
    image: ${IMAGE}
    pull_policy: never
    environment: {SLOW_START: 2s}
    healthcheck: {disable: true}
`)
	rec := s.mustUp(p, engine.UpOptions{Wait: true, HTTPHealth: map[string]engine.HTTPHealth{"web": {Path: "/up", Port: 8080}}})
	i := rec.index("web", "healthy")
	if i < 0 || !strings.Contains(rec.String(), "GET /up answered 200") {
		t.Errorf("no 'GET /up answered 200' event:\n%s", rec)
	}
	web := s.inspect(s.name + "-web-1")
	var ip string
	for _, ep := range web.NetworkSettings.Networks {
		ip = ep.IPAddress.String()
	}
	if body := get(t, "http://"+ip+":8080/up"); !strings.Contains(body, "ok") {
		t.Errorf("GET /up right after Up = %q", body)
	}

	s2 := newStack(t)
	p = s2.load(`
services:
  web:
    image: ${IMAGE}
    pull_policy: never
    environment: {FAIL_HEALTH: "1"}
    healthcheck: {disable: true}
`)
	_, err := s2.up(p, engine.UpOptions{Wait: true, WaitTimeout: 3 * time.Second, HTTPHealth: map[string]engine.HTTPHealth{"web": {Path: "/up", Port: 8080}}})
	var he *engine.HealthError
	if !errors.As(err, &he) || !strings.Contains(he.Status, "x-ship.health: GET /up did not answer 2xx") || !strings.Contains(he.Status, "503") {
		t.Errorf("a health path answering 503: err = %v", err)
	}
}

// inspectCounter is the engine's client, counting the container inspects made through it.
type inspectCounter struct {
	*client.Client
	n atomic.Int32
}

func (c *inspectCounter) ContainerInspect(ctx context.Context, id string, o client.ContainerInspectOptions) (client.ContainerInspectResult, error) {
	c.n.Add(1)
	return c.Client.ContainerInspect(ctx, id, o)
}

// TestUpUnchangedWaitsWithoutInspect (issue 13): an Up that leaves a healthy
// container running waits for it as its container list showed it: no inspect, and
// the HTTP check's GET goes at once to the address the list gave (over a far link,
// each request saved is a round trip).
func TestUpUnchangedWaitsWithoutInspect(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	yaml := `
services:
  web:
    image: ${IMAGE}
    pull_policy: never
    healthcheck: {interval: 500ms, timeout: 2s, retries: 3}
`
	health := map[string]engine.HTTPHealth{"web": {Path: "/up", Port: 8080}}
	s.mustUp(s.load(yaml), engine.UpOptions{Wait: true, HTTPHealth: health})

	counter := &inspectCounter{Client: s.cli}
	s.eng = engine.New(counter)
	rec := s.mustUp(s.load(yaml), engine.UpOptions{Wait: true, HTTPHealth: health})
	if !rec.has("web", "unchanged") || !strings.Contains(rec.String(), "GET /up answered 200") {
		t.Errorf("want web unchanged and GET /up answered 200; got\n%s", rec)
	}
	if n := counter.n.Load(); n != 0 {
		t.Errorf("the unchanged Up inspected containers %d times, want none:\n%s", n, rec)
	}
}

// TestUpRecreateKeepsAnonymousVolumes: a recreated container mounts the anonymous
// volume the old one had at the same place (Up reads it from its container list).
func TestUpRecreateKeepsAnonymousVolumes(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	const yaml = `
services:
  web:
    image: ${IMAGE}
    pull_policy: never
    environment: {VERSION: "%s"}
    volumes: ["/data"]
`
	volumeAt := func(c container.InspectResponse) string {
		for _, m := range c.Mounts {
			if m.Destination == "/data" {
				return m.Name
			}
		}
		return ""
	}
	s.mustUp(s.load(fmt.Sprintf(yaml, "1")), engine.UpOptions{})
	old := s.inspect(s.name + "-web-1")
	s.mustUp(s.load(fmt.Sprintf(yaml, "2")), engine.UpOptions{})
	web := s.inspect(s.name + "-web-1")
	if web.ID == old.ID || volumeAt(old) == "" || volumeAt(web) != volumeAt(old) {
		t.Errorf("/data: old container %s had volume %q, the new one %s has %q", old.ID[:12], volumeAt(old), web.ID[:12], volumeAt(web))
	}
}

// TestUpWaitsForHealthOnEvents (issue 13): the wait for a container's health follows
// the engine's events rather than polling: an inspect, one more as the stream of
// events opens, and the healthy event ends it (polling every 200ms would inspect about
// five times a second until the first health check, a second after the start).
func TestUpWaitsForHealthOnEvents(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	counter := &inspectCounter{Client: s.cli}
	s.eng = engine.New(counter)
	rec := s.mustUp(s.load(`
services:
  web:
    image: ${IMAGE}
    pull_policy: never
    healthcheck: {interval: 1s, timeout: 2s, retries: 3}
`), engine.UpOptions{Wait: true})
	if !rec.has("web", "healthy") {
		t.Fatalf("no healthy event:\n%s", rec)
	}
	if n := counter.n.Load(); n > 4 {
		t.Errorf("the wait inspected the container %d times, want at most 4 (it follows the events):\n%s", n, rec)
	}
}
