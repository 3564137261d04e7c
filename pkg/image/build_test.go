package image

import (
	"archive/tar"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/types"
	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/shipdeploy/ship/test/testenv"
)

// toolContext is a build context holding the static testdata/tool, a Dockerfile and a
// .dockerignore that leaves secret.txt out.
func toolContext(t *testing.T, dockerfile string) string {
	t.Helper()
	dir := t.TempDir()
	cmd := exec.Command("go", "build", "-trimpath", "-o", filepath.Join(dir, "tool"), "./testdata/tool")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build testdata/tool: %v\n%s", err, out)
	}
	for name, content := range map[string]string{
		"Dockerfile":    dockerfile,
		".dockerignore": "secret.txt\n",
		"secret.txt":    "not for the image\n",
		"notes.txt":     "for the image\n",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// fileIn reads path from a created (never started) container of ref; ok is false when
// there is no such file.
func fileIn(t *testing.T, cli *client.Client, ref, path string) (string, bool) {
	t.Helper()
	ctx := context.Background()
	c, err := cli.ContainerCreate(ctx, client.ContainerCreateOptions{Config: &container.Config{Image: ref, Cmd: []string{"/none"}, Labels: testenv.Labels(t, "image")}})
	if err != nil {
		t.Fatalf("create a container of %s: %v", ref, err)
	}
	defer cli.ContainerRemove(ctx, c.ID, client.ContainerRemoveOptions{Force: true})
	res, err := cli.CopyFromContainer(ctx, c.ID, client.CopyFromContainerOptions{SourcePath: path})
	if err != nil {
		if cerrdefs.IsNotFound(err) {
			return "", false
		}
		t.Fatalf("copy %s from %s: %v", path, ref, err)
	}
	defer res.Content.Close()
	tr := tar.NewReader(res.Content)
	if _, err := tr.Next(); err != nil {
		t.Fatal(err)
	}
	data, err := io.ReadAll(tr)
	if err != nil {
		t.Fatal(err)
	}
	return string(data), true
}

func TestBuildKitFeatures(t *testing.T) {
	cli := testenv.Docker(t)
	// A cache mount of its own, so that the count starts at 1 on every run.
	cacheID := "ship-test-" + randomID()[:8]
	dir := toolContext(t, `# syntax-free: the engine's own Dockerfile frontend
FROM scratch AS base
COPY tool /tool
ARG GREETING=none
RUN --mount=type=cache,id=`+cacheID+`,target=/cache ["/tool", "stamp", "/cache"]

FROM scratch AS final
COPY --from=base /out /out
COPY . /ctx/

FROM final AS broken
COPY --from=base /tool /tool
RUN ["/tool", "fail"]
`)
	b := New(cli)
	ref := "ship-test/features:" + cacheID
	testenv.Track(t, "image", ref) // swept after a killed run
	t.Cleanup(func() { b.Remove(context.Background(), ref) })

	build := func(greeting string) []Event {
		t.Helper()
		var events []Event
		err := b.Build(context.Background(), "feat", types.BuildConfig{
			Context: dir, Target: "final", Args: types.MappingWithEquals{"GREETING": &greeting},
		}, ref, Options{Progress: collect(&events)})
		if err != nil {
			t.Fatalf("build: %v", err)
		}
		return events
	}
	events := build("hello")
	if got := lines(events, KindBuilder); len(got) != 1 || got[0] != "builder: buildkit" {
		t.Fatalf("builder: %q (this engine offers BuildKit)", got)
	}
	if got, _ := fileIn(t, cli, ref, "/out/greeting"); got != "hello" {
		t.Errorf("build arg: /out/greeting = %q", got)
	}
	if got, _ := fileIn(t, cli, ref, "/out/count"); got != "1" {
		t.Errorf("first build: count %q, want 1", got)
	}
	if _, ok := fileIn(t, cli, ref, "/ctx/secret.txt"); ok {
		t.Error(".dockerignore: secret.txt went into the context")
	}
	if _, ok := fileIn(t, cli, ref, "/ctx/notes.txt"); !ok {
		t.Error("notes.txt is missing from the context")
	}
	if _, ok := fileIn(t, cli, ref, "/tool"); ok {
		t.Error("target final: the image has the broken stage's /tool")
	}

	// Another arg runs the step again; the cache mount kept what the first run wrote.
	build("again")
	if got, _ := fileIn(t, cli, ref, "/out/count"); got != "2" {
		t.Errorf("second build: count %q, want 2 (the cache mount did not persist)", got)
	}
	if got, _ := fileIn(t, cli, ref, "/out/greeting"); got != "again" {
		t.Errorf("build arg: /out/greeting = %q", got)
	}

	err := b.Build(context.Background(), "feat", types.BuildConfig{Context: dir, Target: "broken"}, ref+"-broken", Options{})
	var be *BuildError
	if !errors.As(err, &be) {
		t.Fatalf("target broken: want a BuildError, got %v", err)
	}
	if !strings.Contains(be.Step, `RUN ["/tool", "fail"]`) || !strings.Contains(strings.Join(be.Tail, "\n"), "boom, as asked") ||
		!strings.Contains(be.Msg, "exit code: 3") {
		t.Errorf("the error must name the failing step, its output and exit code: %v", err)
	}
}

func TestClassicBuilder(t *testing.T) {
	cli := testenv.Docker(t)
	dir := toolContext(t, `FROM scratch AS base
COPY tool /tool
ARG GREETING=none
RUN ["/tool", "stamp", "/"]

FROM scratch AS final
COPY --from=base /out /out
COPY . /ctx/
`)
	b := New(cli)
	ref := "ship-test/classic:" + randomID()[:8]
	testenv.Track(t, "image", ref) // swept after a killed run
	t.Cleanup(func() { b.Remove(context.Background(), ref) })
	greeting := "classic"
	var events []Event
	err := b.Build(context.Background(), "feat", types.BuildConfig{
		Context: dir, Target: "final", Args: types.MappingWithEquals{"GREETING": &greeting},
	}, ref, Options{Builder: BuilderClassic, Progress: collect(&events)})
	if err != nil {
		t.Fatal(err)
	}
	if got := lines(events, KindBuilder); len(got) != 1 || got[0] != "builder: classic (DOCKER_BUILDKIT=0)" {
		t.Errorf("builder: %q", got)
	}
	if got, _ := fileIn(t, cli, ref, "/out/greeting"); got != "classic" {
		t.Errorf("build arg: /out/greeting = %q", got)
	}
	if _, ok := fileIn(t, cli, ref, "/ctx/secret.txt"); ok {
		t.Error(".dockerignore: secret.txt went into the context")
	}
	if steps := lines(events, KindStep); len(steps) < 5 || !strings.HasPrefix(steps[0], "Step 1/") {
		t.Errorf("steps: %q", steps)
	}
}

func TestBuildKitCancel(t *testing.T) {
	cli := testenv.Docker(t)
	dir := toolContext(t, "FROM scratch\nCOPY tool /tool\nRUN [\"/tool\", \"sleep\", \""+randomID()+"\"]\n")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	err := New(cli).Build(ctx, "slow", types.BuildConfig{Context: dir}, "ship-test/slow:1", Options{Live: true, Progress: func(e Event) {
		if e.Kind == KindLog && e.Msg == "sleeping" {
			cancel() // as Ctrl-C does
		}
	}})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("a cancelled build: %v, want context.Canceled", err)
	}
}
