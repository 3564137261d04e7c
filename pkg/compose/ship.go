package compose

import (
	"fmt"
	"net"
	"sort"
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
	Port   int           // container port shipd routes to
	Listen string        // public address shipd serves, e.g. ":80"
	Health string        // HTTP health path; "" means the image's HEALTHCHECK, else "running"
	Drain  time.Duration // how long in-flight requests may finish on the old container
	Job    string        // "pre-deploy": a one-off job, not a long-running service
}

// Routed reports whether shipd routes traffic to the service.
func (s Ship) Routed() bool { return s.Port != 0 }

var shipKeys = []string{"port", "listen", "health", "drain", "job"}

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
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := m[k]
		switch k {
		case "port":
			n, err := toInt(v)
			if err != nil || n < 1 || n > 65535 {
				bad("port %v is not a port number; write the container port, e.g. port: 8080", v)
				continue
			}
			s.Port = n
		case "listen":
			str, _ := v.(string)
			if _, err := listenPort(str); err != nil {
				bad("listen %q: %v; write an address like \":80\" or \"127.0.0.1:8080\"", fmt.Sprint(v), err)
				continue
			}
			s.Listen = str
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
	if s.Job != "" && (s.Port != 0 || s.Listen != "") {
		bad("a job is not routed; remove port and listen, or remove job")
	}
	if (s.Port != 0) != (s.Listen != "") {
		bad("port and listen go together: port is the container's port, listen the address shipd serves")
	}
	if s.Health != "" && s.Port == 0 {
		bad("health is checked on the routed port; add port and listen")
	}
	return s, problems
}

// checkShip finds problems between services: two services on one listen address.
func checkShip(p *Project) []string {
	var problems []string
	byPort := map[int]string{}
	for _, name := range p.ServicesInOrder() {
		s := p.Ship[name]
		if s.Listen == "" {
			continue
		}
		port, _ := listenPort(s.Listen)
		if other, ok := byPort[port]; ok {
			problems = append(problems, fmt.Sprintf("service %q: %s.listen %q: port %d is already served for service %q", name, ShipKey, s.Listen, port, other))
			continue
		}
		byPort[port] = name
	}
	return problems
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
