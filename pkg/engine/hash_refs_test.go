package engine_test

import (
	"testing"

	"github.com/compose-spec/compose-go/v2/types"

	"github.com/shipdeploy/ship/pkg/engine"
)

func TestWithContainerRefs(t *testing.T) {
	s := types.ServiceConfig{Name: "sidecar"}
	s.NetworkMode = "service:app"
	s.Ipc = "service:db"
	s.Pid = "host"
	ids := map[string]string{"app": "1111", "db": "2222"}
	got := engine.WithContainerRefs(s, func(name string) string { return ids[name] })
	if got.NetworkMode != "container:1111" || got.Ipc != "container:2222" || got.Pid != "host" {
		t.Errorf("network_mode %q, ipc %q, pid %q", got.NetworkMode, got.Ipc, got.Pid)
	}
	if s.NetworkMode != "service:app" || s.Ipc != "service:db" {
		t.Errorf("the caller's service changed: %q, %q", s.NetworkMode, s.Ipc)
	}
	h1, _ := engine.ConfigHash(got)
	ids["app"] = "3333" // app's container replaced: the sidecar's hash changes with it
	h2, _ := engine.ConfigHash(engine.WithContainerRefs(s, func(name string) string { return ids[name] }))
	if h1 == h2 {
		t.Error("the hash does not change with the container the service shares a namespace with")
	}
}
