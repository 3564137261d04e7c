package cli

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/shipdeploy/ship/pkg/agentapi"
	"github.com/shipdeploy/ship/pkg/deploy"
	"github.com/shipdeploy/ship/pkg/engine"
	"github.com/shipdeploy/ship/pkg/release"
)

func testStatus() []deploy.HostStatus {
	since := time.Date(2025, 3, 1, 12, 0, 0, 0, time.Local)
	return []deploy.HostStatus{
		{
			Host: "deploy@web1", Current: strings.Repeat("a", 40),
			Release: &release.Info{Subject: "Fix checkout", CurrentSince: since, Who: "alice@laptop", From: "git@example.com:shop.git"},
			Containers: []engine.Container{
				{Name: "shop-web-1", Service: "web", Image: "r/web:aaa", State: "running", Health: "healthy"},
				{Name: "shop-migrate-1", Service: "migrate", Image: "r/web:aaa", State: "exited", ExitCode: 0},
			},
			Lock:  &deploy.Holder{Who: "bob@ci", Command: "lock", Reason: "migration"},
			Agent: &agentapi.Status{Version: "shipd v1.2.3", Uptime: agentapi.Duration(time.Minute)},
		},
		{Host: "deploy@web2", Err: errors.New("dial tcp: connection refused")},
	}
}

func TestRenderStatus(t *testing.T) {
	io, out, _ := testIO("", false)
	g := &Globals{Factory: NewFactory(io)}
	p := newPrinter(g)
	for _, st := range testStatus() {
		renderStatus(g, p, "shop", st)
	}
	for _, want := range []string{
		`deploy@web1: aaaaaaaaaaaa "Fix checkout", since 2025-03-01 12:00:00 by alice@laptop from git@example.com:shop.git` + "\n",
		"\n  web      running (healthy)     r/web:aaa\n",
		"\n  migrate  exited (0)            r/web:aaa\n",
		"\n  locked by bob@ci (shipctl lock",
		"\n  shipd v1.2.3, up 1m0s: no routes for shop\n",
		"deploy@web2: cannot read it: dial tcp: connection refused\n",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}

	io, out, _ = testIO("", false)
	g = &Globals{Factory: NewFactory(io), JSON: true}
	p = newPrinter(g)
	for _, st := range testStatus() {
		renderStatus(g, p, "shop", st)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("want 2 events:\n%s", out)
	}
	var ev struct {
		Event, Host, Current, Who, Error string
		Containers                       []map[string]any
		Lock                             map[string]any
		Agent                            map[string]any
	}
	if err := json.Unmarshal([]byte(lines[0]), &ev); err != nil {
		t.Fatal(err)
	}
	if ev.Event != "status" || ev.Host != "deploy@web1" || ev.Who != "alice@laptop" || len(ev.Containers) != 2 || ev.Lock["who"] != "bob@ci" || ev.Agent["version"] != "shipd v1.2.3" {
		t.Errorf("event = %+v", ev)
	}
	if err := json.Unmarshal([]byte(lines[1]), &ev); err != nil || ev.Error != "dial tcp: connection refused" {
		t.Errorf("event = %+v, %v", ev, err)
	}
}

func TestStatusErr(t *testing.T) {
	up := func(target string) deploy.HostStatus {
		return deploy.HostStatus{Host: "deploy@web1", Agent: &agentapi.Status{Routes: []agentapi.Route{
			{App: "shop", Service: "web", Listen: ":80", Target: target},
			{App: "other", Service: "web", Listen: ":81"},
		}}}
	}
	for _, tc := range []struct {
		name  string
		hosts []deploy.HostStatus
		want  string
	}{
		{"all served", []deploy.HostStatus{up("10.0.0.2:8080")}, ""},
		{"a route without a container", []deploy.HostStatus{up("")}, "1 route(s) of shipd have no live container and answer 503"},
		{"a host unread", testStatus(), "1 of 2 host(s) could not be read"},
		{"drift", []deploy.HostStatus{{Host: "deploy@web1", Drift: []deploy.Drift{{Service: "web"}}}}, "on 1 of 1 host(s) the containers do not run the current release"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := statusErr("prod", "shop", tc.hosts)
			if (tc.want == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), tc.want) {
				t.Errorf("statusErr = %v, want %q", err, tc.want)
			}
		})
	}
}

// TestRenderStatusDrift: drift is shown under its host with the command that fixes
// it, in text and JSON.
func TestRenderStatusDrift(t *testing.T) {
	st := testStatus()[0]
	st.Drift = []deploy.Drift{{Service: "web", Container: "shop-web-1", Release: "bbb-12345678", Msg: "shop-web-1 runs another configuration of web than current release aaa"}}
	st.Fix = "shipctl rollback prod aaa (runs the current release again), or shipctl deploy prod"
	io, out, _ := testIO("", false)
	g := &Globals{Factory: NewFactory(io)}
	renderStatus(g, newPrinter(g), "shop", st)
	for _, want := range []string{
		"\n  drift: the containers do not run the current release:\n    shop-web-1 runs another configuration of web than current release aaa\n",
		"\n  to fix it: shipctl rollback prod aaa (runs the current release again), or shipctl deploy prod",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	io, out, _ = testIO("", false)
	g = &Globals{Factory: NewFactory(io), JSON: true}
	renderStatus(g, newPrinter(g), "shop", st)
	var ev struct {
		Drift []map[string]string
		Fix   string
	}
	if err := json.Unmarshal(out.Bytes(), &ev); err != nil || len(ev.Drift) != 1 || ev.Drift[0]["release"] != "bbb-12345678" || ev.Fix != st.Fix {
		t.Errorf("JSON = %s (%v)", out, err)
	}
}
