package hosts

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/shipdeploy/ship/test/testenv"
	"github.com/shipdeploy/ship/test/testhost"
)

// envName is the environment every site deploys to.
const envName = "hosts"

// site is the example app in a checkout of its own, deployed through shipd to a
// cluster's hosts as the deploy user.
type site struct {
	t      testing.TB
	c      *testhost.Cluster
	hosts  []*testhost.Host // the environment's
	images []string         // built from ./app: pushed for each version
	cli    *client.Client
	dir    string
	app    string
	path   string // the app's folder on the hosts
	port   int    // shipd's route to web on the hosts: :port
	env    []string
}

type siteOptions struct {
	hosts   []*testhost.Host // default: every host of the cluster
	port    int              // default 8080
	path    string           // default /srv/<app>, made for the deploy user
	restart string           // web's restart: policy; "" for none
	// side adds a service "side" built from ./app (image example/side) that publishes
	// this host address (127.0.0.1:port), replaced stop-first.
	side string
}

func newSite(t testing.TB, c *testhost.Cluster, o siteOptions) *site {
	t.Helper()
	s := &site{t: t, c: c, hosts: o.hosts, cli: testenv.Docker(t), port: o.port}
	if s.hosts == nil {
		s.hosts = c.Hosts
	}
	s.images = []string{"example/web"}
	if o.side != "" {
		s.images = append(s.images, "example/side")
	}
	testenv.AppImage(t, s.cli)
	if s.port == 0 {
		s.port = 8080
	}
	s.app = "hosts-" + randomHex(3)
	s.path = o.path
	if s.path == "" {
		s.path = "/srv/" + s.app
	}
	for _, h := range s.hosts {
		h.MustRun(t, "install -d -o deploy -g deploy -m 0755 "+s.path)
	}
	s.dir = testenv.ExampleRepo(t, func(rel string, data []byte) []byte {
		if rel != "docker-compose.yml" {
			return data
		}
		c := strings.Replace(string(data), "    ports:\n      # So the demo can curl it on the host.\n      - \"127.0.0.1:${WEB_PORT:-18080}:8080\"\n", "", 1)
		c = strings.Replace(c, `listen: ":8080"`, fmt.Sprintf(`listen: ":%d"`, s.port), 1)
		c = strings.Replace(c, "drain: 5s", "drain: 1s", 1)
		if o.restart != "" {
			c = strings.Replace(c, "    image: example/web\n", "    image: example/web\n    restart: "+o.restart+"\n", 1)
		}
		if o.side != "" {
			c += fmt.Sprintf("  side:\n    build: ./app\n    image: example/side\n    ports:\n      - %q\n", o.side+":8080")
		}
		return []byte(c)
	})
	var dests []string
	for _, h := range s.hosts {
		dests = append(dests, testhost.DeployUser+"@"+h.IP)
	}
	s.write("ship.yaml", fmt.Sprintf("app: %s\nregistry: %s\nenvironments:\n  %s:\n    hosts: [%s]\n    path: %s\n    known_hosts: known_hosts\n    agent: true\n",
		s.app, c.Registry.Addr, envName, strings.Join(dests, ", "), s.path))
	s.write("known_hosts", c.KnownHosts(t))
	s.commit("hosts setup")
	home := t.TempDir()
	s.env = []string{
		"HOME=" + home, "SSH_AUTH_SOCK=", "DOCKER_CONFIG=" + filepath.Join(home, ".docker"),
		"SHIP_SSH_KEY=" + c.Key(t),
	}
	return s
}

func (s *site) write(name, content string) {
	s.t.Helper()
	if err := os.WriteFile(filepath.Join(s.dir, name), []byte(content), 0o644); err != nil {
		s.t.Fatal(err)
	}
}

func (s *site) commit(msg string) string {
	s.t.Helper()
	git(s.t, s.dir, "add", "-A")
	git(s.t, s.dir, "commit", "-q", "--allow-empty", "-m", msg)
	return git(s.t, s.dir, "rev-parse", "HEAD")
}

// version commits web with VERSION v and the extra environment lines, and pushes the
// image of the commit to the cluster's registry.
func (s *site) version(v string, env ...string) string {
	s.t.Helper()
	file := filepath.Join(s.dir, "docker-compose.yml")
	data, err := os.ReadFile(file)
	if err != nil {
		s.t.Fatal(err)
	}
	lines := append([]string{"      VERSION: " + v}, prefixed("      ", env)...)
	c := strings.Replace(string(data), "      VERSION: ${VERSION:-v1}\n", strings.Join(lines, "\n")+"\n", 1)
	s.write("docker-compose.yml", c)
	sha := s.commit("version " + v)
	s.write("docker-compose.yml", string(data))
	s.commit("back to the template")
	for _, name := range s.images {
		ref := s.c.Registry.Addr + "/" + name + ":" + sha
		ctx := context.Background()
		if _, err := s.cli.ImageTag(ctx, client.ImageTagOptions{Source: testenv.AppImageRef, Target: ref}); err != nil {
			s.t.Fatal(err)
		}
		s.c.Registry.Push(s.t, s.cli, ref)
		if _, err := s.cli.ImageRemove(ctx, ref, client.ImageRemoveOptions{}); err != nil {
			s.t.Fatal(err)
		}
	}
	return sha
}

func prefixed(p string, lines []string) []string {
	out := make([]string, len(lines))
	for i, l := range lines {
		out[i] = p + l
	}
	return out
}

// result is what a user sees of one shipctl run.
type result struct {
	code           int
	stdout, stderr string
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\n--- stdout:\n%s\n--- stderr:\n%s", r.code, r.stdout, r.stderr)
}

// run runs shipctl in the site's checkout.
func (s *site) run(args ...string) result {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, shipctl, args...)
	cmd.Dir = s.dir
	cmd.Env = append(os.Environ(), s.env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		s.t.Fatalf("run shipctl %v: %v", args, err)
	}
	return result{code: code, stdout: stdout.String(), stderr: stderr.String()}
}

// must runs shipctl and fails the test unless it exits 0.
func (s *site) must(args ...string) result {
	s.t.Helper()
	r := s.run(args...)
	if r.code != 0 {
		s.t.Fatalf("shipctl %v:\n%s", args, r)
	}
	return r
}

// install installs shipd on the site's hosts as root: the shipd built beside shipctl,
// with -trimpath as make build builds it.
func (s *site) install() result {
	s.t.Helper()
	return s.must("agent", "install", envName, "--ssh-user", "root")
}

// deploy deploys sha through shipd.
func (s *site) deploy(sha string) result {
	s.t.Helper()
	return s.must("deploy", envName, "--sha", sha, "--untested")
}

// served is the VERSION web answers with through shipd's route on h.
func (s *site) served(h *testhost.Host) (string, error) {
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(fmt.Sprintf("http://%s:%d/version", h.IP, s.port))
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var v struct{ Version string }
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &v) != nil {
		return "", fmt.Errorf("GET /version: %s %s", resp.Status, bytes.TrimSpace(body))
	}
	return v.Version, nil
}

// mustServe fails the test unless every host serves version v.
func (s *site) mustServe(v string) {
	s.t.Helper()
	for _, h := range s.hosts {
		got, err := s.served(h)
		if err != nil || got != v {
			s.t.Fatalf("%s serves %q (%v), want %q", h.Name, got, err, v)
		}
	}
}

// current is the commit of the release h's current link points at (its name
// without the compose file's hash).
func (s *site) current(h *testhost.Host) string {
	s.t.Helper()
	out, err := h.Run("readlink " + s.path + "/current || true")
	if err != nil {
		s.t.Fatal(err)
	}
	name := strings.TrimPrefix(strings.TrimSpace(out), "releases/")
	if i := strings.LastIndex(name, "-"); i > 0 && len(name)-i-1 == 8 {
		return name[:i]
	}
	return name
}

// auditLines are the lines of the app's audit.log on h.
func (s *site) auditLines(h *testhost.Host) []map[string]any {
	s.t.Helper()
	out, err := h.Run("cat " + s.path + "/audit.log 2>/dev/null || true")
	if err != nil {
		s.t.Fatal(err)
	}
	var lines []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil {
			lines = append(lines, m)
		}
	}
	return lines
}

func git(t testing.TB, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=ship", "GIT_AUTHOR_EMAIL=ship@example.com",
		"GIT_COMMITTER_NAME=ship", "GIT_COMMITTER_EMAIL=ship@example.com")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

func short(sha string) string {
	if len(sha) > 12 {
		return sha[:12]
	}
	return sha
}
