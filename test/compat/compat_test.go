package compat

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shipdeploy/ship/pkg/compose"
	"github.com/shipdeploy/ship/pkg/engine"
	"github.com/shipdeploy/ship/test/testenv"
)

// TestCompat brings each compose file of testdata/ (a folder each, compose.yml in it)
// up twice on this engine, with ship's engine and with docker compose
// engine.ComposeVersion, under two project names, and compares what they made: every
// field of `docker inspect` of each container (and of each network and volume), the
// config hashes among them. A difference fails the test unless it is cosmetic or known
// (compare_test.go, each with its reason). Then each tool brings up the other's project
// again: a container it recreates is a difference too (the two config hashes or image
// labels disagree). The last log lines count the differences by field.
func TestCompat(t *testing.T) {
	cli := testenv.Docker(t)
	bin := testenv.Compose(t, engine.ComposeVersion)
	testenv.AppImage(t, cli)
	api := newDockerAPI(t)
	eng := engine.New(cli)

	dirs, err := filepath.Glob(filepath.Join("testdata", "*", "compose.yml"))
	if err != nil || len(dirs) == 0 {
		t.Fatalf("no corpus in testdata/*/compose.yml (%v)", err)
	}
	tally := newTally()
	for _, file := range dirs {
		name := filepath.Base(filepath.Dir(file))
		t.Run(name, func(t *testing.T) {
			c := &compatRun{t: t, api: api, eng: eng, bin: bin, tally: tally, name: name}
			c.run(filepath.Dir(file))
		})
	}
	tally.report(t)
	if !t.Failed() {
		for _, a := range known {
			if !tally.seenKnown[a.pattern+"@"+a.object] {
				t.Errorf("known difference %s (%s) is gone: remove it from known", a.pattern, a.reason)
			}
		}
		for name := range knownRefusals {
			if !tally.seenKnown["refused:"+name+"@"] {
				t.Errorf("known refusal of %s is gone: remove it from knownRefusals", name)
			}
		}
	}
}

// compatRun is one corpus file's comparison.
type compatRun struct {
	t     *testing.T
	api   *dockerAPI
	eng   *engine.Engine
	bin   string
	tally *tally
	name  string
	// dir is the corpus folder's copy both tools load (binds are created in it).
	dir string
	// config is an empty docker CLI config folder: compose reads no proxy settings or
	// credentials of the machine's user.
	config string
}

func (c *compatRun) run(src string) {
	t := c.t
	c.dir, c.config = copyDir(t, src), t.TempDir()
	suffix := randomSuffix(t)
	shipProject, composeProject := "compat-"+c.name+"-ship-"+suffix, "compat-"+c.name+"-compose-"+suffix
	c.cleanup(shipProject)
	c.cleanup(composeProject)

	if !c.shipUp(shipProject) {
		c.composeUp(composeProject) // it runs with compose: the refusal is ship's
		return
	}
	c.composeUp(composeProject)
	ctx := context.Background()
	ship := c.inspect(ctx, shipProject)
	comp := c.inspect(ctx, composeProject)
	c.compareAll(shipProject, composeProject, ship, comp)
	c.checkHashes(shipProject, ship)
	c.checkHashes(composeProject, comp)

	// Each tool again on the other's project: nothing may be recreated.
	c.composeUp(shipProject)
	c.recreated("docker compose up after ship", ship, c.inspect(ctx, shipProject))
	c.shipUp(composeProject)
	c.recreated("ship up after docker compose", comp, c.inspect(ctx, composeProject))
}

// shipUp loads the file as shipctl does, writes it out resolved and reads it back as a
// host reads its release (compose.LoadResolved: what a deploy runs), and brings it up
// with ship's engine. It is false when ship refuses the file, as knownRefusals says.
func (c *compatRun) shipUp(project string) bool {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	p, err := compose.Load(ctx, compose.Options{Dir: c.dir, Files: []string{"compose.yml"}, Name: project})
	reason, refusedKnown := knownRefusals[c.name]
	switch {
	case err != nil && refusedKnown:
		c.t.Logf("known refusal (%s): %v", reason, err)
		c.tally.add("file:(refused by ship)", "known", diff{field: "(refused)", ship: err.Error(), compose: "runs"})
		c.tally.seen(allowed{pattern: "refused:" + c.name})
		return false
	case err != nil:
		c.t.Fatalf("ship refuses %s/compose.yml, docker compose runs it: %v", c.name, err)
	case refusedKnown:
		c.t.Errorf("ship runs %s/compose.yml now: remove it from knownRefusals", c.name)
	}
	data, err := p.MarshalYAML()
	if err != nil {
		c.t.Fatal(err)
	}
	// Named as compose names it, so that the config_files labels compare equal.
	back, err := compose.LoadResolved(ctx, project, c.dir, filepath.Join(c.dir, "compose.yml"), data)
	if err != nil {
		c.t.Fatalf("read back the resolved %s/compose.yml: %v", c.name, err)
	}
	if err := c.eng.Up(ctx, back.Project, engine.UpOptions{WaitTimeout: 2 * time.Minute}); err != nil {
		c.t.Fatalf("ship up %s: %v", project, err)
	}
	return true
}

// composeUp brings the file up with docker compose: `up -d`, which also waits for the
// depends_on conditions.
func (c *compatRun) composeUp(project string) {
	c.t.Helper()
	c.compose(project, "up", "-d", "--quiet-pull")
}

func (c *compatRun) compose(project string, args ...string) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	all := append([]string{"--project-name", project, "-f", filepath.Join(c.dir, "compose.yml")}, args...)
	cmd := exec.CommandContext(ctx, c.bin, all...)
	cmd.Dir = c.dir
	cmd.Env = append(os.Environ(), "DOCKER_CONFIG="+c.config, "COMPOSE_PROFILES=", "COMPOSE_FILE=")
	if out, err := cmd.CombinedOutput(); err != nil {
		c.t.Fatalf("docker compose %s: %v\n%s", strings.Join(all, " "), err, out)
	}
}

// cleanup removes project when the test ends: each tool's own down, then whatever
// is left by label; nothing of it may remain.
func (c *compatRun) cleanup(project string) {
	testenv.Track(c.t, "project", project) // swept after a killed run
	c.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), testenv.Scale(2*time.Minute))
		defer cancel()
		if err := c.eng.Down(ctx, project, engine.DownOptions{Volumes: true}); err != nil {
			c.t.Errorf("down %s: %v", project, err)
		}
		if err := c.api.removeProject(ctx, project); err != nil {
			c.t.Errorf("remove %s: %v", project, err)
		}
	})
}

// objects are what one project made on the engine.
type objects struct {
	containers, networks, volumes []object
}

func (c *compatRun) inspect(ctx context.Context, project string) objects {
	c.t.Helper()
	var o objects
	var err error
	if o.containers, err = c.api.containers(ctx, project); err != nil {
		c.t.Fatal(err)
	}
	if o.networks, err = c.api.networks(ctx, project); err != nil {
		c.t.Fatal(err)
	}
	if o.volumes, err = c.api.volumes(ctx, project); err != nil {
		c.t.Fatal(err)
	}
	return o
}

// compareAll pairs each object of ship's project with compose's by service and number
// (containers) or by key (networks, volumes) and compares them.
func (c *compatRun) compareAll(shipProject, composeProject string, ship, comp objects) {
	n1 := newNormalizer(shipProject, ship.containers, ship.networks)
	n2 := newNormalizer(composeProject, comp.containers, comp.networks)
	kinds := []struct {
		kind       string
		key        func(object) string
		ship, comp []object
	}{
		{"container", containerKey, ship.containers, comp.containers},
		{"network", func(o object) string { return o.Labels["com.docker.compose.network"] }, ship.networks, comp.networks},
		{"volume", func(o object) string { return o.Labels["com.docker.compose.volume"] }, ship.volumes, comp.volumes},
	}
	for _, k := range kinds {
		byKey := map[string]object{}
		for _, o := range k.comp {
			byKey[k.key(o)] = o
		}
		for _, s := range k.ship {
			key := k.key(s)
			o, ok := byKey[key]
			if !ok {
				c.report(k.kind, key, diff{field: "(object)", ship: s.Name, compose: "(absent)"})
				continue
			}
			delete(byKey, key)
			fields, diffs := compare(n1, n2, s, o)
			c.tally.fields(k.kind, fields)
			for _, d := range diffs {
				c.report(k.kind, key, d)
			}
		}
		for key, o := range byKey {
			c.report(k.kind, key, diff{field: "(object)", ship: "(absent)", compose: o.Name})
		}
	}
}

func containerKey(o object) string {
	return o.Labels["com.docker.compose.service"] + "-" + o.Labels["com.docker.compose.container-number"]
}

// checkHashes computes ship's config hashes (ConfigHash, NetworkHash, VolumeHash) of
// the file as ship loads it under project, and compares them with the labels one tool
// wrote on its objects of that project: on compose's, the hash functions checked on
// their own; on ship's, that Up labels what they compute. (The two projects' network
// and volume hashes differ, as their names do.)
func (c *compatRun) checkHashes(project string, comp objects) {
	c.t.Helper()
	p, err := compose.Load(context.Background(), compose.Options{Dir: c.dir, Files: []string{"compose.yml"}, Name: project})
	if err != nil {
		c.t.Fatal(err)
	}
	ids := map[string]string{}
	for _, o := range comp.containers {
		ids[o.Labels["com.docker.compose.service"]] = o.ID
	}
	check := func(kind, key string, o object, hash func() (string, error)) {
		got, err := hash()
		if err != nil {
			c.t.Fatal(err)
		}
		c.tally.fields("hash", 1)
		if want := o.Labels["com.docker.compose.config-hash"]; got != want {
			c.report(kind, key, diff{field: "(config hash of the loaded file)", ship: got, compose: want})
		}
	}
	for _, o := range comp.containers {
		svc := p.Services[o.Labels["com.docker.compose.service"]]
		check("container", containerKey(o), o, func() (string, error) {
			return engine.ConfigHash(engine.WithContainerRefs(svc, func(name string) string { return ids[name] }))
		})
	}
	for _, o := range comp.networks {
		key := o.Labels["com.docker.compose.network"]
		check("network", key, o, func() (string, error) { return engine.NetworkHash(p.Networks[key]) })
	}
	for _, o := range comp.volumes {
		key := o.Labels["com.docker.compose.volume"]
		check("volume", key, o, func() (string, error) { return engine.VolumeHash(p.Volumes[key]) })
	}
}

// recreated reports the containers of before that the second up replaced.
func (c *compatRun) recreated(what string, before, after objects) {
	ids := map[string]bool{}
	for _, o := range after.containers {
		ids[o.ID] = true
	}
	for _, o := range before.containers {
		if !ids[o.ID] {
			c.report("container", containerKey(o), diff{field: "(recreated by " + what + ")", ship: "want: kept", compose: "recreated"})
		}
	}
}

// report classifies one difference: cosmetic differences are counted, known ones
// logged, the others fail the test.
func (c *compatRun) report(kind, key string, d diff) {
	c.t.Helper()
	field := kind + ":" + indexless(d.field)
	object := c.name + "/" + key
	if _, ok := match(cosmetic, object, d.field); ok {
		c.tally.add(field, "cosmetic", d)
		return
	}
	if a, ok := match(known, object, d.field); ok {
		c.tally.add(field, "known", d)
		c.tally.seen(a)
		c.t.Logf("known difference (%s): %s %s: %s: ship %s, docker compose %s", a.reason, kind, key, d.field, d.ship, d.compose)
		return
	}
	c.tally.add(field, "DIFFERENT", d)
	c.t.Errorf("%s %s: %s: ship %s, docker compose %s", kind, key, d.field, d.ship, d.compose)
}

// tally counts the differences of every file by field, for the closing report.
type tally struct {
	mu        sync.Mutex
	compared  map[string]int
	byField   map[string]*count
	seenKnown map[string]bool
}

type count struct {
	class string
	n     int
	first diff
}

func newTally() *tally {
	return &tally{compared: map[string]int{}, byField: map[string]*count{}, seenKnown: map[string]bool{}}
}

func (t *tally) seen(a allowed) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.seenKnown[a.pattern+"@"+a.object] = true
}

func (t *tally) fields(kind string, n int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.compared[kind] += n
}

func (t *tally) add(field, class string, d diff) {
	t.mu.Lock()
	defer t.mu.Unlock()
	c := t.byField[field]
	if c == nil {
		c = &count{class: class, first: d}
		t.byField[field] = c
	}
	c.n++
}

func (t *tally) report(tb testing.TB) {
	t.mu.Lock()
	defer t.mu.Unlock()
	fields := make([]string, 0, len(t.byField))
	for f := range t.byField {
		fields = append(fields, f)
	}
	sort.Slice(fields, func(i, j int) bool {
		a, b := t.byField[fields[i]], t.byField[fields[j]]
		if a.class != b.class {
			return a.class < b.class
		}
		return fields[i] < fields[j]
	})
	var b strings.Builder
	fmt.Fprintf(&b, "fields compared: %d of containers, %d of networks, %d of volumes; config hashes computed: %d\n",
		t.compared["container"], t.compared["network"], t.compared["volume"], t.compared["hash"])
	for _, f := range fields {
		c := t.byField[f]
		fmt.Fprintf(&b, "%-9s %3d  %s   e.g. ship %s | compose %s\n", c.class, c.n, f, clip(c.first.ship), clip(c.first.compose))
	}
	tb.Log("differences by field:\n" + b.String())
}

func clip(s string) string {
	if len(s) > 70 {
		return s[:67] + "..."
	}
	return s
}

func randomSuffix(t *testing.T) string {
	b := make([]byte, 3)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// copyDir copies a corpus folder into a temporary one.
func copyDir(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(target, data, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}
