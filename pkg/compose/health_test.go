package compose

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeCompose(t *testing.T, content string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "docker-compose.yml"), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestHealthWithoutAgent (issue 10, item 4): x-ship.health without a route is accepted
// for agentless deploys and checked on the first published port; without any port it
// is refused at its file:line; shipd (CheckAgent) refuses it on a service it does
// not route, at the line of health.
func TestHealthWithoutAgent(t *testing.T) {
	dir := writeCompose(t, `services:
  web:
    image: example/web
    ports:
      - "127.0.0.1:18080:8080"
    x-ship:
      health: /up
  worker:
    image: example/worker
`)
	p, err := load(t, Options{Dir: dir, Name: "x"})
	if err != nil {
		t.Fatalf("health without a route is refused: %v", err)
	}
	if got := p.HealthPort("web"); got != 8080 {
		t.Errorf("HealthPort(web) = %d, want the published container port 8080", got)
	}
	if got := p.HealthPort("worker"); got != 0 {
		t.Errorf("HealthPort(worker) = %d, want 0 (no health path)", got)
	}
	err = p.CheckAgent()
	if err == nil || !strings.Contains(err.Error(), "docker-compose.yml:7:") || !strings.Contains(err.Error(), `service "web": shipd checks x-ship.health on the routed port`) {
		t.Errorf("shipd's check of health on a service it does not route: %v", err)
	}

	dir = writeCompose(t, `services:
  worker:
    image: example/worker
    x-ship:
      health: /up
`)
	_, err = load(t, Options{Dir: dir, Name: "x"})
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "docker-compose.yml:4:") || !strings.Contains(err.Error(), "has no port to be checked on") {
		t.Errorf("health with no port at all: want a refusal at docker-compose.yml:4, got %v", err)
	}
}
