// Package bench compares shipctl build and push of an unchanged project with the
// docker CLI doing the same on the same engine: `make bench` runs it and prints the
// times side by side with their ratios.
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
	os.Exit(code)
}

// summary prints each benchmark's mean time per run next to the docker CLI's.
func summary() {
	base := map[string]string{"build": "build/docker", "push": "push/docker"}
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
	b.Run("push/shipctl", func(b *testing.B) {
		// The classic builder's image differs from BuildKit's: bring BuildKit's back
		// and make sure the registry has it.
		r.run(bin, "build")
		r.run(bin, "push", "--untested")
		b.ResetTimer()
		for range b.N {
			r.run(bin, "push", "--untested")
		}
		record(b, "registry check, push, manifest check")
	})
	b.Run("push/docker", func(b *testing.B) {
		for range b.N {
			r.run(docker, "push", dockerRef)
		}
		record(b, "docker push")
	})
}
