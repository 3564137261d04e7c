package compat

import (
	"encoding/json"
	"fmt"
	"regexp"
	"sort"
	"strings"
)

// A difference is allowed when its field matches one of these patterns (see match;
// e.g. "NetworkSettings.Networks.*.IPAddress"), for the
// reason given. cosmetic: what the engine assigns at run time, or what names the run;
// nothing a user of the container could tell apart.
var cosmetic = []allowed{
	{"Id", "assigned by the engine", ""},
	{"Created", "time of creation", ""},
	{"State", "run-time state (pid, times, health log)", ""},
	{"State.*", "run-time state (pid, times, health log)", ""},
	{"State.Health.*", "run-time state (health probes run at their own times)", ""},
	{"State.Health.Log*", "health probe times and output", ""},
	{"GraphDriver.*", "the engine's layer folders of the container", ""},
	{"NetworkSettings.SandboxID", "assigned by the engine", ""},
	{"NetworkSettings.SandboxKey", "assigned by the engine", ""},
	{"NetworkSettings.Ports.*", "published ports are random (127.0.0.1::port): both run at once", ""},
	{"NetworkSettings.Ports.*.HostPort", "published ports are random (127.0.0.1::port): both run at once", ""},
	{"NetworkSettings.Networks.*.NetworkID", "assigned by the engine", ""},
	{"NetworkSettings.Networks.*.EndpointID", "assigned by the engine", ""},
	{"NetworkSettings.Networks.*.Gateway", "assigned from each network's own subnet", ""},
	{"NetworkSettings.Networks.*.IPAddress", "assigned from each network's own subnet", ""},
	{"NetworkSettings.Networks.*.MacAddress", "assigned by the engine", ""},
	{"NetworkSettings.Networks.*.IPPrefixLen", "each network's own subnet", ""},
	{"NetworkSettings.Gateway", "assigned from the default bridge's subnet", ""},
	{"NetworkSettings.IPAddress", "assigned from the default bridge's subnet", ""},
	{"NetworkSettings.MacAddress", "assigned by the engine", ""},
	{"NetworkSettings.Bridge", "engine detail", ""},
	{"Mounts[*].Name", "anonymous volumes have random names", ""},
	{"Mounts[*].Source", "anonymous volumes have random names", ""},
	{"ExecIDs", "health probes run as execs: which one runs at the moment of inspect", ""},
	{"ExecIDs[*]", "health probes run as execs: which one runs at the moment of inspect", ""},
	// networks
	{"IPAM.Config[*].Subnet", "each network gets a free subnet", ""},
	{"IPAM.Config[*].Gateway", "each network gets a free subnet", ""},
	{"Containers", "the network's containers, compared as containers", ""},
	{"Containers.*", "the network's containers, compared as containers", ""},
	{"Mountpoint", "the volume's folder, named after the volume", ""},
	{"CreatedAt", "time of creation", ""},
	{"Labels.com.docker.compose.config-hash", "networks and volumes: the hash covers the name, which holds each run's project name; checkHashes compares each tool's label with the hash of its own project", ""},
	{pattern: "Config.Labels.com.docker.compose.config-hash", object: "sidecar/sidecar-1",
		reason: "network_mode service:app is hashed as container:<app's ID>, another container in each run; checkHashes compares each tool's label with its own project's hash, and neither tool recreates the other's"},
}

// known are the differences ship has today that are NOT cosmetic: each is a fix to make
// (issue 11), listed so the test guards everything else meanwhile. Remove an entry when
// its fix lands; the test fails on a known entry that no longer differs.
var known = []allowed{}

// knownRefusals are the corpus files ship refuses and docker compose runs, with what
// ship refuses (issue 11): a fix to make each, as the known differences.
var knownRefusals = map[string]string{}

type allowed struct {
	pattern, reason string
	// object, when set, limits the entry to the objects it matches (same syntax): a
	// corpus folder and the object's key, "sidecar/sidecar-1".
	object string
}

// match finds the entry of list whose pattern matches field: "*" matches any run of
// characters (dots too), "[*]" is any array index.
func match(list []allowed, object, field string) (allowed, bool) {
	f := indexless(field)
	for _, a := range list {
		if glob(a.pattern, f) && (a.object == "" || glob(a.object, object)) {
			return a, true
		}
	}
	return allowed{}, false
}

func glob(pattern, s string) bool {
	parts := strings.Split(pattern, "[*]")
	for i, p := range parts {
		parts[i] = strings.ReplaceAll(regexp.QuoteMeta(p), `\*`, ".*")
	}
	return regexp.MustCompile("^" + strings.Join(parts, `\[\*\]`) + "$").MatchString(s)
}

// ordered are the arrays whose order means something; every other array is compared as
// a set (Env, Binds, Mounts, CapAdd, Aliases... each tool writes them in its own order).
var ordered = map[string]bool{
	"Config.Cmd": true, "Config.Entrypoint": true, "Config.Healthcheck.Test": true,
	"Config.Shell": true, "Args": true, "Path": true,
}

// flatten writes v's scalar leaves into out under their path: "Config.Labels.x",
// "Config.Cmd[0]". Empty maps and arrays are leaves ({} and []), null is null. The
// elements of an unordered array are keyed by what they are, not by their place: a
// string by itself, an object by its Target or Destination ("Mounts[/data].Type").
func flatten(prefix string, v any, out map[string]string) {
	switch v := v.(type) {
	case map[string]any:
		if len(v) == 0 {
			out[prefix] = "{}"
			return
		}
		for k, e := range v {
			p := k
			if prefix != "" {
				p = prefix + "." + k
			}
			flatten(p, e, out)
		}
	case []any:
		if len(v) == 0 {
			out[prefix] = "[]"
			return
		}
		for i, e := range v {
			flatten(fmt.Sprintf("%s[%s]", prefix, elementKey(prefix, i, e)), e, out)
		}
	default:
		out[prefix] = jsonText(v)
	}
}

func elementKey(prefix string, i int, e any) string {
	if !ordered[indexless(prefix)] {
		switch e := e.(type) {
		case string:
			return e
		case map[string]any:
			for _, k := range []string{"Target", "Destination", "Name"} {
				if s, ok := e[k].(string); ok {
					return s
				}
			}
		}
	}
	return fmt.Sprint(i)
}

func jsonText(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

var index = regexp.MustCompile(`\[[^\]]*\]`)

// indexless is a field with its array indexes as [*]: the name differences are counted by.
func indexless(field string) string { return index.ReplaceAllString(field, "[*]") }

// normalizer rewrites what names one run (its project name, its objects' IDs) into
// placeholders, so two runs of one file compare equal where they do the same.
type normalizer struct{ r *strings.Replacer }

func newNormalizer(project string, objs ...[]object) normalizer {
	var pairs []string
	for _, list := range objs {
		for _, o := range list {
			name := strings.ReplaceAll(o.Name, project, "{project}")
			pairs = append(pairs, o.ID, "{id:"+name+"}")
			if len(o.ID) >= 12 {
				pairs = append(pairs, o.ID[:12], "{id12:"+name+"}")
			}
		}
	}
	// Longest first: an ID before its 12-character prefix.
	pairs = append(pairs, project, "{project}")
	return normalizer{strings.NewReplacer(pairs...)}
}

func (n normalizer) fields(o object) map[string]string {
	out := map[string]string{}
	flatten("", n.value(o.Inspect), out)
	// An exposed port without a protocol: compose sends it as written ("9000"), ship's
	// typed API client as "9000/tcp"; the engine reads both as 9000/tcp.
	for k, v := range out {
		if port, ok := strings.CutPrefix(k, "Config.ExposedPorts."); ok && !strings.Contains(port, "/") {
			delete(out, k)
			out[k+"/tcp"] = v
		}
	}
	// compose writes depends_on in Go map order, a different one each time.
	if v, ok := out[dependsOnField]; ok {
		var s string
		_ = json.Unmarshal([]byte(v), &s)
		deps := strings.Split(s, ",")
		sort.Strings(deps)
		out[dependsOnField] = jsonText(strings.Join(deps, ","))
	}
	return out
}

const dependsOnField = "Config.Labels.com.docker.compose.depends_on"

// value is v with the run's names replaced, in keys and strings.
func (n normalizer) value(v any) any {
	switch v := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(v))
		for k, e := range v {
			m[n.r.Replace(k)] = n.value(e)
		}
		return m
	case []any:
		l := make([]any, len(v))
		for i, e := range v {
			l[i] = n.value(e)
		}
		return l
	case string:
		return n.r.Replace(v)
	}
	return v
}

// diff is one field of one object that differs between the two runs.
type diff struct {
	field, ship, compose string
}

// compare lists the fields that differ between ship's object and compose's.
func compare(n1, n2 normalizer, ship, comp object) (int, []diff) {
	a, b := n1.fields(ship), n2.fields(comp)
	keys := map[string]bool{}
	for k := range a {
		keys[k] = true
	}
	for k := range b {
		keys[k] = true
	}
	var out []diff
	for k := range keys {
		va, oka := a[k]
		vb, okb := b[k]
		if !oka {
			va = "(absent)"
		}
		if !okb {
			vb = "(absent)"
		}
		if va != vb {
			out = append(out, diff{field: k, ship: va, compose: vb})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].field < out[j].field })
	return len(keys), out
}
