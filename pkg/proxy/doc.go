// Package proxy is shipd's reverse proxy: one Route per routed service (the x-ship port,
// listen and health of a compose service), each with its own listener and one live target,
// the address of the service's container on the project network.
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
// X-Forwarded-Host and X-Forwarded-Proto are set (replacing what the client sent, unless
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
package proxy
