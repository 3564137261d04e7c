package deploy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/compose-spec/compose-go/v2/types"

	"github.com/shipdeploy/ship/pkg/compose"
	"github.com/shipdeploy/ship/pkg/config"
	"github.com/shipdeploy/ship/pkg/redact"
	"github.com/shipdeploy/ship/pkg/release"
)

// Release is one version of the app, resolved for the hosts: the compose file as it
// is uploaded, and the project the hosts' engines run, read back from that file.
type Release struct {
	App string
	// SHA is the version: the commit's sha, or <sha>-dirty-<hash> for a tree with
	// uncommitted changes (--allow-dirty). It is the images' tag.
	SHA string
	// Name names the release on the hosts, its folder under releases/:
	// <SHA>-<hash of File> (release.NameFor). The same commit with another resolved
	// file is another release; an identical one is the same.
	Name string
	// Env is the environment it is for (recorded in release.json).
	Env     string
	Subject string // the commit's subject
	// Project is what the hosts run: File loaded back, with working_dir and the
	// config_files label pointing into the host's releases/<Name>/, under the
	// environment's compose project name.
	Project *compose.Project
	// File is the resolved compose file: interpolated, images pinned, no build
	// sections, env_file values inlined. It can hold secrets: mode 0600 on the host.
	File []byte
	// Images are every image the release runs; Built those of them that ship built
	// and pushed (<registry>/<image>:<SHA>). Both sorted.
	Images []string
	Built  []string
	// Files go into the release's folder beside File (mode 0600): the app's own TLS
	// certificate and key. Their content is never printed.
	Files []release.File
}

// PrepareOptions say which release to prepare.
type PrepareOptions struct {
	Config *config.Config
	Env    *config.Environment
	// SHA is the release's name and the images' tag.
	SHA     string
	Subject string
	// Compose is the compose file's content at the commit being deployed; nil reads
	// the working tree's (Config.Compose).
	Compose []byte
	// Environ is the environment compose interpolation sees, as KEY=VALUE.
	Environ []string
	// LocalRoots are folders of this machine (the checkout): a bind mount of a path
	// in one of them cannot be deployed. Config.Dir is always one.
	LocalRoots []string
	// Redactor learns the values of every env_file; may be nil.
	Redactor *redact.Redactor
}

// Prepare loads the compose file for the environment, pins the images of the services
// ship builds to <registry>/<image>:<SHA>, and resolves it into the file the hosts get.
// It refuses, before anything is touched, what cannot run on a host: a bind mount of
// a path in the local checkout.
func Prepare(ctx context.Context, o PrepareOptions) (*Release, error) {
	cfg, env := o.Config, o.Env
	if cfg.Registry == "" {
		return nil, fmt.Errorf("%w: %s: no registry to deploy from; set registry in the file or SHIP_REGISTRY", config.ErrInvalid, cfg.File)
	}
	if o.SHA == "" {
		return nil, errors.New("prepare: no version to deploy")
	}
	files := []string{cfg.Compose}
	if o.Compose != nil {
		dir, err := os.MkdirTemp("", "ship-compose-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
		name := filepath.Join(dir, filepath.Base(cfg.Compose))
		if err := os.WriteFile(name, o.Compose, 0o600); err != nil {
			return nil, err
		}
		files = []string{name}
	}
	var envFiles []string
	if env.EnvFile != "" {
		envFiles = []string{env.EnvFile}
		if err := o.Redactor.AddEnvFile(cfg.Path(env.EnvFile)); err != nil {
			return nil, err
		}
	}
	p, err := compose.Load(ctx, compose.Options{
		Dir: cfg.Dir, Files: files, Name: env.ProjectName(cfg.App), EnvFiles: envFiles, Environ: o.Environ,
	})
	if err != nil {
		return nil, o.Redactor.Error(err)
	}
	p.PinImages(compose.RegistryRef(cfg.Registry, o.SHA))
	tlsFiles, err := readTLSFiles(cfg, env, o.Redactor)
	if err != nil {
		return nil, err
	}

	if err := prepareServices(p, o); err != nil {
		return nil, err
	}
	if env.Agent {
		if err := checkAgent(p, o); err != nil {
			return nil, err
		}
	}
	l := release.Layout(env.Path)
	// The file does not hold its folder (working_dir comes from where it is read):
	// its hash names the release.
	data, err := p.MarshalYAML()
	if err != nil {
		return nil, fmt.Errorf("write the release's compose file: %w", err)
	}
	name := nameFor(o.SHA, data, tlsFiles...)
	p.WorkingDir = l.Release(name)
	p.ComposeFiles = []string{l.ComposeFile(name)}
	// What the hosts run is what the file says, read back the way a rollback reads it.
	back, err := loadRelease(ctx, env.ProjectName(cfg.App), l, name, data)
	if err != nil {
		return nil, o.Redactor.Error(fmt.Errorf("read back the release's compose file: %w", err))
	}
	r := &Release{App: cfg.App, SHA: o.SHA, Name: name, Env: env.Name, Subject: o.Subject, Project: back, File: data, Files: tlsFiles}
	r.Images, r.Built = imagesOf(back), sortedUnique(p.Built)
	back.Built = p.Built
	return r, nil
}

// nameFor names a release (release.NameFor); the tests of other things than the
// naming name releases by their version alone, as hosts of before names had a hash.
var nameFor = release.NameFor

// release is the release's name on the hosts: Name, or SHA for a Release made
// without Prepare.
func (r *Release) release() string {
	if r.Name != "" {
		return r.Name
	}
	return r.SHA
}

// imagesOf is every image p runs, sorted.
func imagesOf(p *compose.Project) []string {
	refs := map[string]string{}
	for name, s := range p.Services {
		if s.Image != "" {
			refs[name] = s.Image
		}
	}
	return sortedUnique(refs)
}

// sortedUnique is m's values, each once, sorted.
func sortedUnique(m map[string]string) []string {
	seen := map[string]bool{}
	var out []string
	for _, v := range m {
		if !seen[v] {
			seen[v] = true
			out = append(out, v)
		}
	}
	sort.Strings(out)
	return out
}

// prepareServices readies each service for the hosts: the values of its env_file
// files learnt as secrets, its build section and env_file entries dropped (the hosts
// get images, and the values are in environment already). A bind mount of a folder
// of the checkout is refused, all of them at once, naming each.
func prepareServices(p *compose.Project, o PrepareOptions) error {
	cfg := o.Config
	roots := append([]string{cfg.Dir}, o.LocalRoots...)
	var problems []string
	for _, name := range p.ServicesInOrder() {
		s := p.Services[name]
		for _, ef := range s.EnvFiles {
			if err := o.Redactor.AddEnvFile(ef.Path); err != nil {
				return err
			}
		}
		for _, v := range s.Volumes {
			if v.Type == types.VolumeTypeBind && inAny(roots, v.Source) {
				problems = append(problems, fmt.Sprintf(
					"service %q: the bind mount of %s is a folder of this checkout, which the hosts do not have; use a named volume, or an absolute path on the host",
					name, displayRel(cfg.Dir, v.Source)))
			}
		}
		s.Build = nil
		s.EnvFiles = nil
		p.Services[name] = s
	}
	if len(problems) > 0 {
		return fmt.Errorf("%w: %s:\n  %s", compose.ErrInvalid, cfg.Path(cfg.Compose), strings.Join(problems, "\n  "))
	}
	return nil
}

// checkAgent refuses what shipd would refuse, before anything is uploaded.
func checkAgent(p *compose.Project, o PrepareOptions) error {
	err := p.CheckAgent()
	if err == nil {
		return nil
	}
	var ae *compose.AgentError
	if o.Compose != nil && errors.As(err, &ae) {
		// The file of the commit was read from a temporary copy: name the
		// repository's.
		name := o.Config.Path(o.Config.Compose)
		ae.Files = []string{name}
		for i := range ae.Problems {
			ae.Problems[i].File = name
		}
	}
	return o.Redactor.Error(err)
}

// inAny reports whether p is in one of roots.
func inAny(roots []string, p string) bool {
	for _, root := range roots {
		if root != "" && within(root, p) {
			return true
		}
	}
	return false
}

// within reports whether p is root or inside it.
func within(root, p string) bool {
	rel, err := filepath.Rel(root, p)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator))
}

func displayRel(dir, p string) string {
	if rel, err := filepath.Rel(dir, p); err == nil {
		return "./" + filepath.ToSlash(rel)
	}
	return p
}

// loadRelease reads a release's compose file as the host has it, with the app as the
// project name and the release's folder as its working directory.
func loadRelease(ctx context.Context, app string, l release.Layout, sha string, data []byte) (*compose.Project, error) {
	return compose.LoadResolved(ctx, app, l.Release(sha), l.ComposeFile(sha), data)
}

// readReleaseProject reads and loads a release's compose file from the host.
func readReleaseProject(ctx context.Context, st *release.Store, app, sha string) (*compose.Project, error) {
	data, err := st.ComposeFile(ctx, sha)
	if err != nil {
		return nil, err
	}
	return loadRelease(ctx, app, st.Layout, sha, data)
}

// readTLSFiles reads the environment's own certificate and key (tls: {cert, key}) and
// checks that they make a pair, before anything is uploaded. The key is a secret.
func readTLSFiles(cfg *config.Config, env *config.Environment, r *redact.Redactor) ([]release.File, error) {
	if env.TLSCert == "" {
		return nil, nil
	}
	where := fmt.Sprintf("%s: environments.%s.tls", cfg.File, env.Name)
	cert, err := os.ReadFile(cfg.Path(env.TLSCert))
	if err != nil {
		return nil, fmt.Errorf("%w: %s: cert: %v", config.ErrInvalid, where, err)
	}
	key, err := os.ReadFile(cfg.Path(env.TLSKey))
	if err != nil {
		return nil, fmt.Errorf("%w: %s: key: %v", config.ErrInvalid, where, err)
	}
	if r != nil {
		r.Add(string(key))
	}
	pair, err := tls.X509KeyPair(cert, key)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %s and %s are not a certificate and its key in PEM: %v", config.ErrInvalid, where, env.TLSCert, env.TLSKey, err)
	}
	if len(pair.Leaf.DNSNames) == 0 {
		return nil, fmt.Errorf("%w: %s: %s names no host (no DNS subject alternative name)", config.ErrInvalid, where, env.TLSCert)
	}
	if time.Now().After(pair.Leaf.NotAfter) {
		return nil, fmt.Errorf("%w: %s: %s expired on %s; renew it", config.ErrInvalid, where, env.TLSCert, pair.Leaf.NotAfter.Format(time.DateOnly))
	}
	return []release.File{{Name: release.TLSCertFile, Data: cert}, {Name: release.TLSKeyFile, Data: key}}, nil
}
