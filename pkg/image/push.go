package image

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"github.com/distribution/reference"
	"github.com/moby/moby/api/pkg/authconfig"
	"github.com/moby/moby/api/types/registry"
	"github.com/moby/moby/client"
	"golang.org/x/sync/errgroup"
)

var (
	// ErrNotBuilt means an image to push is not on the engine.
	ErrNotBuilt = errors.New("image not built")
	// ErrPushFailed means the engine could not push an image, or the registry does not
	// hold what was pushed.
	ErrPushFailed = errors.New("push failed")
)

// PushOptions control a push.
type PushOptions struct {
	// Auth has the credentials for the registries; nil pushes anonymously.
	Auth *Keychain
	// Latest also tags each image :latest and pushes that.
	Latest bool
	// Live also reports every change of a layer's progress, not only where it ended.
	Live bool
	// Progress receives the push's events; may be nil.
	Progress func(Event)
	// Prepared is the registry check PreparePush started ahead of the push; nil, or one
	// for other registries, has Push check them itself.
	Prepared *Prepared
}

func (o PushOptions) emit(e Event) {
	if o.Progress != nil {
		o.Progress(e)
	}
}

// Layer is one layer of an image being pushed.
type Layer struct {
	Ref     string // the image
	ID      string // the layer's short id
	Status  string // "Preparing", "Pushing", "Pushed", "Layer already exists", ...
	Current int64
	Total   int64
}

// Done reports whether the layer is in the registry now.
func (l Layer) Done() bool {
	return l.Status == "Pushed" || l.Status == "Layer already exists" || strings.HasPrefix(l.Status, "Mounted from")
}

// Sent reports whether the layer's content was uploaded (rather than found there).
func (l Layer) Sent() bool { return l.Status == "Pushed" }

// Pushed is an image in the registry.
type Pushed struct {
	Ref    string
	Digest string // of the manifest
	Size   int
	Sent   int // layers uploaded
	Found  int // layers the registry already had
}

// Push pushes refs (images on the engine, each naming its registry) with the engine.
// Before anything is pushed it checks that every image is there and that each
// registry answers and accepts the credentials; afterwards, that each registry holds
// each manifest. Secrets never appear in events or errors.
func (b *Builder) Push(ctx context.Context, refs []string, o PushOptions) ([]Pushed, error) {
	res, err := b.push(ctx, refs, o)
	return res, o.Auth.RedactError(err)
}

type pushTarget struct {
	ref, host, repo, tag string
	creds                Credentials
}

func (b *Builder) push(ctx context.Context, refs []string, o PushOptions) ([]Pushed, error) {
	var targets []pushTarget
	for _, ref := range refs {
		t, err := parseTarget(ref)
		if err != nil {
			return nil, err
		}
		targets = append(targets, t)
	}
	// The engine's registry config, when asked, is not waited for beyond the push.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	hosts := targetHosts(targets)
	open := func() (*openedRegistries, error) { return o.Prepared.wait(ctx) }
	if !o.Prepared.covers(hosts, o.Auth) {
		engineConfig := b.engineRegistryConfig(ctx, hosts)
		open = func() (*openedRegistries, error) { return openRegistries(ctx, hosts, engineConfig, o.Auth) }
	}
	clients, err := b.checkBeforePush(ctx, targets, open, o)
	if err != nil {
		return nil, err
	}
	if o.Latest {
		if targets, err = b.tagLatest(ctx, targets); err != nil {
			return nil, err
		}
	}

	var done []Pushed
	for _, t := range targets {
		p, err := b.pushOne(ctx, t, o)
		if err != nil {
			return done, err
		}
		done = append(done, p)
	}
	return done, verifyPushed(ctx, clients, targets, done, o)
}

// checkBeforePush checks that each image is on the engine and, with open, that each
// registry answers and takes its credentials, in one round of requests at once. An
// image not built is told before what its registry answered (the caller adds that
// answer): the one mistake explains the other when the registry is mistyped.
func (b *Builder) checkBeforePush(ctx context.Context, targets []pushTarget, open func() (*openedRegistries, error), o PushOptions) (map[string]*registryClient, error) {
	errs := make([]error, len(targets)+1)
	var wg sync.WaitGroup
	for i, t := range targets {
		wg.Go(func() {
			if _, err := b.api.ImageInspect(ctx, t.ref); err != nil {
				errs[i] = fmt.Errorf("inspect %s: %w", t.ref, err)
				if isNotFound(err) {
					errs[i] = fmt.Errorf("%w: %s is not on the engine", ErrNotBuilt, t.ref)
				}
			}
		})
	}
	var opened *openedRegistries
	wg.Go(func() { opened, errs[len(targets)] = open() })
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	for i, host := range opened.hosts {
		o.emit(Event{Kind: KindRegistry, Msg: opened.msgs[i], Ref: host})
	}
	for i, t := range targets {
		targets[i].creds = opened.clients[t.host].creds
	}
	return opened.clients, nil
}

// engineRegistryConfig asks the engine, in the meantime, which registries it reaches
// over plain HTTP: that matters only when HTTPS fails, and not at all when every
// host is on a loopback address (see loopbackHost), so then it is not asked. The
// returned function waits for the answer (nil when the engine did not give one);
// nothing waits for it otherwise.
func (b *Builder) engineRegistryConfig(ctx context.Context, hosts []string) func() *registry.ServiceConfig {
	if !slices.ContainsFunc(hosts, func(h string) bool { return !loopbackHost(h) }) {
		return func() *registry.ServiceConfig { return nil }
	}
	infoCh := make(chan *registry.ServiceConfig, 1)
	go func() {
		res, err := b.api.Info(ctx, client.InfoOptions{})
		if err != nil {
			infoCh <- nil
			return
		}
		infoCh <- res.Info.RegistryConfig
	}()
	var regCfg *registry.ServiceConfig
	asked := false
	return func() *registry.ServiceConfig {
		if !asked {
			regCfg, asked = <-infoCh, true
		}
		return regCfg
	}
}

// loopbackHost reports whether host[:port] is a loopback address (127.0.0.0/8, ::1)
// or localhost. The engine always reaches those over plain HTTP as well: it adds
// them to its insecure networks whatever its config says, and its config can only
// name registries insecure, never secure (docker.io aside).
func loopbackHost(host string) bool {
	name := host
	if h, _, err := net.SplitHostPort(host); err == nil {
		name = h
	}
	if name == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(strings.Trim(name, "[]"))
	return err == nil && ip.Unmap().IsLoopback()
}

// openedRegistries are registries that answered and took their credentials: a client
// for each host, and what to tell of each (hosts[i] is told msgs[i]).
type openedRegistries struct {
	hosts   []string
	clients map[string]*registryClient
	msgs    []string
}

// targetHosts are the registries of targets, each once, in order.
func targetHosts(targets []pushTarget) []string {
	var hosts []string
	for _, t := range targets {
		if !slices.Contains(hosts, t.host) {
			hosts = append(hosts, t.host)
		}
	}
	return hosts
}

// openRegistries checks that each host answers and takes its credentials from auth,
// the hosts at once.
func openRegistries(ctx context.Context, hosts []string, engineConfig func() *registry.ServiceConfig, auth *Keychain) (*openedRegistries, error) {
	opened := make([]*registryClient, len(hosts))
	msgs := make([]string, len(hosts))
	g, gctx := errgroup.WithContext(ctx)
	for i, host := range hosts {
		g.Go(func() error {
			creds, err := auth.Credentials(gctx, host)
			if err != nil {
				return err
			}
			c := newRegistryClient(host, creds, func() bool { return loopbackHost(host) || insecureRegistry(engineConfig(), host) })
			if err := c.ping(gctx); err != nil {
				return err
			}
			opened[i] = c
			msg := "registry " + host + ": answers"
			switch {
			case creds.Empty():
				msg += " (no credentials)"
			case creds.From != "":
				msg += ", credentials accepted (from " + creds.From + ")"
			default:
				msg += ", credentials accepted"
			}
			msgs[i] = msg
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	res := &openedRegistries{hosts: hosts, clients: map[string]*registryClient{}, msgs: msgs}
	for i, host := range hosts {
		res.clients[host] = opened[i]
	}
	return res, nil
}

// tagLatest tags each target :latest too and returns the targets with those after each.
func (b *Builder) tagLatest(ctx context.Context, targets []pushTarget) ([]pushTarget, error) {
	var all []pushTarget
	for _, t := range targets {
		latest := t
		latest.tag = "latest"
		latest.ref = strings.TrimSuffix(t.ref, ":"+t.tag) + ":latest"
		if _, err := b.api.ImageTag(ctx, client.ImageTagOptions{Source: t.ref, Target: latest.ref}); err != nil {
			return nil, fmt.Errorf("tag %s as %s: %w", t.ref, latest.ref, err)
		}
		all = append(all, t, latest)
	}
	return all, nil
}

// verifyPushed checks that each registry holds what the engine pushed (done[i] is
// targets[i]), filling in a digest the engine did not report; the checks go at once.
// A push that sent no layer and for which the engine reported the manifest's digest
// (the registry took the manifest and answered with it) is not asked again.
func verifyPushed(ctx context.Context, clients map[string]*registryClient, targets []pushTarget, done []Pushed, o PushOptions) error {
	asked := make([]bool, len(targets))
	g, gctx := errgroup.WithContext(ctx)
	for i, t := range targets {
		if done[i].Sent == 0 && done[i].Digest != "" {
			continue
		}
		asked[i] = true
		g.Go(func() error {
			digest, ok, err := clients[t.host].manifest(gctx, t.repo, t.tag)
			if err != nil {
				return fmt.Errorf("check %s in the registry: %w", t.ref, err)
			}
			if !ok {
				return fmt.Errorf("%w: the engine pushed %s but the registry does not have it", ErrPushFailed, t.ref)
			}
			if done[i].Digest != "" && digest != "" && digest != done[i].Digest {
				return fmt.Errorf("%w: the registry has %s as %s, not the %s the engine pushed", ErrPushFailed, t.ref, digest, done[i].Digest)
			}
			if done[i].Digest == "" {
				done[i].Digest = digest
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	for i, t := range targets {
		p := done[i]
		msg := fmt.Sprintf("%s: in the registry (%s)", t.ref, p.Digest)
		if !asked[i] {
			msg += ", as the registry answered the push"
		}
		o.emit(Event{Kind: KindVerified, Msg: msg, Ref: t.ref, Pushed: &p})
	}
	return nil
}

func parseTarget(ref string) (pushTarget, error) {
	named, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return pushTarget{}, fmt.Errorf("image reference %q: %w", ref, err)
	}
	tagged, ok := named.(reference.Tagged)
	if !ok {
		return pushTarget{}, fmt.Errorf("image reference %q has no tag", ref)
	}
	return pushTarget{ref: ref, host: reference.Domain(named), repo: reference.Path(named), tag: tagged.Tag()}, nil
}

func (b *Builder) pushOne(ctx context.Context, t pushTarget, o PushOptions) (Pushed, error) {
	o.emit(Event{Kind: KindPush, Msg: "pushing " + t.ref, Ref: t.ref})
	// Anonymous pushes send an empty auth config ("{}"): older engines (20.10) refuse
	// a push without the header.
	auth := registry.AuthConfig{}
	if !t.creds.Empty() {
		auth = registry.AuthConfig{
			Username: t.creds.Username, Password: t.creds.Password, IdentityToken: t.creds.IdentityToken, ServerAddress: t.host,
		}
	}
	authHeader, err := authconfig.Encode(auth)
	if err != nil {
		return Pushed{}, err
	}
	rc, err := b.api.ImagePush(ctx, t.ref, client.ImagePushOptions{RegistryAuth: authHeader})
	if err != nil {
		return Pushed{}, fmt.Errorf("push %s: %w", t.ref, err)
	}
	defer rc.Close()
	p, err := readPush(rc, t.ref, o)
	if err != nil {
		return p, err
	}
	msg := fmt.Sprintf("pushed %s: %d layer(s) sent, %d already there", t.ref, p.Sent, p.Found)
	o.emit(Event{Kind: KindPush, Msg: msg, Ref: t.ref, Pushed: &p})
	return p, nil
}

// readPush reads the engine's push progress to its end.
func readPush(r io.Reader, ref string, o PushOptions) (Pushed, error) {
	p := Pushed{Ref: ref}
	layers := map[string]*Layer{}
	dec := json.NewDecoder(r)
	for {
		var m engineMessage
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				return p, nil
			}
			return p, fmt.Errorf("push %s: read the engine's answer: %w", ref, err)
		}
		if msg, failed := m.failure(); failed {
			return p, fmt.Errorf("%w: %s: %s", ErrPushFailed, ref, strings.TrimSpace(msg))
		}
		if m.Aux != nil {
			var res pushResult
			if json.Unmarshal(*m.Aux, &res) == nil && res.Digest != "" {
				p.Digest, p.Size = res.Digest, res.Size
			}
			continue
		}
		if m.ID == "" || m.Status == "" {
			continue
		}
		l, ok := layers[m.ID]
		if !ok {
			l = &Layer{Ref: ref, ID: m.ID}
			layers[m.ID] = l
		}
		if l.Done() {
			continue
		}
		l.Status = m.Status
		if m.Progress != nil {
			l.Current, l.Total = m.Progress.Current, m.Progress.Total
		}
		if l.Done() {
			if l.Sent() {
				p.Sent++
			} else {
				p.Found++
			}
		} else if !o.Live {
			continue
		}
		c := *l
		o.emit(Event{Kind: KindLayer, Msg: c.ID + ": " + c.Status, Layer: &c})
	}
}

// insecureRegistry says whether the engine talks to host over plain HTTP (or HTTPS
// without checking the certificate): named so in its config, or in one of its
// insecure networks (127.0.0.0/8 by default).
func insecureRegistry(cfg *registry.ServiceConfig, host string) bool {
	if cfg == nil {
		return false
	}
	if ic, ok := cfg.IndexConfigs[host]; ok && ic != nil {
		return !ic.Secure
	}
	name := host
	if h, _, err := net.SplitHostPort(host); err == nil {
		name = h
	}
	var ips []net.IP
	if ip := net.ParseIP(name); ip != nil {
		ips = []net.IP{ip}
	} else if found, err := net.LookupIP(name); err == nil {
		ips = found
	}
	for _, ip := range ips {
		addr, ok := netip.AddrFromSlice(ip)
		if !ok {
			continue
		}
		for _, n := range cfg.InsecureRegistryCIDRs {
			if n.Contains(addr.Unmap()) {
				return true
			}
		}
	}
	return false
}
