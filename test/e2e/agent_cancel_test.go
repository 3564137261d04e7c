package e2e

import (
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestAgentCtrlCOutcomeUnknown (issue 9, item 8): Ctrl-C while shipd swaps a release in
// cannot stop shipd, which carries the deploy on. shipctl did not see how it ended, so
// it says the outcome is unknown and still running on the host, with the command that
// shows it (exit 130, result "unknown" in --json), and never "failed; previous release
// kept". shipd then ends the deploy: the new release is current and served.
func TestAgentCtrlCOutcomeUnknown(t *testing.T) {
	t.Parallel()
	s := newAgentSite(t)
	shaA := s.version("v1")
	shaSlow := s.version("v2", `SLOW_START: "2s"`)
	d := startShipd(t)
	s.env = append(s.env, "SHIP_AGENT_SOCKET="+d.sock)
	s.deploy(0, "--sha", shaA, "--untested")

	p := start(t, s.dir, s.env, "deploy", "e2e", "--sha", shaSlow, "--untested", "--json")
	// shipd has started the new container and checks its health: a change under way.
	p.waitFor(t, `"event":"health"`, 2*time.Minute)
	if err := p.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	r := p.wait(t)
	out := r.stdout + r.stderr
	if r.code != 130 {
		t.Errorf("Ctrl-C of a deploy shipd carries on: want exit 130\n%s", r)
	}
	for _, bad := range []string{"previous release kept", "runs its previous release", `"result":"failed"`} {
		if strings.Contains(out, bad) {
			t.Errorf("shipctl reported an outcome it did not see (%q):\n%s", bad, r)
		}
	}
	for _, want := range []string{"unknown, still running on the host", "shipctl agent status e2e"} {
		if !strings.Contains(out, want) {
			t.Errorf("the output lacks %q:\n%s", want, r)
		}
	}
	res := lastEvent(t, r.stdout, "deploy_result")
	hosts, _ := res["hosts"].([]any)
	if len(hosts) != 1 {
		t.Fatalf("deploy_result: %v", res)
	}
	if h, _ := hosts[0].(map[string]any); h["result"] != "unknown" {
		t.Errorf("deploy_result's host result %v, want unknown", h["result"])
	}

	// shipd went on: once it is done, the release is current and served, and the lock
	// shipctl held is free (a new deploy is not refused by it).
	deadline := time.Now().Add(2 * time.Minute)
	for s.current() != shaSlow && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
	}
	if cur := s.current(); cur != shaSlow {
		t.Fatalf("shipd did not carry the deploy on: current %s, want %s", short(cur), short(shaSlow))
	}
	if v := s.served(); v != "v2" {
		t.Errorf("served %s after shipd ended the deploy, want v2", v)
	}
	r = s.run("agent", "status", "e2e")
	if r.code != 0 || !strings.Contains(r.stdout, "release "+short(shaSlow)) {
		t.Errorf("agent status after shipd ended the deploy:\n%s", r)
	}
	s.deploy(0, "--sha", shaA, "--untested")
}
