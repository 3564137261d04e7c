// Command hashgen writes the golden config hashes of pkg/engine's TestConfigHashGolden:
// docker compose's own ServiceHash, NetworkHash and VolumeHash
// (github.com/docker/compose/v2/pkg/compose, at the release ship matches,
// engine.ComposeVersion) over every service, network and volume of every compose file in
// the corpus, each loaded as `docker compose up` loads it (paths resolved, env_file
// read into the environment and then dropped, profiles applied). Regenerate with:
//
//	cd pkg/engine/testdata/hashgen && go run -trimpath . ../confighash > ../confighash/hashes.json
//
// It is a module of its own (compose's dependencies stay out of ship's go.mod); its go.mod
// copies the exclude directives of compose's, so it builds what compose's build selects.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/docker/compose/v2/pkg/compose"
)

// WorkDir and the HASHDATA variable must be what pkg/engine's test loads with: the
// hashes hold resolved paths, so the project folder is a fixed one that need not exist,
// and files the corpus reads (env_file) are named through ${HASHDATA}.
const WorkDir = "/srv/app"

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: hashgen CORPUS_DIR > CORPUS_DIR/hashes.json")
		os.Exit(2)
	}
	if err := run(os.Args[1]); err != nil {
		fmt.Fprintln(os.Stderr, "hashgen:", err)
		os.Exit(1)
	}
}

func run(dir string) error {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	files, err := filepath.Glob(filepath.Join(dir, "*.yml"))
	if err != nil {
		return err
	}
	sort.Strings(files)
	out := map[string]hashes{}
	for _, f := range files {
		h, err := hashFile(dir, f)
		if err != nil {
			return fmt.Errorf("%s: %w", filepath.Base(f), err)
		}
		out[filepath.Base(f)] = h
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

// hashes are one file's config hashes by service, network and volume key.
type hashes struct {
	Services map[string]string `json:"services"`
	Networks map[string]string `json:"networks,omitempty"`
	Volumes  map[string]string `json:"volumes,omitempty"`
}

// hashFile loads file as cmd/compose's ProjectOptions.WithServices does for `up`.
func hashFile(dir, file string) (hashes, error) {
	var h hashes
	ctx := context.Background()
	name := strings.TrimSuffix(filepath.Base(file), ".yml")
	opts, err := cli.NewProjectOptions([]string{file},
		cli.WithWorkingDirectory(WorkDir),
		cli.WithEnv([]string{"HASHDATA=" + dir}),
		cli.WithName(name),
		cli.WithResolvedPaths(true),
		cli.WithoutEnvironmentResolution,
	)
	if err != nil {
		return h, err
	}
	p, err := opts.LoadProject(ctx)
	if err != nil {
		return h, err
	}
	if p, err = p.WithServicesEnabled(); err != nil {
		return h, err
	}
	if p, err = p.WithSelectedServices(nil); err != nil {
		return h, err
	}
	p = p.WithoutUnnecessaryResources()
	if p, err = p.WithServicesEnvironmentResolved(true); err != nil {
		return h, err
	}
	h.Services = map[string]string{}
	for name, s := range p.Services {
		if h.Services[name], err = compose.ServiceHash(s); err != nil {
			return h, err
		}
	}
	if len(p.Networks) > 0 {
		h.Networks = map[string]string{}
	}
	for name, n := range p.Networks {
		if h.Networks[name], err = compose.NetworkHash(&n); err != nil {
			return h, err
		}
	}
	if len(p.Volumes) > 0 {
		h.Volumes = map[string]string{}
	}
	for name, v := range p.Volumes {
		if h.Volumes[name], err = compose.VolumeHash(v); err != nil {
			return h, err
		}
	}
	return h, nil
}
