package deploy

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/types"

	"github.com/shipdeploy/ship/pkg/engine"
	"github.com/shipdeploy/ship/pkg/release"
)

// The tests on fake hosts name releases by their version alone, as hosts deployed
// before names had a hash do; TestReleaseNames and the e2e tests use the real names.
func init() { nameFor = func(version string, _ []byte, _ ...release.File) string { return version } }

// errCut is what a fakeHost answers once its connection has been cut.
var errCut = errors.New("connection lost")

// fakeHost is a Host in memory: a file tree and an engine that runs containers as
// records. fault, when set, is asked before each operation and can fail it; cut
// makes every later operation fail too, as a dropped connection does.
type fakeHost struct {
	name string

	mu    sync.Mutex
	nodes map[string]*fakeNode
	dead  bool
	fault func(op, p string, data []byte) (err error, cut bool)
	// afterUp, when set, is asked at the end of each Up, once its containers have
	// changed, and can fail it: what a cancellation in the middle of an Up leaves.
	afterUp func() error

	images     map[string]bool     // on the engine
	registry   map[string]bool     // pullable
	containers map[string]*fakeCtr // by project/service
	unhealthy  func(s types.ServiceConfig) bool
	jobExit    map[string]int // by service
	jobLogs    []string
	pulls      []string
	removed    []string // images removed
	starts     map[string]int
	ops        []string
	closed     bool
	gen        int // of the newest connection
	dials      int
	pingErr    error
}

type fakeNode struct {
	dir    bool
	link   string
	data   []byte
	mode   fs.FileMode
	isLink bool
}

type fakeCtr struct {
	service, image, hash string
	dir                  string // the project's working_dir when it was created
	running              bool
	exit                 int
}

func newFakeHost(name string) *fakeHost {
	return &fakeHost{
		name:       name,
		nodes:      map[string]*fakeNode{"/": {dir: true}},
		images:     map[string]bool{},
		registry:   map[string]bool{},
		containers: map[string]*fakeCtr{},
		jobExit:    map[string]int{},
		starts:     map[string]int{},
	}
}

func (h *fakeHost) op(op, p string, data []byte) error {
	h.ops = append(h.ops, op+" "+p)
	if h.dead || h.closed {
		return errCut
	}
	if h.fault != nil {
		if err, cut := h.fault(op, p, data); err != nil {
			if cut {
				h.dead = true
			}
			return err
		}
	}
	return nil
}

func notExist(op, p string) error { return &fs.PathError{Op: op, Path: p, Err: fs.ErrNotExist} }

func (h *fakeHost) parentDir(op, p string) error {
	n := h.nodes[path.Dir(p)]
	if n == nil || !n.dir {
		return notExist(op, p)
	}
	return nil
}

func (h *fakeHost) MkdirAll(ctx context.Context, dir string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.op("mkdirall", dir, nil); err != nil {
		return err
	}
	for p := dir; p != "/"; p = path.Dir(p) {
		if n := h.nodes[p]; n != nil {
			if !n.dir {
				return &fs.PathError{Op: "mkdir", Path: p, Err: errors.New("not a directory")}
			}
			continue
		}
		h.nodes[p] = &fakeNode{dir: true, mode: 0o755}
	}
	return nil
}

func (h *fakeHost) Mkdir(ctx context.Context, dir string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.op("mkdir", dir, nil); err != nil {
		return err
	}
	if h.nodes[dir] != nil {
		return &fs.PathError{Op: "mkdir", Path: dir, Err: fs.ErrExist}
	}
	if err := h.parentDir("mkdir", dir); err != nil {
		return err
	}
	h.nodes[dir] = &fakeNode{dir: true, mode: 0o755}
	return nil
}

func (h *fakeHost) WriteFile(ctx context.Context, name string, data []byte, mode fs.FileMode) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.op("write", name, data); err != nil {
		return err
	}
	if h.nodes[name] != nil {
		return &fs.PathError{Op: "create", Path: name, Err: fs.ErrExist}
	}
	if err := h.parentDir("create", name); err != nil {
		return err
	}
	h.nodes[name] = &fakeNode{data: append([]byte(nil), data...), mode: mode}
	return nil
}

func (h *fakeHost) ReadFile(ctx context.Context, name string) ([]byte, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.op("read", name, nil); err != nil {
		return nil, err
	}
	n := h.resolve(name)
	if n == nil || n.dir {
		return nil, notExist("open", name)
	}
	return append([]byte(nil), n.data...), nil
}

// resolve follows symlinks in the last element (enough for current/...).
func (h *fakeHost) resolve(p string) *fakeNode {
	for i := 0; i < 8; i++ {
		// A symlink in a parent: current/docker-compose.yml.
		for dir := path.Dir(p); dir != "/"; dir = path.Dir(dir) {
			if n := h.nodes[dir]; n != nil && n.isLink {
				p = path.Join(path.Dir(dir), n.link, strings.TrimPrefix(p, dir+"/"))
				break
			}
		}
		n := h.nodes[p]
		if n == nil || !n.isLink {
			return n
		}
		p = path.Join(path.Dir(p), n.link)
	}
	return nil
}

func (h *fakeHost) Rename(ctx context.Context, from, to string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.op("rename", from+" "+to, nil); err != nil {
		return err
	}
	n := h.nodes[from]
	if n == nil {
		return notExist("rename", from)
	}
	if err := h.parentDir("rename", to); err != nil {
		return err
	}
	if old := h.nodes[to]; old != nil && old.dir {
		if !n.dir || len(h.children(to)) > 0 {
			return &fs.PathError{Op: "rename", Path: to, Err: errors.New("directory not empty")}
		}
	}
	for p, c := range h.nodes {
		if strings.HasPrefix(p, from+"/") {
			delete(h.nodes, p)
			h.nodes[to+strings.TrimPrefix(p, from)] = c
		}
	}
	delete(h.nodes, from)
	h.nodes[to] = n
	return nil
}

func (h *fakeHost) children(dir string) []string {
	var out []string
	for p := range h.nodes {
		if p != dir && path.Dir(p) == dir {
			out = append(out, p)
		}
	}
	sort.Strings(out)
	return out
}

func (h *fakeHost) Symlink(ctx context.Context, target, name string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.op("symlink", name, nil); err != nil {
		return err
	}
	if h.nodes[name] != nil {
		return &fs.PathError{Op: "symlink", Path: name, Err: fs.ErrExist}
	}
	if err := h.parentDir("symlink", name); err != nil {
		return err
	}
	h.nodes[name] = &fakeNode{isLink: true, link: target, mode: fs.ModeSymlink | 0o777}
	return nil
}

func (h *fakeHost) Readlink(ctx context.Context, name string) (string, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.op("readlink", name, nil); err != nil {
		return "", err
	}
	n := h.nodes[name]
	if n == nil || !n.isLink {
		return "", notExist("readlink", name)
	}
	return n.link, nil
}

type fakeInfo struct {
	name string
	n    *fakeNode
}

func (i fakeInfo) Name() string { return i.name }
func (i fakeInfo) Size() int64  { return int64(len(i.n.data)) }
func (i fakeInfo) Mode() fs.FileMode {
	if i.n.dir {
		return fs.ModeDir | i.n.mode
	}
	return i.n.mode
}
func (i fakeInfo) ModTime() time.Time { return time.Time{} }
func (i fakeInfo) IsDir() bool        { return i.n.dir }
func (i fakeInfo) Sys() any           { return nil }

func (h *fakeHost) ReadDir(ctx context.Context, dir string) ([]fs.FileInfo, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.op("readdir", dir, nil); err != nil {
		return nil, err
	}
	n := h.nodes[dir]
	if n == nil || !n.dir {
		return nil, notExist("readdir", dir)
	}
	var out []fs.FileInfo
	for _, p := range h.children(dir) {
		out = append(out, fakeInfo{name: path.Base(p), n: h.nodes[p]})
	}
	return out, nil
}

func (h *fakeHost) RemoveAll(ctx context.Context, p string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.op("remove", p, nil); err != nil {
		return err
	}
	for q := range h.nodes {
		if q == p || strings.HasPrefix(q, p+"/") {
			delete(h.nodes, q)
		}
	}
	return nil
}

func (h *fakeHost) Append(ctx context.Context, name string, data []byte) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.op("append", name, data); err != nil {
		return err
	}
	n := h.nodes[name]
	if n == nil {
		if err := h.parentDir("append", name); err != nil {
			return err
		}
		n = &fakeNode{mode: 0o644}
		h.nodes[name] = n
	}
	n.data = append(n.data, data...)
	return nil
}

func (h *fakeHost) Close() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	return nil
}

func (h *fakeHost) Ping(ctx context.Context) (string, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.op("ping", "", nil); err != nil {
		return "", err
	}
	return "20.10.99 (API 1.41)", h.pingErr
}

func (h *fakeHost) Check(ctx context.Context, p *types.Project, services []string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.op("check", p.Name, nil)
}

// PullImages pulls as the engine does: pull_policy always every time, missing (the
// default) when the engine lacks the image, never and build never.
func (h *fakeHost) PullImages(ctx context.Context, p *types.Project, services []string, progress func(engine.Event)) error {
	if len(services) == 0 {
		services = p.ServiceNames()
	}
	sort.Strings(services)
	seen := map[string]bool{}
	for _, name := range services {
		s := p.Services[name]
		if s.Image == "" || seen[s.Image] {
			continue
		}
		seen[s.Image] = true
		switch s.PullPolicy {
		case types.PullPolicyNever, types.PullPolicyBuild:
			continue
		case types.PullPolicyAlways:
		default:
			has, err := h.hasImage(s.Image)
			if err != nil {
				return err
			}
			if has {
				continue
			}
		}
		if err := h.pull(s.Image); err != nil {
			return fmt.Errorf("pull %s for service %s: %w", s.Image, name, err)
		}
		if progress != nil {
			progress(engine.Event{Service: name, Action: "pull", Msg: "pulled " + s.Image})
		}
	}
	return nil
}

func (h *fakeHost) hasImage(ref string) (bool, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.op("hasimage", ref, nil); err != nil {
		return false, err
	}
	return h.images[ref], nil
}

func (h *fakeHost) pull(ref string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.op("pull", ref, nil); err != nil {
		return err
	}
	if !h.registry[ref] {
		return fmt.Errorf("manifest for %s not found", ref)
	}
	h.pulls = append(h.pulls, ref)
	h.images[ref] = true
	return nil
}

// RunJob starts the job as Up does and ends it with its exit code in jobExit, with
// jobLogs as its logs.
func (h *fakeHost) RunJob(ctx context.Context, p *types.Project, service string, o engine.JobOptions) error {
	if err := h.Up(ctx, p, engine.UpOptions{Services: []string{service}, Progress: o.Progress}); err != nil {
		return fmt.Errorf("start pre-deploy job %s: %w", service, err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.op("wait", p.Name+"/"+service, nil); err != nil {
		return fmt.Errorf("pre-deploy job %s: %w", service, err)
	}
	c := h.containers[p.Name+"/"+service]
	if c == nil {
		return fmt.Errorf("pre-deploy job %s: no container", service)
	}
	if o.Output != nil {
		for _, l := range h.jobLogs {
			o.Output(engine.LogLine{Service: service, Stream: "stdout", Text: l})
		}
	}
	if c.exit != 0 {
		return &engine.JobError{Service: service, Code: c.exit, Logs: append([]string(nil), h.jobLogs...)}
	}
	return nil
}

func (h *fakeHost) RemoveImage(ctx context.Context, ref string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.op("rmi", ref, nil); err != nil {
		return err
	}
	delete(h.images, ref)
	h.removed = append(h.removed, ref)
	return nil
}

func (h *fakeHost) Up(ctx context.Context, p *types.Project, o engine.UpOptions) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.op("up", p.Name, nil); err != nil {
		return err
	}
	names := o.Services
	if len(names) == 0 {
		names = p.ServiceNames()
	}
	sort.Strings(names)
	if o.RemoveOrphans {
		for key, c := range h.containers {
			if strings.HasPrefix(key, p.Name+"/") {
				if _, ok := p.Services[c.service]; !ok {
					delete(h.containers, key)
				}
			}
		}
	}
	for _, name := range names {
		s := p.Services[name]
		if !h.images[s.Image] {
			return fmt.Errorf("up %s: no such image: %s", p.Name, s.Image)
		}
		hash, _ := engine.ConfigHash(s)
		key := p.Name + "/" + name
		c := h.containers[key]
		action := "create"
		if c != nil {
			if c.hash == hash && c.running {
				if o.Progress != nil {
					o.Progress(engine.Event{Service: name, Action: "unchanged", Msg: "running"})
				}
				continue
			}
			action = "recreate"
		}
		c = &fakeCtr{service: name, image: s.Image, hash: hash, running: true, dir: p.WorkingDir}
		if code, ok := h.jobExit[name]; ok {
			c.running, c.exit = false, code
		}
		h.containers[key] = c
		h.starts[name]++
		if o.Progress != nil {
			o.Progress(engine.Event{Service: name, Action: action, Msg: "started"})
		}
		if o.Wait && h.unhealthy != nil && h.unhealthy(s) {
			var env []string
			for k, v := range s.Environment {
				if v != nil {
					env = append(env, k+"="+*v)
				}
			}
			sort.Strings(env)
			return &engine.HealthError{Service: name, Container: p.Name + "-" + name + "-1", Status: "unhealthy", Logs: []string{"env: " + strings.Join(env, " ")}}
		}
	}
	if h.afterUp != nil {
		return h.afterUp()
	}
	return nil
}

func (h *fakeHost) Down(ctx context.Context, project string, o engine.DownOptions) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.op("down", project, nil); err != nil {
		return err
	}
	for key := range h.containers {
		if strings.HasPrefix(key, project+"/") {
			delete(h.containers, key)
		}
	}
	return nil
}

func (h *fakeHost) Containers(ctx context.Context, project string) ([]engine.Container, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.op("containers", project, nil); err != nil {
		return nil, err
	}
	var out []engine.Container
	for key, c := range h.containers {
		if strings.HasPrefix(key, project+"/") {
			state := "exited"
			if c.running {
				state = "running"
			}
			out = append(out, engine.Container{Name: project + "-" + c.service + "-1", Service: c.service, Image: c.image, State: state, ConfigHash: c.hash, ExitCode: c.exit, WorkingDir: c.dir})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Service < out[j].Service })
	return out, nil
}

func (h *fakeHost) Logs(ctx context.Context, project string, o engine.LogOptions, fn func(engine.LogLine)) error {
	h.mu.Lock()
	lines := append([]string(nil), h.jobLogs...)
	h.mu.Unlock()
	for _, l := range lines {
		fn(engine.LogLine{Service: strings.Join(o.Services, ","), Text: l})
	}
	return nil
}

// put writes a file as someone else on the host would, making its folders.
func (h *fakeHost) put(p string, data []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for d := path.Dir(p); d != "/"; d = path.Dir(d) {
		if h.nodes[d] == nil {
			h.nodes[d] = &fakeNode{dir: true, mode: 0o755}
		}
	}
	h.nodes[p] = &fakeNode{data: data, mode: 0o644}
}

// file returns a file's content ("" when absent) and whether it is there.
func (h *fakeHost) file(p string) (string, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := h.nodes[p]
	if n == nil || n.dir || n.isLink {
		return "", false
	}
	return string(n.data), true
}

func (h *fakeHost) link(p string) string {
	h.mu.Lock()
	defer h.mu.Unlock()
	if n := h.nodes[p]; n != nil && n.isLink {
		return n.link
	}
	return ""
}

func (h *fakeHost) exists(p string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.nodes[p] != nil
}

// under lists every path below dir.
func (h *fakeHost) under(dir string) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for p := range h.nodes {
		if strings.HasPrefix(p, dir+"/") {
			out = append(out, strings.TrimPrefix(p, dir+"/"))
		}
	}
	sort.Strings(out)
	return out
}

func (h *fakeHost) running(project string) map[string]string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.runningLocked(project)
}

// runningLocked is running, for a caller that holds h.mu (afterUp).
func (h *fakeHost) runningLocked(project string) map[string]string {
	out := map[string]string{}
	for key, c := range h.containers {
		if strings.HasPrefix(key, project+"/") && c.running {
			out[c.service] = c.image
		}
	}
	return out
}

// fakeNet is a set of fakeHosts by destination.
type fakeNet struct {
	t     *testing.T
	hosts map[string]*fakeHost
	dials map[string]error
}

func (n *fakeNet) dial(ctx context.Context, dest string) (Host, error) {
	if err := n.dials[dest]; err != nil {
		return nil, err
	}
	h := n.hosts[dest]
	if h == nil {
		n.t.Fatalf("dial of unknown host %s", dest)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed, h.dead = false, false
	h.gen++
	h.dials++
	return &fakeConn{fakeHost: h, gen: h.gen}, nil
}

// fakeConn is one connection to a fakeHost: closing it closes the host's files and
// engine only while it is the newest connection.
type fakeConn struct {
	*fakeHost
	gen int
}

func (c *fakeConn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen == c.fakeHost.gen {
		c.closed = true
	}
	return nil
}

// fakeRegistry is a Registry with a set of manifests.
type fakeRegistry map[string]bool

func (r fakeRegistry) HasManifest(ctx context.Context, ref string) (bool, error) {
	return r[ref], nil
}
