// Package proxy is shipd's reverse proxy: one Route per routed service (the x-ship port,
// listen and health of a compose service) with one live target, the address of the
// service's container on the project network. A Route either has a listener of its own
// (NewRoute with a listener: how shipd serves today, one socket per routed service) or is
// served through a Router on shared Listeners (NewRoute with a nil listener), the front
// door below.
//
// A deploy follows kamal-proxy's pattern, in two calls as its load balancer's update.
// Route.Swap health-checks the new address outside any lock (HealthCheck: an HTTP GET of
// a path answering 2xx, or a TCP connect; every 1s, 5s per attempt, 30s in all by
// default). A target that never passes is never used and the error Is ErrUnhealthy; the
// old target keeps serving, untouched. A healthy target is swapped in under a short write
// lock; every request picks the live target when it arrives, so keep-alive client
// connections move to the new target at the swap. Swap returns the target it replaced
// (Replaced), so that the caller can record the switch the moment it happens; then
// Replaced.Drain drains it outside the lock: its in-flight requests finish there (they
// are counted per target) up to the drain timeout, after which its backend connections,
// which belong to a transport of its own, are closed. Route.Deploy does both. No request
// is lost in a swap: a request is either counted on the old target before the swap, and
// the drain waits for it, or it picks the new one.
//
// Requests pass through with httputil.ReverseProxy: HTTP/1.1 keep-alive on both sides,
// protocol upgrades (WebSockets), streaming bodies (responses without a length, and
// text/event-stream, are flushed as they come), the client's Host header. X-Forwarded-For,
// X-Forwarded-Host, X-Forwarded-Proto and X-Real-IP are set (replacing what the client sent, unless
// RouteOptions.TrustForwarded). A request before the first deploy gets 503; a target that
// cannot be reached or fails gets 502 (504 when it does not answer in time), with a short
// plain-text body. A request without a body whose connection to its target could not
// even be opened (so nothing was sent) is retried once on the live target if a deploy
// switched meanwhile, for instance when an old container was stopped early.
//
// Server holds the routes of one shipd by name and reports their Status. Inherit lets
// shipd take its listening sockets from systemd socket activation or from the shipd it
// replaces (StartSuccessor in the old process, Ready in the new one), so that a restart
// refuses no connection. A route should get its target (Deploy) before it serves, so
// that connections wait in the backlog rather than get a 503.
//
// # The front door: Router and Listener
//
// A Listener serves one socket, plain HTTP or HTTPS (ListenerOptions.TLS; HTTP/2 and
// HTTP/1.1 by ALPN), with one handler, and shuts down as a Route's listener does (every
// accepted connection answered). A Router is that handler for any number of apps: it
// holds Bindings (an owner such as "app/service", hosts, path prefixes, TLS) to Routes.
// One Router serves both of a server's listeners, :80 and :443.
//
//   - Lookup: the Host header without its port, lower case, without a trailing dot; an
//     exact name first (a map read), then the wildcard of its parent ("*.example.com"
//     serves one label below example.com, as a certificate wildcard does; a map read),
//     then the bindings without hosts (the default route). Among a host's bindings the
//     longest path prefix wins, matched by whole segments. The cost does not depend on
//     the number of hosts. The path is passed on unchanged. No binding: 404, or
//     RouterOptions.NotFound.
//   - Changes are copy-on-write: Set (add, or replace an owner's binding) and Remove
//     build a new table and store it atomically; a request uses one table from start to
//     end, and serving never waits for a change. Set refuses, changing nothing, a host
//     and path pair that another owner serves (ErrConflict, naming that owner); Check
//     asks the same question without changing anything, for refusing a deploy before
//     anything is uploaded.
//   - A TLS binding's hosts are HTTPS only: on plain HTTP the Router redirects (301 for
//     GET and HEAD, 308 otherwise, to the binding's HTTPSPort, else
//     RouterOptions.HTTPSPort) except ACME's challenge path, which
//     RouterOptions.Challenge answers.
//   - Each Route keeps its swap and drain (Route.Swap, Replaced.Drain) whatever serves
//     it: the Router hands the request to the Route, which picks its live target.
//
// shipd moves to it by opening a Router for the pair ":80" and ":443" (and one for
// each other listen address x-ship names), its Listeners through Inherited.Listen as
// today's routes do (so sockets survive restarts and handovers), creating each
// service's Route with a nil listener and binding it with Router.Set at the switch; a
// route no longer wanted is removed with Router.Remove and then shut down
// (Route.Shutdown drains it). Status.Listen is empty for such a route: the Router's
// listeners are reported beside them. A change rebuilds the table, in time linear in
// the number of bindings (about a millisecond for a thousand).
//
// # Certificates
//
// pkg/proxy/certs gives a TLS Listener its certificates (Manager.TLSConfig): custom
// ones an app brings, and ACME ones, allowed for the hosts of TLS bindings only
// (Manager.SetPolicy(router.TLSHost)), with HTTP-01 through the Router's Challenge
// (Manager.HTTPHandler) and TLS-ALPN-01 in the TLS handshake.
//
// ACME library: golang.org/x/crypto/acme/autocert, not github.com/caddyserver/certmagic.
// autocert is part of golang.org/x/crypto, which ship already uses and which the Go
// team maintains; it does what shipd needs now (HTTP-01 and TLS-ALPN-01, a cache
// interface we back with the state directory, renewal ahead of expiry, any ACME
// directory and contact) in a small API with no global state, and adds no module.
// certmagic does more: DNS-01 (and so wildcard certificates through a DNS provider),
// OCSP stapling, ACME renewal information, storage locking for clusters and better
// error reports; it brings about a dozen modules (zap, acmez, libdns, miekg/dns, ...)
// and package-level defaults. Its advantages are not needed for one server with
// HTTP-01; autocert's weak points are covered here: the CA's reason for a failed
// validation, which autocert drops, is read from the ACME responses (certs.IssueError),
// a name that failed is not retried at every handshake, and ACME renewal information
// (RFC 9773), which autocert does not read, is asked for by certs itself, so that a
// revoked certificate is replaced (certs/renewalinfo.go). If DNS-01 and wildcard
// certificates from ACME are wanted later, certmagic can replace autocert inside
// pkg/proxy/certs without changing its API.
package proxy
