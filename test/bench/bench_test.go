// Package bench compares shipctl build and push of an unchanged project with the
// docker CLI doing the same on the same engine: `make bench` runs it and prints the
// times side by side with their ratios. Pushes go in rounds of one shipctl push and
// one docker push (`make bench-push` runs only those).
//
// The project is the example app built FROM a base image in a local registry; every
// run is of an unchanged project (build cache hits, layers already in the registry).
// Builds pull the base each time (shipctl's default, docker build --pull).
package bench

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shipdeploy/ship/test/testenv"
)

// result is the time a benchmark took over all its runs.
type result struct {
	n       int
	elapsed time.Duration
	note    string
}

var (
	mu      sync.Mutex
	results = map[string]*result{}
	order   []string
)

func record(b *testing.B, note string) {
	mu.Lock()
	defer mu.Unlock()
	name := strings.TrimPrefix(b.Name(), "BenchmarkUnchanged/")
	r, ok := results[name]
	if !ok {
		r = &result{}
		results[name] = r
		order = append(order, name)
	}
	r.n += b.N
	r.elapsed += b.Elapsed()
	if note != "" {
		r.note = note
	}
}

func TestMain(m *testing.M) {
	code := m.Run()
	if len(results) > 0 {
		summary()
	}
	pushSummary()
	os.Exit(code)
}

// summary prints each benchmark's mean time per run next to the docker CLI's.
func summary() {
	base := map[string]string{"build": "build/docker"}
	fmt.Println()
	fmt.Println("unchanged project, mean time per run (all runs, warm-up included):")
	fmt.Printf("  %-24s %8s %6s  %s\n", "", "time/op", "runs", "vs docker CLI")
	names := append([]string(nil), order...)
	sort.SliceStable(names, func(i, j int) bool { return group(names[i]) < group(names[j]) })
	for _, name := range names {
		r := results[name]
		mean := r.elapsed / time.Duration(r.n)
		ratio := "-"
		if ref, ok := results[base[group(name)]]; ok && ref.n > 0 && name != base[group(name)] {
			ratio = fmt.Sprintf("%.2fx", float64(mean)/float64(ref.elapsed/time.Duration(ref.n)))
		}
		line := fmt.Sprintf("  %-24s %8s %6d  %s", name, mean.Round(time.Millisecond), r.n, ratio)
		if r.note != "" {
			line += "   (" + r.note + ")"
		}
		fmt.Println(line)
	}
	fmt.Println("  ratio < 1: shipctl is faster than the docker CLI")
}

func group(name string) string {
	g, _, _ := strings.Cut(name, "/")
	return g
}

// project is the example app in a git checkout, built FROM base.
func project(b *testing.B, base string) string {
	b.Helper()
	return testenv.ExampleRepo(b, func(rel string, data []byte) []byte {
		if rel == filepath.Join("app", "Dockerfile") {
			data = bytes.Replace(data, []byte("FROM scratch"), []byte("FROM "+base), 1)
		}
		return data
	})
}

// runner runs a command in dir with extra environment, failing the benchmark when it
// fails.
type runner struct {
	b   *testing.B
	dir string
	env []string
}

func (r runner) run(name string, args ...string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = r.dir
	cmd.Env = append(os.Environ(), r.env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		r.b.Fatalf("%s %s: %v\n%s", filepath.Base(name), strings.Join(args, " "), err, out)
	}
	return string(out)
}

func BenchmarkUnchanged(b *testing.B) {
	cli := testenv.Docker(b)
	docker, err := exec.LookPath("docker")
	if err != nil {
		testenv.Missing(b, "the docker CLI", "the benchmark compares shipctl with it; install docker-ce-cli")
	}
	reg := testenv.Registry(b)
	base := testenv.BaseImage(b, cli, reg, "ship-bench/base", "bench")
	dir := project(b, base)

	bin := filepath.Join(b.TempDir(), "shipctl")
	if err := testenv.Build(bin, "./cmd/shipctl"); err != nil {
		b.Fatal(err)
	}
	r := runner{b: b, dir: dir, env: []string{"SHIP_REGISTRY=" + reg.Addr, "DOCKER_CONFIG=" + b.TempDir(),
		"SHIP_REGISTRY_USER=", "SHIP_REGISTRY_PASSWORD=", "DOCKER_BUILDKIT="}}
	sha := strings.TrimSpace(r.run("git", "rev-parse", "HEAD"))
	shipRef := reg.Addr + "/example/web:" + sha
	dockerRef := reg.Addr + "/example/web:docker-" + sha
	b.Cleanup(func() {
		exec.Command(docker, "image", "rm", "-f", shipRef, dockerRef, base).Run()
	})

	// Warm every cache: the runs below are of an unchanged project.
	r.run(bin, "build")
	r.run(bin, "push", "--untested")
	r.run(docker, "build", "--pull", "-t", dockerRef, "app")
	r.run(docker, "push", dockerRef)

	out := r.run(bin, "build")
	builder := "BuildKit"
	if strings.Contains(out, "builder: classic") {
		builder = "classic builder: BuildKit unavailable"
	}
	dockerOut := r.run(docker, "build", "--pull", "-t", dockerRef, "app")
	dockerBuilder := "BuildKit (buildx)"
	if strings.Contains(dockerOut, "legacy builder") || strings.Contains(dockerOut, "Step 1/") {
		dockerBuilder = "legacy builder: the CLI has no buildx"
	}

	b.Run("build/shipctl", func(b *testing.B) {
		for range b.N {
			r.run(bin, "build")
		}
		record(b, builder+", --pull")
	})
	b.Run("build/shipctl-classic", func(b *testing.B) {
		classic := runner{b: b, dir: dir, env: append(r.env, "DOCKER_BUILDKIT=0")}
		for range b.N {
			classic.run(bin, "build")
		}
		record(b, "DOCKER_BUILDKIT=0, --pull")
	})
	b.Run("build/docker", func(b *testing.B) {
		for range b.N {
			r.run(docker, "build", "--pull", "-t", dockerRef, "app")
		}
		record(b, "docker build --pull, "+dockerBuilder)
	})
	b.Run("push", func(b *testing.B) {
		// The classic builder's image differs from BuildKit's: bring BuildKit's back.
		r.run(bin, "build")
		pushRounds(b, r, bin, shipRef)
	})
}

// BenchmarkPush is the push part of BenchmarkUnchanged alone (`make bench-push`):
// shipctl push and docker push of the same unchanged image, in alternating rounds.
func BenchmarkPush(b *testing.B) {
	cli := testenv.Docker(b)
	if _, err := exec.LookPath("docker"); err != nil {
		testenv.Missing(b, "the docker CLI", "the benchmark compares shipctl with it; install docker-ce-cli")
	}
	reg := testenv.Registry(b)
	base := testenv.BaseImage(b, cli, reg, "ship-bench/base", "bench")
	dir := project(b, base)
	bin := filepath.Join(b.TempDir(), "shipctl")
	if err := testenv.Build(bin, "./cmd/shipctl"); err != nil {
		b.Fatal(err)
	}
	r := runner{b: b, dir: dir, env: []string{"SHIP_REGISTRY=" + reg.Addr, "DOCKER_CONFIG=" + b.TempDir(),
		"SHIP_REGISTRY_USER=", "SHIP_REGISTRY_PASSWORD=", "DOCKER_BUILDKIT="}}
	sha := strings.TrimSpace(r.run("git", "rev-parse", "HEAD"))
	shipRef := reg.Addr + "/example/web:" + sha
	b.Cleanup(func() { exec.Command("docker", "image", "rm", "-f", shipRef, base).Run() })
	r.run(bin, "build")
	b.Run("push", func(b *testing.B) { pushRounds(b, r, bin, shipRef) })
}

// pushSamples are the push rounds' times, each round one shipctl push and one docker
// push of the same image under another tag.
var pushSamples struct {
	shipctl, docker []time.Duration
	load            string
}

// pushRounds pushes the unchanged image shipRef b.N times with shipctl and as many
// with docker push (shipRef tagged dockerpush-<tag>), alternating which goes first in
// each round so that neither always runs after the other: the machine's load and the
// registry's caches weigh on both alike.
func pushRounds(b *testing.B, parent runner, bin, shipRef string) {
	r := runner{b: b, dir: parent.dir, env: parent.env}
	colon := strings.LastIndex(shipRef, ":")
	dockerRef := shipRef[:colon+1] + "dockerpush-" + shipRef[colon+1:]
	r.run("docker", "tag", shipRef, dockerRef)
	b.Cleanup(func() { exec.Command("docker", "image", "rm", dockerRef).Run() })
	// Warm up: the registry has both tags before the rounds.
	r.run(bin, "push", "--untested")
	r.run("docker", "push", dockerRef)

	timed := func(name string, args ...string) time.Duration {
		start := time.Now()
		r.run(name, args...)
		return time.Since(start)
	}
	b.ResetTimer()
	for i := range b.N {
		var ship, docker time.Duration
		if i%2 == 0 {
			ship = timed(bin, "push", "--untested")
			docker = timed("docker", "push", dockerRef)
		} else {
			docker = timed("docker", "push", dockerRef)
			ship = timed(bin, "push", "--untested")
		}
		mu.Lock()
		pushSamples.shipctl = append(pushSamples.shipctl, ship)
		pushSamples.docker = append(pushSamples.docker, docker)
		mu.Unlock()
	}
	b.StopTimer()
	if load, err := os.ReadFile("/proc/loadavg"); err == nil {
		mu.Lock()
		pushSamples.load = strings.Join(strings.Fields(string(load))[:3], " ")
		mu.Unlock()
	}
}

// pushSummary prints the push rounds' min and median for each side and their ratios.
func pushSummary() {
	s, d := pushSamples.shipctl, pushSamples.docker
	if len(s) == 0 {
		return
	}
	fmt.Println()
	fmt.Printf("push of an unchanged image, %d interleaved rounds (shipctl and docker push, which goes first alternating):\n", len(s))
	fmt.Printf("  %-14s %8s %8s\n", "", "min", "median")
	fmt.Printf("  %-14s %8s %8s   (registry check, push: --untested)\n", "push/shipctl", minOf(s).Round(time.Millisecond), medianOf(s).Round(time.Millisecond))
	fmt.Printf("  %-14s %8s %8s   (docker push, the same image under another tag)\n", "push/docker", minOf(d).Round(time.Millisecond), medianOf(d).Round(time.Millisecond))
	fmt.Printf("  shipctl / docker: %.2fx (min), %.2fx (median)", float64(minOf(s))/float64(minOf(d)), float64(medianOf(s))/float64(medianOf(d)))
	if pushSamples.load != "" {
		fmt.Printf("; load %s", pushSamples.load)
	}
	fmt.Println()
}

func minOf(ds []time.Duration) time.Duration { return slices.Min(ds) }

func medianOf(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
