package agent_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// shipd starts and serves its API whatever its state file holds: an entry that is not
// valid is dropped, with its reason in the log, and no value of the state makes shipd
// write a file outside an app's folder (here: in its working directory).
func TestStartWithInvalidState(t *testing.T) {
	const cut = `"release":"v1","deploying":{"kind":"deploy","release":"v2","from":"v1","started":"2026-01-01T00:00:00Z"}`
	cases := []struct {
		name, state, reason string
	}{
		{"null app", `{"version":1,"apps":{"a":null}}`, "no entry"},
		{"null route", `{"version":1,"apps":{"a":{"app":"a","path":"/srv/a","routes":{"web":null}}}}`, `route "web": no entry`},
		{"relative path", `{"version":1,"apps":{"a":{"app":"a","path":".",` + cut + `}}}`, `path "." is not a clean absolute folder`},
		{"path with ..", `{"version":1,"apps":{"a":{"app":"a","path":"CWD/app/..",` + cut + `}}}`, "is not a clean absolute folder"},
		{"release that is a path", `{"version":1,"apps":{"a":{"app":"a","path":"/srv/a","release":"../../x","deploying":{"kind":"deploy","release":"../y","started":"2026-01-01T00:00:00Z"}}}}`, `release "../../x" is not a release name`},
		{"app name", `{"version":1,"apps":{"../a":{"app":"../a","path":"/srv/a"}}}`, "is not a compose project name"},
		{"name and key differ", `{"version":1,"apps":{"a":{"app":"b","path":"/srv/a"}}}`, `app "b" is filed under "a"`},
		{"listen address", `{"version":1,"apps":{"a":{"app":"a","path":"/srv/a","routes":{"web":{"service":"web","listen":"nowhere","port":8080,"network":"a_default"}}}}}`, `listen "nowhere"`},
		{"port", `{"version":1,"apps":{"a":{"app":"a","path":"/srv/a","routes":{"web":{"service":"web","listen":"127.0.0.1:1","port":70000,"network":"a_default"}}}}}`, "port 70000"},
		{"container ID", `{"version":1,"apps":{"a":{"app":"a","path":"/srv/a","routes":{"web":{"service":"web","listen":"127.0.0.1:1","port":8080,"network":"a_default","container":"../x"}}}}}`, `container "../x" is not a container ID`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := newDaemon(t)
			state := strings.ReplaceAll(c.state, "CWD", d.cwd)
			if err := os.MkdirAll(filepath.Dir(d.state), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(d.state, []byte(state), 0o600); err != nil {
				t.Fatal(err)
			}
			d.start(false)
			st := d.status()
			if len(st.Apps) != 0 || len(st.Routes) != 0 {
				t.Errorf("status: apps %+v, routes %+v; want none", st.Apps, st.Routes)
			}
			logs := d.logText()
			reason, _ := json.Marshal(c.reason) // as the JSON log writes it
			if !strings.Contains(logs, "state: entry dropped") || !strings.Contains(logs, strings.Trim(string(reason), `"`)) {
				t.Errorf("shipd's log does not say why the entry was dropped (%q)", c.reason)
			}
			if entries, _ := os.ReadDir(d.cwd); len(entries) != 0 {
				t.Errorf("shipd wrote %v in its working directory", entries)
			}
			if aside, _ := filepath.Glob(d.state + ".bad-*"); len(aside) != 1 {
				t.Errorf("the state as found is not kept aside: %v", aside)
			}
			d.stop(syscall.SIGTERM)
		})
	}
}

// After its state file was lost, or an app's entry in it, shipd routes the app again
// from what the host holds: its containers' compose labels and its current release.
func TestRoutesRebuiltFromTheHost(t *testing.T) {
	a := newApp(t)
	d := newDaemon(t)
	d.start(false)
	a.release("v1", nil, "")
	a.mustDeploy(d, "v1")
	a.release("v2", nil, "")
	a.mustDeploy(d, "v2")
	good, err := os.ReadFile(d.state)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name  string
		state func() []byte
	}{
		{"unreadable", func() []byte { return []byte(`{"version":1,"apps":{`) }},
		{"empty", func() []byte { return []byte(`{}`) }},
		{"an invalid entry", func() []byte {
			var s struct {
				Version int                       `json:"version"`
				Apps    map[string]map[string]any `json:"apps"`
			}
			if err := json.Unmarshal(good, &s); err != nil {
				t.Fatal(err)
			}
			s.Apps[a.name]["path"] = "relative/path"
			data, _ := json.Marshal(s)
			return data
		}},
		{"no state file", func() []byte { return nil }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d.stop(syscall.SIGTERM)
			if data := c.state(); data != nil {
				if err := os.WriteFile(d.state, data, 0o600); err != nil {
					t.Fatal(err)
				}
			} else if err := os.Remove(d.state); err != nil {
				t.Fatal(err)
			}
			// Without systemd's store: the listening socket went with the old shipd.
			logged := len(d.logText())
			d.start(false)
			if v := a.version(); v != "v2" {
				t.Errorf("version %q, want v2", v)
			}
			// The old containers drain and stop after the result.
			waitUntil(t, "only v2", time.Minute, func() error { return a.onlyVersion("v2") })
			if !strings.Contains(d.logText()[logged:], "rebuild: route") {
				t.Errorf("shipd's log does not say how it rebuilt the route")
			}
			app := d.stateFile().Apps[a.name]
			if app == nil || app.Release != "v2" || app.Path != a.path {
				t.Fatalf("state after the rebuild: %+v", app)
			}
			if r := app.Routes["web"]; r == nil || r.Listen != a.listen || r.Release != "v2" || r.Port != 8080 || r.Health != "/up" {
				t.Errorf("route after the rebuild: %+v", r)
			}
			// The next deploy goes on from the rebuilt state.
			a.mustDeploy(d, "v1")
			if v := a.version(); v != "v1" {
				t.Errorf("version %q after a deploy, want v1", v)
			}
			a.mustDeploy(d, "v2")
		})
	}
}
