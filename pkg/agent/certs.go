package agent

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/shipdeploy/ship/pkg/agentapi"
	"github.com/shipdeploy/ship/pkg/event"
	"github.com/shipdeploy/ship/pkg/proxy/certs"
	"github.com/shipdeploy/ship/pkg/release"
)

// Certificates of the routes served over HTTPS: ACME's (tls: true), ordered at the
// deploy that first serves a name and kept in the certs folder beside the state file,
// so that a restart or a handover serves them without a new order; or the app's own
// (tls: {cert, key}), read from the release's folder at each deploy and at start.

// obtainTimeout bounds the wait for a certificate at a deploy: the deploy reports
// what the CA said, and the order goes on in the background if it is slow.
const obtainTimeout = 2 * time.Minute

// initFront readies the front door: no doors yet, and the certificate manager, which
// issues only for the names of TLS routes.
func (a *agent) initFront() error {
	a.custom, a.doors = map[string]bool{}, map[string]*door{}
	var err error
	if a.certs, err = newCerts(a.cfg, a.log); err != nil {
		return err
	}
	a.certs.SetPolicy(a.tlsHost)
	return nil
}

// newCerts makes shipd's certificate manager from shipd.yaml's acme keys.
func newCerts(cfg Config, log *slog.Logger) (*certs.Manager, error) {
	hc := &http.Client{Timeout: time.Minute}
	if cfg.ACME.Roots != "" {
		pem, err := os.ReadFile(cfg.ACME.Roots)
		if err != nil {
			return nil, fmt.Errorf("acme.roots: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("acme.roots: %s holds no PEM certificate", cfg.ACME.Roots)
		}
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.TLSClientConfig.RootCAs = pool
		hc.Transport = t
	}
	return certs.New(certs.Config{
		Dir: cfg.CertsDir(), Directory: cfg.ACME.Directory, Staging: cfg.ACME.Staging, Email: cfg.ACME.Email,
		HTTPClient: hc, Logger: log.With("part", "certs"),
	})
}

// syncCerts makes the certificates of app's routes (as the state records them) the ones
// served: custom ones loaded, those of routes gone removed, ACME ones obtained (a
// stored one is served as it is). Each outcome goes to report (nil: the log).
func (a *agent) syncCerts(ctx context.Context, app string, report func(level event.Level, service, msg string)) {
	if report == nil {
		report = func(level event.Level, service, msg string) {
			if level == agentapi.LevelInfo {
				a.log.Info(msg, "app", app, "service", service)
			} else {
				a.log.Warn(msg, "app", app, "service", service)
			}
		}
	}
	snap := a.store.snapshot()
	// Every route, by its owner on the doors ("app/service", "app/service#2").
	routes := map[string]*RouteState{}
	if st := snap.Apps[app]; st != nil {
		for service, sr := range st.Routes {
			if sr == nil {
				continue
			}
			for idx, rs := range sr.all() {
				routes[routeKeyAt(app, service, idx)] = rs
			}
		}
		a.syncAppCert(st, report)
	}
	owners := make([]string, 0, len(routes))
	for o := range routes {
		owners = append(owners, o)
	}
	sort.Strings(owners)
	a.customMu.Lock()
	for owner := range a.custom {
		if strings.HasPrefix(owner, app+"/") && owner != app+"/" && (routes[owner] == nil || routes[owner].Cert == "") {
			a.certs.RemoveCustom(owner)
			delete(a.custom, owner)
		}
	}
	a.customMu.Unlock()
	var wg sync.WaitGroup
	for _, owner := range owners {
		rs := routes[owner]
		service := rs.Service
		if !rs.TLS {
			continue
		}
		if rs.Cert != "" {
			if err := a.certs.SetCustom(owner, rs.Cert, rs.Key); err != nil {
				report(agentapi.LevelWarn, service, err.Error())
				continue
			}
			a.customMu.Lock()
			a.custom[owner] = true
			a.customMu.Unlock()
			report(agentapi.LevelInfo, service, "HTTPS with the app's own certificate ("+strings.Join(rs.Hosts, ", ")+")")
			continue
		}
		for _, host := range rs.Hosts {
			if strings.HasPrefix(host, "*.") {
				report(agentapi.LevelInfo, service, "certificate for "+host+": one per name, ordered at its first HTTPS request")
				continue
			}
			wg.Go(func() { report(a.obtain(ctx, host)) })
		}
	}
	wg.Wait()
}

// obtain gets host's certificate and says how it went.
func (a *agent) obtain(ctx context.Context, host string) (level event.Level, service, msg string) {
	octx, cancel := context.WithTimeout(ctx, obtainTimeout)
	defer cancel()
	start := time.Now()
	err := a.certs.Obtain(octx, host)
	var ie *certs.IssueError
	switch {
	case errors.As(err, &ie):
		return agentapi.LevelWarn, "", ie.Error()
	case err != nil:
		return agentapi.LevelWarn, "", fmt.Sprintf("certificate for %s: %v", host, err)
	}
	for _, s := range a.certs.Status() {
		if s.Host == host && !s.NotAfter.IsZero() {
			how := "stored"
			if !s.Issued.IsZero() && !s.Issued.Before(start) {
				how = "issued"
			}
			if s.Custom {
				how = "the app's own"
			}
			return agentapi.LevelInfo, "", fmt.Sprintf("certificate for %s: %s, valid until %s", host, how, s.NotAfter.UTC().Format(time.DateOnly))
		}
	}
	return agentapi.LevelInfo, "", "certificate for " + host + ": ready"
}

// certStatus is the status report's certificates.
func (a *agent) certStatus() []agentapi.Cert {
	var out []agentapi.Cert
	for _, s := range a.certs.Status() {
		out = append(out, agentapi.Cert{Host: s.Host, Custom: s.Custom, NotAfter: s.NotAfter, Error: s.Error})
	}
	return out
}

// syncAppCert serves the app's own certificate, uploaded with its current release
// (ship.yaml's environment tls: {cert, key}), or stops serving the one it had.
func (a *agent) syncAppCert(st *AppState, report func(level event.Level, service, msg string)) {
	owner := st.App + "/"
	a.customMu.Lock()
	had := a.custom[owner]
	a.customMu.Unlock()
	dir := newStore(st.Path).Layout.Release(st.Release)
	cert, key := filepath.Join(dir, release.TLSCertFile), filepath.Join(dir, release.TLSKeyFile)
	if _, err := os.Stat(cert); st.Release == "" || err != nil {
		if had {
			a.certs.RemoveCustom(owner)
			a.customMu.Lock()
			delete(a.custom, owner)
			a.customMu.Unlock()
		}
		return
	}
	if err := a.certs.SetCustom(owner, cert, key); err != nil {
		report(agentapi.LevelWarn, "", err.Error())
		return
	}
	a.customMu.Lock()
	a.custom[owner] = true
	a.customMu.Unlock()
	if !had {
		report(agentapi.LevelInfo, "", "serving the app's own certificate (environment tls) for the names it holds")
	}
}
