package hosts

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/shipdeploy/ship/test/testhost"
)

// shipdLines are shipd's own JSON log lines among journal entries.
func shipdLines(entries []map[string]any) []map[string]any {
	var lines []map[string]any
	for _, e := range entries {
		msg, _ := e["MESSAGE"].(string)
		var line map[string]any
		if json.Unmarshal([]byte(msg), &line) == nil && line["msg"] != nil {
			line["PRIORITY"] = e["PRIORITY"]
			lines = append(lines, line)
		}
	}
	return lines
}

// TestIssue14Defects: each defect that the systemd hosts found (issue 14), asserted
// fixed on one host; the reboot's is TestShipdOnAHost's last subtest. The subtests run
// in order, on one host.
func TestIssue14Defects(t *testing.T) {
	began := time.Now()
	c := testhost.Start(t, 1)
	h := c.Hosts[0]
	h.InstallLoadgen(t, loadgen)
	s := newSite(t, c, siteOptions{restart: "unless-stopped"})
	u := unit{h}
	v1 := s.version("v1")
	bad := s.version("v2", `FAIL_HEALTH: "1"`)

	t.Run("agent install as a non-root user says what it needs", func(t *testing.T) {
		r := s.run("agent", "install", envName)
		if r.code == 0 {
			t.Fatalf("agent install as %s succeeded:\n%s", testhost.DeployUser, r)
		}
		if !strings.Contains(r.stdout+r.stderr, "--ssh-user root") {
			t.Errorf("agent install as a non-root user: the error does not say --ssh-user root is needed:\n%s", r)
		}
	})
	t.Run("agent install takes the shipd make build puts beside shipctl", func(t *testing.T) {
		r := s.run("agent", "install", envName, "--ssh-user", "root")
		if r.code != 0 {
			t.Fatalf("agent install without --binary:\n%s", r)
		}
	})
	s.install()
	u.waitServing(t, 0)
	s.deploy(v1)
	s.mustServe("v1")

	t.Run("STATUS= counts the routes after a deploy", func(t *testing.T) {
		status := u.show(t, "StatusText")
		if !strings.Contains(status, "1 route") {
			t.Errorf("StatusText %q, want it to count 1 route", status)
		}
	})
	t.Run("errors reach the journal at their priority", func(t *testing.T) {
		if r := s.run("deploy", envName, "--sha", bad, "--untested"); r.code != 4 {
			t.Fatalf("a deploy that fails its health check: want exit 4\n%s", r)
		}
		var warnings int
		for _, l := range shipdLines(u.journal(t, "")) {
			if l["level"] == "WARN" || l["level"] == "ERROR" {
				warnings++
			}
		}
		if warnings == 0 {
			t.Fatal("shipd logged no warning or error for a failed deploy")
		}
		if got := len(shipdLines(u.journal(t, "-p warning"))); got == 0 {
			t.Errorf("shipd logged %d warnings and errors; journalctl -p warning shows none of them", warnings)
		}
	})
	t.Run("a restart after a reload is graceful", func(t *testing.T) {
		old := u.mainPID(t)
		h.MustRun(t, "systemctl reload shipd")
		succ := u.waitServing(t, old)
		testhost.WaitFor(t, "the old shipd exits after the handover", time.Minute, func() error {
			if _, err := h.Run(fmt.Sprintf("kill -0 %d", old)); err == nil {
				return fmt.Errorf("pid %d still runs", old)
			}
			return nil
		})
		stopped := func() int {
			n := 0
			for _, l := range shipdLines(u.journal(t, "")) {
				if msg, _ := l["msg"].(string); strings.HasPrefix(msg, "stopped") {
					n++
				}
			}
			return n
		}
		before := stopped()
		h.MustRun(t, "systemctl restart shipd")
		u.waitServing(t, succ)
		var rejected []string
		for _, e := range u.journal(t, "") {
			if msg, _ := e["MESSAGE"].(string); strings.Contains(msg, "reception only permitted for main PID") {
				rejected = append(rejected, msg)
			}
		}
		after := stopped()
		if after == before || len(rejected) > 0 {
			t.Errorf("restart after reload: the successor (pid %d) logged %d \"stopped\" lines on the restart; systemd rejected %d notifications: %v",
				succ, after-before, len(rejected), first(rejected, 3))
		}
	})
	t.Run("an app outside ReadWritePaths is refused before anything changes", func(t *testing.T) {
		home := newSite(t, c, siteOptions{port: 8082, path: "/home/deploy/hosts-" + randomHex(3), restart: "unless-stopped"})
		sha := home.version("v1")
		r := home.run("deploy", envName, "--sha", sha, "--untested")
		audit := home.auditLines(h)
		if r.code == 0 {
			t.Fatalf("a deploy to %s, outside shipd's ReadWritePaths=, succeeded:\n%s", home.path, r)
		}
		if !strings.Contains(r.stdout+r.stderr, "ReadWritePaths") || strings.Contains(r.stdout+r.stderr, "read-only file system") || len(audit) == 0 {
			t.Errorf("no check that shipd can write the app's folder: %d audit lines;\n%s", len(audit), r)
		}
	})
	t.Run("a failed redeploy of the live release keeps it serving", func(t *testing.T) {
		// side, a service of the live release, has stopped (a crash), so a redeploy of
		// the release replaces it, stop-first; that fails, its host port being taken
		// now. web serves the live release all along and must go on.
		two := newSite(t, c, siteOptions{port: 8083, side: "127.0.0.1:9099", restart: "unless-stopped"})
		sha := two.version("v1")
		two.deploy(sha)
		two.mustServe("v1")
		h.MustRun(t, "docker stop $(docker ps -q --filter label=com.docker.compose.project="+two.app+"-"+envName+" --filter label=com.docker.compose.service=side)")
		holder := h.Start(t, "systemd-socket-activate -l 127.0.0.1:9099 /bin/cat")
		stop := h.Load(t, two.port, "/version")
		r := two.run("deploy", envName, "--sha", sha, "--untested")
		_, serveErr := two.served(h)
		rep := stop()
		_, _ = holder.Interrupt()
		t.Logf("load during the redeploy: %s", rep)
		if r.code == 0 || !strings.Contains(r.stdout+r.stderr, "service side") {
			t.Fatalf("the redeploy did not fail on side:\n%s", r)
		}
		if serveErr != nil || rep.Failed() > 0 {
			t.Errorf("a failed redeploy of the live release took the app down: web after it: %v; %d of %d requests failed:\n%s", serveErr, rep.Failed(), rep.Requests, r)
		}
	})
	t.Logf("the whole test took %s", time.Since(began).Round(time.Second))
}

func first(s []string, n int) []string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
