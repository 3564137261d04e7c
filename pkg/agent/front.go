package agent

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/shipdeploy/ship/pkg/proxy"
)

// The front door: a route with host names or TLS (x-ship host, tls) has no listener of
// its own. It is bound (proxy.Router.Set) on shared listeners, one per address, each
// with its Router: ":80" and ":443" by default, shared by every app. A plain door of a
// TLS route redirects to HTTPS and answers ACME's HTTP-01 challenges; a TLS door gets
// its certificates from the certs.Manager (custom ones, else ACME) and speaks HTTP/2.
// Two apps claiming one host and path on a door are refused before anything is
// touched (Router.Check in checkRelease). A door's socket is kept like a route's
// (systemd's store, handover), so that it outlives a restart.

// routeSpec is where and for what a routed service is served: its own listener on
// Listen, or bindings on the front door.
type routeSpec struct {
	Listen, ListenTLS string
	Hosts, Paths      []string
	TLS               bool
	// Cert and Key are the custom certificate's files (absolute); "" for ACME.
	Cert, Key string
}

// front reports whether the route is served through the front door.
func (s routeSpec) front() bool { return len(s.Hosts) > 0 || s.TLS }

// String names the addresses, for messages: ":80", ":80 and :443".
func (s routeSpec) String() string {
	var out []string
	for _, a := range []string{s.Listen, s.ListenTLS} {
		if a != "" {
			out = append(out, a)
		}
	}
	return strings.Join(out, " and ")
}

// sameBinding reports whether two specs serve the same addresses, names and paths (the
// certificate files may differ: they are loaded again at each deploy).
func (s routeSpec) sameBinding(o routeSpec) bool {
	return s.Listen == o.Listen && s.ListenTLS == o.ListenTLS && s.TLS == o.TLS &&
		slices.Equal(s.Hosts, o.Hosts) && slices.Equal(s.Paths, o.Paths)
}

// doors lists the route's front-door addresses, and whether each is HTTPS.
func (s routeSpec) doors() []doorAddr {
	var out []doorAddr
	if s.Listen != "" {
		out = append(out, doorAddr{addr: s.Listen, https: false})
	}
	if s.ListenTLS != "" {
		out = append(out, doorAddr{addr: s.ListenTLS, https: true})
	}
	return out
}

type doorAddr struct {
	addr  string
	https bool
}

func portOf(addr string) int {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(p)
	return n
}

// stateSpec is the route a state entry records.
func stateSpec(rs *RouteState) routeSpec {
	return routeSpec{Listen: rs.Listen, ListenTLS: rs.ListenTLS, Hosts: rs.Hosts, Paths: rs.Paths, TLS: rs.TLS, Cert: rs.Cert, Key: rs.Key}
}

// binding is the Router binding of a route.
func (s routeSpec) binding(owner string) proxy.Binding {
	return proxy.Binding{Owner: owner, Hosts: s.Hosts, Paths: s.Paths, TLS: s.TLS, HTTPSPort: portOf(s.ListenTLS)}
}

// door is one shared listener and its Router.
type door struct {
	addr   string
	https  bool
	router *proxy.Router
	l      *proxy.Listener
}

// openDoor returns the door on d.addr, opening it (listener bound at start, inherited,
// or new) when there is none. A door serves plain HTTP or HTTPS, not both.
func (a *agent) openDoor(d doorAddr) (*door, error) {
	a.doorMu.Lock()
	defer a.doorMu.Unlock()
	return a.openDoorLocked(d)
}

// openDoorLocked is openDoor with a.doorMu held.
func (a *agent) openDoorLocked(d doorAddr) (*door, error) {
	if dr := a.doors[d.addr]; dr != nil {
		if dr.https != d.https {
			return nil, fmt.Errorf("%s is served over %s, not %s", d.addr, scheme(dr.https), scheme(d.https))
		}
		return dr, nil
	}
	ln, err := a.listen(d.addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", d.addr, err)
	}
	if err := a.notify.storeListener(ln); err != nil {
		a.log.Warn("keep the listening socket in systemd's store (a restart may refuse connections)", "listen", d.addr, "err", err)
	}
	log := a.log.With("door", d.addr)
	ro := proxy.RouterOptions{Logger: log}
	var lo proxy.ListenerOptions
	if d.https {
		lo.TLS = a.certs.TLSConfig()
	} else {
		// Each TLS binding names the port its redirect goes to.
		ro.Challenge = a.certs.HTTPHandler()
	}
	lo.Logger = log
	dr := &door{addr: d.addr, https: d.https, router: proxy.NewRouter(ro)}
	dr.l = proxy.NewListener(ln, dr.router, lo)
	a.doors[d.addr] = dr
	if !a.holdDoors {
		a.serveDoor(dr)
	}
	return dr, nil
}

// serveDoor starts accepting connections on a door.
func (a *agent) serveDoor(dr *door) {
	go func() {
		if err := dr.l.Serve(); err != nil {
			a.log.Error("front door stopped serving", "listen", dr.addr, "err", err)
		}
	}()
	a.log.Info("front door open", "listen", dr.addr, "https", dr.https)
}

// holdFront makes the doors opened from now on wait (connections in the backlog)
// until releaseFront: at start, a door serves once every route of the state is bound
// on it, so that none answers 404 for a host it serves a moment later.
func (a *agent) holdFront() {
	a.doorMu.Lock()
	a.holdDoors = true
	a.doorMu.Unlock()
}

// releaseFront serves the doors held by holdFront.
func (a *agent) releaseFront() {
	a.doorMu.Lock()
	defer a.doorMu.Unlock()
	if !a.holdDoors {
		return
	}
	a.holdDoors = false
	for _, dr := range a.doors {
		a.serveDoor(dr)
	}
}

func scheme(https bool) string {
	if https {
		return "HTTPS"
	}
	return "plain HTTP"
}

// door returns the open door on addr, or nil.
func (a *agent) door(addr string) *door {
	a.doorMu.Lock()
	defer a.doorMu.Unlock()
	return a.doors[addr]
}

// allDoors returns the open doors, by address.
func (a *agent) allDoors() []*door {
	a.doorMu.Lock()
	defer a.doorMu.Unlock()
	out := make([]*door, 0, len(a.doors))
	for _, d := range a.doors {
		out = append(out, d)
	}
	slices.SortFunc(out, func(x, y *door) int { return strings.Compare(x.addr, y.addr) })
	return out
}

// tlsHost is the certificates' policy: a name a TLS route serves.
func (a *agent) tlsHost(host string) bool {
	for _, d := range a.allDoors() {
		if d.https && d.router.TLSHost(host) {
			return true
		}
	}
	return false
}

// bindFront binds a route on its doors, replacing the binding of the service's
// previous route there.
func (a *agent) bindFront(lr *liveRoute) error {
	key := lr.key()
	// Under doorMu: a door left without bindings is closed under it too.
	a.doorMu.Lock()
	defer a.doorMu.Unlock()
	for _, d := range lr.spec.doors() {
		dr, err := a.openDoorLocked(d)
		if err != nil {
			return fmt.Errorf("route %s: %w", key, err)
		}
		if err := dr.router.Set(lr.spec.binding(key), lr.route); err != nil {
			return err
		}
	}
	return nil
}

// unbindFront removes a route from the doors the service's current route does not
// use (that one's binding replaced it on the others), then drains it.
func (a *agent) unbindFront(ctx context.Context, lr *liveRoute, cur *liveRoute) {
	key := lr.key()
	keep := map[string]bool{}
	if cur != nil && cur != lr && cur.spec.front() {
		for _, d := range cur.spec.doors() {
			keep[d.addr] = true
		}
	}
	a.doorMu.Lock()
	for _, d := range lr.spec.doors() {
		if dr := a.doors[d.addr]; dr != nil && !keep[d.addr] {
			dr.router.Remove(key)
		}
	}
	a.doorMu.Unlock()
	a.closeIdleDoors(ctx, lr.spec)
	if err := lr.route.Shutdown(ctx); err != nil {
		a.log.Warn("drain route", "app", lr.app, "service", lr.service, "err", err)
	}
}

// closeIdleDoors closes the doors of spec that no route is bound on: the address is
// free for another use. Not at start, when routes are still being bound.
func (a *agent) closeIdleDoors(ctx context.Context, spec routeSpec) {
	var closing []*door
	a.doorMu.Lock()
	for _, d := range spec.doors() {
		if dr := a.doors[d.addr]; dr != nil && len(dr.router.Bindings()) == 0 && !a.holdDoors {
			delete(a.doors, d.addr)
			closing = append(closing, dr)
		}
	}
	a.doorMu.Unlock()
	for _, dr := range closing {
		a.log.Info("closing a front door no route uses", "listen", dr.addr)
		if err := a.notify.forgetListener(fdName(dr.l.Socket())); err != nil {
			a.log.Warn("remove a socket from systemd's store", "listen", dr.addr, "err", err)
		}
		if err := dr.l.Shutdown(ctx); err != nil {
			a.log.Warn("close a front door", "listen", dr.addr, "err", err)
		}
	}
}

// frontConflicts lists why service's route cannot be served: another app's claim of
// one of its hosts and paths, an address another app serves with a listener of its own
// or over the other scheme.
func (a *agent) frontConflicts(app, service string, idx int, spec routeSpec) []string {
	var problems []string
	key := routeKeyAt(app, service, idx)
	if !spec.front() {
		for _, dr := range a.allDoors() {
			if overlaps(dr.addr, spec.Listen) {
				if owners := otherOwners(dr.router, app); len(owners) > 0 {
					problems = append(problems, fmt.Sprintf("service %q: listen %s is the front door of %s: give the service a host (x-ship.host) to share it", service, spec.Listen, strings.Join(owners, ", ")))
				}
			}
		}
		return problems
	}
	for _, d := range spec.doors() {
		if other := a.listenConflict(app, service, d.addr); other != "" {
			problems = append(problems, fmt.Sprintf("service %q: listen %s is already served by %s, which has no host: give it a host (x-ship.host) so that both can share it", service, d.addr, other))
			continue
		}
		dr := a.door(d.addr)
		if dr == nil {
			continue
		}
		if dr.https != d.https {
			if owners := otherOwners(dr.router, app); len(owners) > 0 {
				problems = append(problems, fmt.Sprintf("service %q: %s is served over %s for %s", service, d.addr, scheme(dr.https), strings.Join(owners, ", ")))
			}
			continue
		}
		if err := dr.router.Check(spec.binding(key)); err != nil {
			problems = append(problems, fmt.Sprintf("service %q: on %s: %v", service, d.addr, err))
		}
	}
	return problems
}

// otherOwners lists the bindings of a router that belong to other apps.
func otherOwners(rt *proxy.Router, app string) []string {
	var out []string
	for _, b := range rt.Bindings() {
		if !strings.HasPrefix(b.Owner, app+"/") {
			out = append(out, b.Owner)
		}
	}
	return out
}

// overlaps reports whether two listen addresses share a port and may share an address.
func overlaps(x, y string) bool {
	a, errA := net.ResolveTCPAddr("tcp", x)
	b, errB := net.ResolveTCPAddr("tcp", y)
	if errA != nil || errB != nil || a.Port != b.Port {
		return false
	}
	return len(a.IP) == 0 || a.IP.IsUnspecified() || len(b.IP) == 0 || b.IP.IsUnspecified() || a.IP.Equal(b.IP)
}

// doorSockets are the doors' listening sockets (for a handover and systemd's store).
func (a *agent) doorSockets() []net.Listener {
	var out []net.Listener
	for _, d := range a.allDoors() {
		out = append(out, d.l.Socket())
	}
	return out
}

// shutdownFront stops the doors (every accepted connection answered), then drains the
// routes served through them.
func (a *agent) shutdownFront(ctx context.Context) error {
	var errs []error
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, d := range a.allDoors() {
		wg.Go(func() {
			if err := d.l.Shutdown(ctx); err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("front door %s: %w", d.addr, err))
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	a.mu.Lock()
	var live []*liveRoute
	for _, lr := range a.routes {
		if lr.spec.front() {
			live = append(live, lr)
		}
	}
	a.mu.Unlock()
	for _, lr := range live {
		wg.Go(func() { _ = lr.route.Shutdown(ctx) })
	}
	wg.Wait()
	if len(errs) > 0 {
		return fmt.Errorf("%v", errs)
	}
	return nil
}

// checkFront lists what is wrong with the front-door part of a state entry.
func checkFront(r *RouteState) []string {
	var problems []string
	if r.ListenTLS != "" {
		if err := checkListen(r.ListenTLS); err != nil {
			problems = append(problems, fmt.Sprintf("listen_tls %q: %v", r.ListenTLS, err))
		}
		if !r.TLS {
			problems = append(problems, "listen_tls without tls")
		}
	}
	for _, h := range r.Hosts {
		if _, err := proxy.NormalizeHost(h); err != nil {
			problems = append(problems, err.Error())
		}
	}
	for _, p := range r.Paths {
		if _, err := proxy.NormalizePath(p); err != nil {
			problems = append(problems, err.Error())
		}
	}
	for what, f := range map[string]string{"cert": r.Cert, "key": r.Key} {
		if f != "" && !isCleanPath(f) {
			problems = append(problems, fmt.Sprintf("%s %q is not a clean absolute path", what, f))
		}
	}
	if (r.Cert == "") != (r.Key == "") {
		problems = append(problems, "cert and key go together")
	}
	return problems
}

// checkCustomCert refuses, before anything changes, a custom certificate that cannot
// be served.
func checkCustomCert(service string, spec routeSpec) string {
	if spec.Cert == "" {
		return ""
	}
	c, err := tls.LoadX509KeyPair(spec.Cert, spec.Key)
	if err != nil {
		return fmt.Sprintf("service %q: x-ship.tls: the certificate %s and key %s cannot be used: %v", service, filepath.Base(spec.Cert), filepath.Base(spec.Key), err)
	}
	if len(c.Leaf.DNSNames) == 0 {
		return fmt.Sprintf("service %q: x-ship.tls: the certificate %s names no host (no DNS subject alternative name)", service, filepath.Base(spec.Cert))
	}
	return ""
}
