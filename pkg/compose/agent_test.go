package compose

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestAgentProblems(t *testing.T) {
	file, err := filepath.Abs(filepath.Join("testdata", "agent", "docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	p, err := LoadResolved(context.Background(), "shop", filepath.Dir(file), file, data)
	if err != nil {
		t.Fatal(err)
	}
	err = p.CheckAgent(file)
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("CheckAgent = %v, want an error matching ErrInvalid", err)
	}
	var ae *AgentError
	if !errors.As(err, &ae) {
		t.Fatalf("CheckAgent = %T", err)
	}
	var got []string
	for _, pr := range ae.Problems {
		got = append(got, fmt.Sprintf("%s:%d: %s", filepath.Base(pr.File), pr.Line, pr.Msg[:strings.Index(pr.Msg, ",")]))
	}
	want := []string{
		`docker-compose.yml:10: service "api" has network_mode "host"`,
		`docker-compose.yml:14: service "migrate": a pre-deploy job runs before any switch`,
		`docker-compose.yml:4: service "web" publishes ports`,
		`docker-compose.yml:5: service "web" has container_name "web"`,
		`docker-compose.yml:6: service "web" mounts the named volume "data" writable`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("problems:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// Not routed: db may publish ports and mount its volume; a read-only mount is fine.
	if msg := err.Error(); strings.Contains(msg, `"db" publishes`) || strings.Contains(msg, `"ro"`) || !strings.Contains(msg, "shipd cannot deploy blue-green") {
		t.Errorf("message:\n%s", msg)
	}

	ok := "services:\n  web:\n    image: app\n    volumes: [\"ro:/ro:ro\"]\n    x-ship: {port: 8080, listen: ':80'}\n  db:\n    image: postgres\n    ports: ['5432:5432']\nvolumes:\n  ro: {}\n"
	p, err = LoadResolved(context.Background(), "shop", "/srv/shop", "/srv/shop/docker-compose.yml", []byte(ok))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.CheckAgent(); err != nil {
		t.Errorf("a release shipd can deploy: %v", err)
	}
}
