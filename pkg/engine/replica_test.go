package engine_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/shipdeploy/ship/pkg/engine"
)

const replicaYAML = `
services:
  web:
    image: ${IMAGE}
    pull_policy: never
    environment:
      VERSION: "%s"
    stop_grace_period: 2s
    healthcheck: {interval: 300ms, timeout: 2s, retries: 3}
`

// A replica started beside the running container is a container of the service as
// Up makes it: once the first is removed, Up leaves the replica alone.
func TestStartReplicaBesideTheFirstThenUpLeavesItAlone(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	p := s.load(strings.Replace(replicaYAML, "%s", "one", 1))
	s.mustUp(p, engine.UpOptions{Wait: true})

	first, err := s.eng.Replicas(ctx, s.name, "web")
	if err != nil || len(first) != 1 {
		t.Fatalf("replicas before: %v, %v", first, err)
	}
	if why, err := s.eng.Outdated(ctx, p, "web", first[0]); err != nil || why != "" {
		t.Fatalf("the container Up made is outdated: %q, %v", why, err)
	}
	// The next release's configuration: a replica of it is outdated for the old one.
	p2 := s.load(strings.Replace(replicaYAML, "%s", "two", 1))
	if why, _ := s.eng.Outdated(ctx, p2, "web", first[0]); why != "configuration changed" {
		t.Errorf("outdated for a changed service: %q", why)
	}

	rec := &recorder{}
	r, err := s.eng.StartReplica(ctx, p2, "web", engine.ReplicaOptions{Labels: map[string]string{"dev.ship.release": "two"}, Progress: rec.add})
	if err != nil {
		t.Fatalf("start replica: %v\n%s", err, rec)
	}
	if r.Number != 2 || r.Name != s.name+"-web-2" || r.Labels["dev.ship.release"] != "two" || r.Labels["com.docker.compose.project"] != s.name {
		t.Errorf("replica: number %d, name %s, labels %v", r.Number, r.Name, r.Labels)
	}
	if err := s.eng.WaitReplica(ctx, r, 30*time.Second, nil); err != nil {
		t.Fatalf("wait: %v", err)
	}
	network := engine.ServiceNetwork(p2, "web")
	if network != s.name+"_default" {
		t.Errorf("service network = %q", network)
	}
	addr, err := s.eng.ReplicaAddr(ctx, r.ID, network, 8080)
	if err != nil {
		t.Fatal(err)
	}
	if body := get(t, "http://"+addr+"/version"); !strings.Contains(body, `"two"`) {
		t.Errorf("replica answers %q", body)
	}
	both, err := s.eng.Replicas(ctx, s.name, "web")
	if err != nil || len(both) != 2 || both[0].Number != 1 || both[1].Number != 2 {
		t.Fatalf("replicas during the swap: %+v, %v", both, err)
	}
	if err := s.eng.RemoveReplica(ctx, both[0], nil); err != nil {
		t.Fatal(err)
	}
	if err := s.eng.RemoveReplica(ctx, both[0], nil); err != nil {
		t.Errorf("removing a removed container: %v", err)
	}

	rec = s.mustUp(p2, engine.UpOptions{Wait: true})
	if !rec.has("web", "unchanged") || rec.has("web", "recreate") || rec.has("web", "create") {
		t.Errorf("Up after the swap: want web unchanged; got\n%s", rec)
	}
	after, _ := s.eng.Replicas(ctx, s.name, "web")
	if len(after) != 1 || after[0].ID != r.ID {
		t.Errorf("after Up: %+v, want only the replica", after)
	}
}

func TestStartReplicaRefusesWhatCannotRunTwice(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for name, yaml := range map[string]string{
		"ports":          "services:\n  web:\n    image: ${IMAGE}\n    ports: [\"127.0.0.1::8080\"]\n",
		"container_name": "services:\n  web:\n    image: ${IMAGE}\n    container_name: only-one\n",
	} {
		p := s.load(yaml)
		_, err := s.eng.StartReplica(ctx, p, "web", engine.ReplicaOptions{})
		if !errors.Is(err, engine.ErrNoReplica) || !strings.Contains(err.Error(), name) {
			t.Errorf("%s: err = %v, want ErrNoReplica naming %s", name, err, name)
		}
	}
	if cs, _ := s.eng.Containers(ctx, s.name); len(cs) != 0 {
		t.Errorf("refused replicas left %d containers", len(cs))
	}
}
