package agent

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shipdeploy/ship/test/testenv"
)

func TestExampleConfigIsTheDefaults(t *testing.T) {
	file := filepath.Join(testenv.RepoRoot(), "configs", "shipd.yaml")
	c, err := LoadConfig(file)
	if err != nil {
		t.Fatal(err)
	}
	want := DefaultConfig()
	want.File, want.SocketGroup = file, "deploy"
	if c != want {
		t.Errorf("configs/shipd.yaml:\n got %+v\nwant %+v", c, want)
	}
}

func TestLoadConfig(t *testing.T) {
	// Without a file at the default place: the defaults.
	if _, err := os.Stat(DefaultConfigFile); errors.Is(err, os.ErrNotExist) {
		c, err := LoadConfig(DefaultConfigFile)
		if err != nil || c.Socket != "/run/shipd/shipd.sock" || c.Health.Deadline != 30*time.Second {
			t.Errorf("defaults: %+v, %v", c, err)
		}
	}
	// A file named on the command line must be there.
	if _, err := LoadConfig(filepath.Join(t.TempDir(), "shipd.yaml")); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("missing file: %v", err)
	}
}

func TestParseConfig(t *testing.T) {
	tests := []struct {
		name, yaml string
		want       []string // every problem, in order; nil: valid
		check      func(c Config) bool
	}{
		{name: "empty", yaml: "", check: func(c Config) bool { return c.State == DefaultState && c.Drain == 30*time.Second }},
		{name: "comments only", yaml: "# nothing\n", check: func(c Config) bool { return c.LogLevel == "info" }},
		{
			name: "values", yaml: "socket: /tmp/s.sock\nsocket_group: '1001'\nhealth:\n  interval: 200ms\nlog_level: debug\ntrust_forwarded: true\n",
			check: func(c Config) bool {
				return c.Socket == "/tmp/s.sock" && c.SocketGroup == "1001" && c.Health.Interval == 200*time.Millisecond &&
					c.Health.Timeout == 5*time.Second && c.LogLevel == "debug" && c.TrustForwarded
			},
		},
		{
			name: "every problem at once",
			yaml: "socket: run/shipd.sock\nsocketgroup: deploy\nhealth:\n  interval: soon\n  deadline: -1s\nlog_level: loud\ndrain: 0s\n",
			want: []string{
				"line 1: socket:", "line 2: field socketgroup not found", "line 4:", "line 5: health.deadline:", "line 6: log_level:", "line 7: drain:",
			},
		},
		{
			name: "acme", yaml: "acme:\n  directory: https://ca.internal/acme/directory\n  email: ops@example.com\n  roots: /etc/shipd/ca.pem\n",
			check: func(c Config) bool {
				return c.ACME.Directory == "https://ca.internal/acme/directory" && c.ACME.Email == "ops@example.com" && c.ACME.Roots == "/etc/shipd/ca.pem"
			},
		},
		{name: "acme defaults to Let's Encrypt production", yaml: "acme: {staging: true}\n", check: func(c Config) bool { return c.ACME.Staging && c.ACME.Directory == "" }},
		{
			name: "acme problems",
			yaml: "state: /var/lib/shipd/state.json\nacme:\n  directory: http://ca.internal/dir\n  staging: true\n  email: not an address\n  roots: ca.pem\n  contact: x\n",
			want: []string{"line 3: acme.directory: \"http://ca.internal/dir\" is not an https URL", "line 4: acme.staging:", "line 5: acme.email:", "line 6: acme.roots:", "line 7: field contact not found"},
		},
		{name: "not a mapping", yaml: "- a\n- b\n", want: []string{"cannot unmarshal"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ParseConfig("shipd.yaml", []byte(tt.yaml))
			if tt.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				if !tt.check(c) {
					t.Errorf("config %+v", c)
				}
				return
			}
			if !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("err %v", err)
			}
			lines := strings.Split(err.Error(), "\n")[1:]
			if len(lines) != len(tt.want) {
				t.Fatalf("problems:\n%s\nwant %d", err, len(tt.want))
			}
			for i, w := range tt.want {
				if !strings.Contains(lines[i], w) {
					t.Errorf("problem %d: %q, want %q", i, lines[i], w)
				}
			}
		})
	}
}
