package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/shipdeploy/ship/pkg/config"
	"github.com/shipdeploy/ship/pkg/image"
	"github.com/shipdeploy/ship/pkg/testrun"
	"github.com/shipdeploy/ship/pkg/vcs"
)

func writeTestFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

const testSHA = "0123456789abcdef0123456789abcdef01234567"

func TestCheckDirty(t *testing.T) {
	clean := vcs.Info{SHA: testSHA, Clean: true}
	dirty := vcs.Info{SHA: testSHA, Diff: "abcdefabcdef"}
	io, _, errOut := testIO("", false)
	p := newPrinter(&Globals{Factory: NewFactory(io)})
	if err := checkDirty(p, clean, false, "push"); err != nil {
		t.Errorf("a clean tree: %v", err)
	}
	err := checkDirty(p, dirty, false, "push")
	if err == nil || exitCode(err) != ExitError || !strings.Contains(err.Error(), testSHA+"-dirty-abcdefabcdef") || !strings.Contains(err.Error(), "--allow-dirty") {
		t.Errorf("a dirty tree must be refused, naming its version and --allow-dirty: %v", err)
	}
	if err := checkDirty(p, dirty, true, "push"); err != nil || !strings.Contains(errOut.String(), "warning: "+testSHA+"-dirty-abcdefabcdef") {
		t.Errorf("--allow-dirty goes on with a warning: %v, stderr %q", err, errOut)
	}
}

func TestCheckTested(t *testing.T) {
	info := vcs.Info{SHA: testSHA, Clean: true, GitDir: t.TempDir()}

	io, out, errOut := testIO("", false)
	g := &Globals{Factory: NewFactory(io)}
	err := checkTested(g, newPrinter(g), info, false, true)
	if err == nil || !strings.Contains(err.Error(), testSHA) || !strings.Contains(err.Error(), "shipctl test") || !strings.Contains(err.Error(), "--untested") {
		t.Errorf("an untested sha must be refused, naming it, shipctl test and --untested: %v", err)
	}
	if out.Len() != 0 || errOut.Len() != 0 {
		t.Errorf("a refused sha: the error says it all, yet it printed %q and %q", out, errOut)
	}

	// --untested: a warning on stderr, and with --json an event as well.
	io, out, errOut = testIO("", false)
	g = &Globals{Factory: NewFactory(io), JSON: true}
	if err := checkTested(g, newPrinter(g), info, true, true); err != nil {
		t.Fatal(err)
	}
	var ev map[string]any
	if err := json.Unmarshal(out.Bytes(), &ev); err != nil || ev["event"] != "warning" || !strings.Contains(fmt.Sprint(ev["msg"]), "UNTESTED") {
		t.Errorf("--untested --json: want a warning event, got %q (%v)", out, err)
	}
	if !strings.Contains(errOut.String(), "warning: pushing "+testSHA+" UNTESTED") {
		t.Errorf("--untested --json: want the warning on stderr too, got %q", errOut)
	}

	if err := testrun.Save(info, "docker-compose.test.yml", testrun.Result{}); err != nil {
		t.Fatal(err)
	}
	io, out, _ = testIO("", false)
	g = &Globals{Factory: NewFactory(io)}
	if err := checkTested(g, newPrinter(g), info, false, true); err != nil || !strings.Contains(out.String(), "tests passed for 0123456789ab") {
		t.Errorf("a tested sha: %v, output %q", err, out)
	}
	// A record of the clean tree does not cover a dirty one.
	dirty := info
	dirty.Clean, dirty.Diff = false, "abcdefabcdef"
	if err := checkTested(g, newPrinter(g), dirty, false, true); err == nil {
		t.Error("a dirty tree passed the test gate on the clean tree's record")
	}
}

func TestPushHint(t *testing.T) {
	cfg := &config.Config{File: "ship.yaml", Registry: "r.example.com:5000/team"}
	for _, tc := range []struct {
		err  error
		want string
	}{
		{fmt.Errorf("%w: r.example.com:5000: connection refused", image.ErrRegistryDown), "check that the registry is running"},
		{fmt.Errorf("%w: refused", image.ErrRegistryAuth), "docker login r.example.com:5000"},
		{fmt.Errorf("%w: x is not on the engine", image.ErrNotBuilt), "shipctl build"},
	} {
		err := pushHint(tc.err, cfg)
		if !strings.Contains(err.Error(), tc.want) || !errors.Is(err, errors.Unwrap(tc.err)) {
			t.Errorf("pushHint(%v) = %v, want %q", tc.err, err, tc.want)
		}
	}
}
