package compose

import (
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"
)

// ShipKey is the per-service compose extension that holds ship's settings.
const ShipKey = "x-ship"

// JobPreDeploy runs to completion with the new image before any switch.
const JobPreDeploy = "pre-deploy"

// Ship is a service's `x-ship` settings.
type Ship struct {
	Port   int           // container port shipd routes to (the first route's)
	Listen string        // public plain HTTP address shipd serves, e.g. ":80" (the first route's; "" for an HTTPS-only route)
	Health string        // HTTP health path (see Project.HealthPort); "" means the image's HEALTHCHECK, else "running"
	Drain  time.Duration // how long in-flight requests may finish on the old container
	Job    string        // "pre-deploy": a one-off job, not a long-running service
	Host   []string      // the first route's host names (exact, or "*.example.com")
	Path   []string      // the first route's path prefixes
	TLS    TLS           // the first route's HTTPS
	// Routes are every routed port of the service: the top-level port first (when
	// there is one), then the entries of x-ship.routes.
	Routes []Route
}

// Route is one routed port of a service: requests to its listen addresses, for its hosts
// and paths, go to Port of the service's container.
type Route struct {
	Port int // container port
	// Listen is the plain HTTP address (":80"; with TLS it redirects to HTTPS and
	// answers ACME HTTP-01 challenges); "" for a route served over HTTPS only.
	Listen string
	// ListenTLS is the HTTPS address (":443" with TLS by default); "" without TLS.
	ListenTLS string
	Host      []string // names, exact or "*.example.com"; none: every name (a default route)
	Path      []string // prefixes; none: "/"
	TLS       TLS
}

// TLS is a route's HTTPS: certificates from ACME (Auto) or the app's own files.
type TLS struct {
	Auto      bool   // tls: true
	Cert, Key string // tls: {cert: FILE, key: FILE}
}

// On reports whether the route is served over HTTPS.
func (t TLS) On() bool { return t.Auto || t.Cert != "" }

// Addresses lists the public addresses shipd serves the service on, over every route
// ("" when it has none), e.g. ":80 and :443".
func (s Ship) Addresses() string {
	var out []string
	for _, r := range s.Routes {
		for _, a := range []string{r.Listen, r.ListenTLS} {
			if a != "" && !slices.Contains(out, a) {
				out = append(out, a)
			}
		}
	}
	return strings.Join(out, " and ")
}

// Routed reports whether shipd routes traffic to the service.
func (s Ship) Routed() bool { return s.Port != 0 }

var (
	shipKeys  = []string{"port", "listen", "health", "drain", "job", "host", "path", "tls", "routes"}
	routeKeys = []string{"port", "listen", "host", "path", "tls"}
)

// parseShip turns the raw extension value into settings, listing every problem.
func parseShip(raw any) (Ship, []string) {
	var s Ship
	if raw == nil {
		return s, nil
	}
	m, ok := raw.(map[string]any)
	if !ok {
		return s, []string{fmt.Sprintf("must be a mapping of %s, not %T", strings.Join(shipKeys, ", "), raw)}
	}
	var problems []string
	bad := func(format string, a ...any) { problems = append(problems, fmt.Sprintf(format, a...)) }
	top := map[string]any{}
	var routes any
	for _, k := range sortedKeys(m) {
		v := m[k]
		switch k {
		case "port", "listen", "host", "path", "tls":
			top[k] = v
		case "routes":
			routes = v
		case "health":
			str, _ := v.(string)
			if !strings.HasPrefix(str, "/") {
				bad("health %q is not an HTTP path; write e.g. health: /up", fmt.Sprint(v))
				continue
			}
			s.Health = str
		case "drain":
			d, err := toDuration(v)
			if err != nil || d < 0 {
				bad("drain %v is not a duration; write e.g. drain: 30s", v)
				continue
			}
			s.Drain = d
		case "job":
			str, _ := v.(string)
			if str != JobPreDeploy {
				bad("job %q is not a job kind; write job: %s", fmt.Sprint(v), JobPreDeploy)
				continue
			}
			s.Job = str
		default:
			bad("unknown key %q; the keys are %s", k, strings.Join(shipKeys, ", "))
		}
	}
	if s.Job != "" && (len(top) > 0 || routes != nil) {
		bad("a job is not routed; remove port, listen, host, path, tls and routes, or remove job")
		top, routes = nil, nil
	}
	if len(top) > 0 {
		r, errs := parseRoute(top, "")
		problems = append(problems, errs...)
		s.Routes = append(s.Routes, r)
	}
	if routes != nil {
		rs, errs := parseRoutes(routes)
		problems = append(problems, errs...)
		s.Routes = append(s.Routes, rs...)
	}
	// A route without a port (a problem already) is not routed.
	s.Routes = slices.DeleteFunc(s.Routes, func(r Route) bool { return r.Port == 0 })
	if len(s.Routes) > 0 {
		r := s.Routes[0]
		s.Port, s.Listen, s.Host, s.Path, s.TLS = r.Port, r.Listen, r.Host, r.Path, r.TLS
	}
	return s, problems
}

func listenPort(addr string) (int, error) {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return 0, err
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		return 0, fmt.Errorf("port %q is not a number from 1 to 65535", port)
	}
	return n, nil
}

func toInt(v any) (int, error) {
	switch v := v.(type) {
	case int:
		return v, nil
	case int64:
		return int(v), nil
	case uint64:
		return int(v), nil
	case float64:
		if v == float64(int(v)) {
			return int(v), nil
		}
	case string:
		return strconv.Atoi(v)
	}
	return 0, fmt.Errorf("not a whole number")
}

func toDuration(v any) (time.Duration, error) {
	switch v := v.(type) {
	case string:
		return time.ParseDuration(v)
	case int:
		return time.Duration(v) * time.Second, nil
	}
	return 0, fmt.Errorf("not a duration")
}
