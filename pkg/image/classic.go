package image

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/compose-spec/compose-go/v2/types"
	archive "github.com/moby/go-archive"
	"github.com/moby/moby/api/types/build"
	"github.com/moby/moby/api/types/jsonstream"
	"github.com/moby/moby/api/types/registry"
	"github.com/moby/moby/client"
)

// tailLines is how many lines of a failed step's output an error keeps.
const tailLines = 20

// classic builds with the engine's classic builder from a tar of the context.
func (b *Builder) classic(ctx context.Context, service string, src source, cfg types.BuildConfig, tag string, o Options) error {
	buildCtx, err := tarContext(src)
	if err != nil {
		return fmt.Errorf("build %s: %w", service, err)
	}
	defer buildCtx.Close()
	auths, err := baseImageAuth(ctx, src.dockerfile, cfg.Args, o.Auth)
	if err != nil {
		return fmt.Errorf("build %s: %w", service, err)
	}
	resp, err := b.api.ImageBuild(ctx, buildCtx, client.ImageBuildOptions{
		Tags:        []string{tag},
		Dockerfile:  src.rel,
		BuildArgs:   cfg.Args,
		Target:      cfg.Target,
		Labels:      cfg.Labels,
		CacheFrom:   cfg.CacheFrom,
		NoCache:     cfg.NoCache,
		PullParent:  o.Pull || cfg.Pull,
		ShmSize:     int64(cfg.ShmSize),
		ExtraHosts:  cfg.ExtraHosts.AsList(":"),
		NetworkMode: cfg.Network,
		AuthConfigs: auths,
		Remove:      true,
		ForceRemove: true,
		Version:     build.BuilderV1,
	})
	if err != nil {
		return fmt.Errorf("build %s: %w", service, err)
	}
	defer resp.Body.Close()
	return readClassic(resp.Body, service, o)
}

// classicSteps follows the classic builder's output: "Step 2/3 : COPY x" starts a
// step, " ---> Using cache" marks it cached, anything else is the step's output.
type classicSteps struct {
	service string
	o       Options
	n       int
	cur     *Step
	tail    []string
}

func (c *classicSteps) start(name string) {
	c.finish(StepDone)
	c.n++
	c.cur = &Step{ID: fmt.Sprintf("step %d", c.n), Name: name, State: StepRunning, Started: time.Now()}
	c.tail = nil
	if c.o.Live {
		s := *c.cur
		c.o.emit(Event{Service: c.service, Kind: KindStep, Msg: s.Line(), Step: &s})
	}
}

func (c *classicSteps) finish(state StepState) {
	if c.cur == nil {
		return
	}
	if c.cur.State == StepRunning {
		c.cur.State = state
	}
	c.cur.Duration = time.Since(c.cur.Started)
	s := *c.cur
	c.cur = nil
	c.o.emit(Event{Service: c.service, Kind: KindStep, Msg: s.Line(), Step: &s})
}

func (c *classicSteps) line(l string) {
	trimmed := strings.TrimSpace(l)
	switch {
	case strings.HasPrefix(l, "Step ") && strings.Contains(l, " : "):
		c.start(l)
		return
	case trimmed == "---> Using cache":
		if c.cur != nil {
			c.cur.State = StepCached
		}
		return
	case strings.HasPrefix(trimmed, "--->"):
		// " ---> Running in 1a2b", " ---> 3c4d" (the step's result)
		return
	case strings.HasPrefix(l, "Removing intermediate container "):
		return
	case strings.HasPrefix(l, "Successfully built "), strings.HasPrefix(l, "Successfully tagged "):
		c.finish(StepDone)
		return
	}
	var step *Step
	if c.cur != nil {
		s := *c.cur
		step = &s
	}
	c.tail = append(c.tail, l)
	if len(c.tail) > tailLines {
		c.tail = c.tail[1:]
	}
	c.o.emit(Event{Service: c.service, Kind: KindLog, Msg: l, Step: step})
}

// readClassic reads the classic builder's JSON message stream to its end.
func readClassic(r io.Reader, service string, o Options) error {
	c := &classicSteps{service: service, o: o}
	dec := json.NewDecoder(r)
	for {
		var m engineMessage
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				c.finish(StepDone)
				return nil
			}
			return fmt.Errorf("build %s: read the engine's answer: %w", service, err)
		}
		if msg, failed := m.failure(); failed {
			e := &BuildError{Service: service, Msg: strings.TrimSpace(msg), Tail: c.tail}
			if c.cur != nil {
				e.Step = c.cur.Name
				c.cur.Error = e.Msg
				c.finish(StepFailed)
			}
			return e
		}
		if m.ID != "" && m.Status != "" {
			// A base image being pulled, layer by layer.
			if c.cur != nil && o.Live {
				c.cur.Detail = strings.TrimSpace(m.ID + ": " + m.Status + " " + progressText(m.Progress))
				s := *c.cur
				o.emit(Event{Service: service, Kind: KindStep, Msg: s.Line(), Step: &s})
			}
			continue
		}
		if m.Aux != nil {
			var res build.Result
			if json.Unmarshal(*m.Aux, &res) == nil && res.ID != "" {
				o.emit(Event{Service: service, Kind: KindImage, Msg: res.ID})
			}
			continue
		}
		text := m.Stream
		if text == "" {
			text = m.Status
		}
		for _, l := range strings.Split(strings.TrimRight(text, "\n"), "\n") {
			if strings.TrimSpace(l) != "" {
				c.line(strings.TrimRight(l, "\r"))
			}
		}
	}
}

func progressText(p *jsonstream.Progress) string {
	if p == nil || p.Total <= 0 {
		return ""
	}
	return fmt.Sprintf("%s/%s", HumanBytes(p.Current), HumanBytes(p.Total))
}

// HumanBytes writes a size the way docker's progress does: 512B, 1.5kB, 20.0MB, 1.2GB.
func HumanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1fGB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1fMB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1fkB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%dB", n)
}

// tarContext makes the classic builder's context: the folder less what .dockerignore
// excludes (the Dockerfile and .dockerignore always go in, as with docker build).
func tarContext(src source) (io.ReadCloser, error) {
	excludes := src.excludes
	if len(excludes) > 0 {
		excludes = append(append([]string(nil), excludes...), "!"+src.rel, "!.dockerignore")
	}
	return archive.TarWithOptions(src.dir, &archive.TarOptions{ExcludePatterns: excludes})
}

var (
	fromRe = regexp.MustCompile(`(?i)^\s*FROM\s+(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?`)
	argRe  = regexp.MustCompile(`(?i)^\s*ARG\s+([A-Za-z_][A-Za-z0-9_]*)(?:=(\S*))?`)
	varRe  = regexp.MustCompile(`\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?`)
)

// baseImageAuth finds the registries of the Dockerfile's FROM images and the
// credentials for each, for the classic builder, which takes them with the request
// (BuildKit asks through its session instead).
func baseImageAuth(ctx context.Context, dockerfile string, args types.MappingWithEquals, kc *Keychain) (map[string]registry.AuthConfig, error) {
	if kc == nil {
		return nil, nil
	}
	f, err := os.Open(dockerfile)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	vars := map[string]string{}
	for k, v := range args {
		if v != nil {
			vars[k] = *v
		}
	}
	auths := map[string]registry.AuthConfig{}
	stages := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if m := argRe.FindStringSubmatch(line); m != nil {
			if _, set := vars[m[1]]; !set {
				vars[m[1]] = strings.Trim(m[2], `"'`)
			}
			continue
		}
		m := fromRe.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		ref := varRe.ReplaceAllStringFunc(m[1], func(s string) string {
			return vars[varRe.FindStringSubmatch(s)[1]]
		})
		isStage := stages[strings.ToLower(ref)]
		if m[2] != "" {
			stages[strings.ToLower(m[2])] = true
		}
		if strings.EqualFold(ref, "scratch") || isStage {
			continue
		}
		host, err := RegistryHost(ref)
		if err != nil {
			continue // the builder will say what is wrong with it
		}
		key := normalizeHost(host)
		if _, ok := auths[key]; ok {
			continue
		}
		creds, err := kc.Credentials(ctx, host)
		if err != nil {
			return nil, err
		}
		if !creds.Empty() {
			auths[key] = registry.AuthConfig{Username: creds.Username, Password: creds.Password, IdentityToken: creds.IdentityToken, ServerAddress: key}
		}
	}
	return auths, sc.Err()
}
