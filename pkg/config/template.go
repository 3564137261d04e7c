package config

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"

	"gopkg.in/yaml.v3"
)

// TemplateInput is what `shipctl init` learned about the application.
type TemplateInput struct {
	App      string // made valid with AppName when it is not
	Compose  string // default docker-compose.yml
	Registry string // empty: the registry line is written commented out
	Services []TemplateService
}

// TemplateService is one service of the compose file.
type TemplateService struct {
	Name  string
	Build bool     // it has build: so its image is ours to build and push
	Ports []string // published ports as written in the compose file
}

// Template writes a commented ship.yaml in which every key is explained, with
// example environments staging and prod. Parse accepts it whenever
// in.Registry is empty or a valid registry.
func Template(in TemplateInput) []byte {
	app := in.App
	if !validApp(app) {
		app = AppName(app)
	}
	compose := in.Compose
	if compose == "" {
		compose = DefaultCompose
	}
	var b bytes.Buffer
	w := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }

	w("# ship.yaml: how shipctl builds, tests and deploys %s.\n", app)
	w("# Unknown keys are errors. Durations are Go durations (30s, 2m, 1h30m).\n")
	w("# Relative paths are relative to this file. Settings from the command line win\n")
	w("# over SHIP_* environment variables, which win over this file.\n")
	w("# Top-level keys starting with \"x-\" are ignored: a place for YAML &anchors.\n\n")

	w("# Compose project name on the hosts: lowercase letters, digits, \"-\" and \"_\".\n")
	w("app: %s\n\n", scalar(app))

	w("# The compose file to deploy (default docker-compose.yml).\n")
	if len(in.Services) > 0 {
		w("# Its services:\n")
		writeServices(&b, in.Services)
	}
	w("compose: %s\n\n", scalar(compose))

	w("# The test stack: a build is pushed or deployed only after it passes.\n")
	w("test:\n")
	w("  compose: %s   # default; the stack that must pass\n", DefaultTestCompose)
	w("  service: %s                      # its exit code decides; default \"test\"\n", DefaultTestService)
	w("  timeout: 10m                       # the run fails after this long; default 10m\n\n")

	w("# Images of services with build: are pushed as <registry>/<image>:<git sha>.\n")
	w("# host[:port][/path], no scheme; SHIP_REGISTRY overrides it. Credentials never go\n")
	w("# here: shipctl uses docker's config.json (docker login) or SHIP_REGISTRY_USER and\n")
	w("# SHIP_REGISTRY_PASSWORD.\n")
	if in.Registry == "" {
		w("# registry: %s\n\n", registryExample)
	} else {
		w("registry: %s\n\n", scalar(in.Registry))
	}

	w("# Where to deploy: shipctl deploy staging, shipctl ship prod. Replace the example\n")
	w("# hosts with yours.\n")
	w("environments:\n")
	w("  staging:\n")
	w("    # SSH destinations, [user@]host[:port] (IPv6 as [2001:db8::1]:22); at least one.\n")
	w("    # Host keys are checked against ~/.ssh/known_hosts.\n")
	w("    hosts: [deploy@staging.example.com]\n")
	w("    # Folder on the hosts for releases/, current and audit.log; absolute.\n")
	w("    path: /srv/%s\n", app)
	w("  prod:\n")
	w("    hosts:\n")
	w("      - deploy@web1.example.com\n")
	w("      - deploy@web2.example.com:2222\n")
	w("    path: /srv/%s\n", app)
	w("    # project: %s-prod # compose project on the hosts (default <app>-<env>; %s keeps the\n", app, app)
	w("    #                  # name of hosts deployed before projects were per environment)\n")
	w("    confirm: true     # show sha, hosts and plan and ask y/N; --yes answers for CI (default false)\n")
	w("    grace: 30s        # countdown before the first change; Ctrl-C cancels with nothing touched (default 0s)\n")
	w("    agent: false      # true: blue-green through shipd, see shipctl agent install (default false)\n")
	w("    # env_file: .env.prod             # values for compose interpolation on this environment\n")
	w("    # known_hosts: deploy/known_hosts # host keys trusted besides ~/.ssh/known_hosts (for CI)\n")
	w("    parallel: 0       # hosts deployed at once; 0 = all (default 0)\n")
	w("    keep: 5           # releases kept on each host, at least 1 (default 5)\n")
	w("    docker_socket: %s   # the Docker engine's socket on the hosts (default)\n", DefaultDockerSocket)
	w("    # tls: {cert: deploy/tls/cert.pem, key: deploy/tls/key.pem}  # the app's own HTTPS certificate for shipd (keep the key out of git)\n\n")

	w("# notify:\n")
	w("#   webhook: https://deploys.example.com/hook   # JSON POST on start, success, failure, rollback\n")
	return b.Bytes()
}

func writeServices(b *bytes.Buffer, services []TemplateService) {
	tw := tabwriter.NewWriter(b, 0, 0, 2, ' ', 0)
	for _, s := range services {
		what := "image used as written, pulled on the hosts"
		if s.Build {
			what = "built here, pushed as <registry>/<image>:<sha>"
		}
		ports := ""
		if len(s.Ports) > 0 {
			ports = "ports " + strings.Join(s.Ports, ", ")
		}
		line := strings.TrimRight(fmt.Sprintf("#   %s\t%s\t%s", s.Name, what, ports), "\t ")
		fmt.Fprintln(tw, oneLine(line))
	}
	tw.Flush()
}

// oneLine keeps a comment on its line whatever a compose file held.
func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if r < ' ' && r != '\t' || r == 0x7f || r == '\u2028' || r == '\u2029' || r == 0x85 {
			return ' '
		}
		return r
	}, s)
}

// scalar writes s as a YAML scalar on one line, quoted when it must be.
func scalar(s string) string {
	out, err := yaml.Marshal(s)
	if err != nil {
		return strconv.Quote(s)
	}
	v := strings.TrimSuffix(string(out), "\n")
	if strings.Contains(v, "\n") {
		return strconv.Quote(s)
	}
	return v
}
