package testenv

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/shipdeploy/ship/pkg/engine"
)

func TestCompose(t *testing.T) {
	bin := Compose(t, engine.ComposeVersion)
	out, err := exec.Command(bin, "version", "--short").CombinedOutput()
	if err != nil {
		t.Fatalf("%s version: %v\n%s", bin, err, out)
	}
	if got := strings.TrimPrefix(strings.TrimSpace(string(out)), "v"); got != engine.ComposeVersion {
		t.Fatalf("docker compose version %q, want %q", got, engine.ComposeVersion)
	}
}
