package agent

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shipdeploy/ship/pkg/event"
	"github.com/shipdeploy/ship/pkg/release"
)

func TestCurrentAuditAndReleaseJSON(t *testing.T) {
	dir := newAppDir(t.TempDir())
	if cur, err := dir.readCurrent(); cur != "" || err != nil {
		t.Fatalf("no current: %q %v", cur, err)
	}
	for _, sha := range []string{"aaa", "bbb"} {
		if err := dir.switchCurrent(sha); err != nil {
			t.Fatal(err)
		}
		if cur, err := dir.readCurrent(); cur != sha || err != nil {
			t.Errorf("current %q %v, want %s", cur, err, sha)
		}
		if link, _ := os.Readlink(dir.Current()); link != "releases/"+sha {
			t.Errorf("current -> %q: want the relative link pkg/deploy writes", link)
		}
	}

	for _, r := range []event.Result{"deployed", "failed"} {
		if err := dir.appendAudit(release.AuditEntry{Event: "deploy", App: "web", SHA: "bbb", Result: r, Agent: "shipd"}); err != nil {
			t.Fatal(err)
		}
	}
	data, _ := os.ReadFile(dir.Audit())
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if len(lines) != 2 {
		t.Fatalf("audit.log:\n%s", data)
	}
	for _, l := range lines {
		var e map[string]any
		if err := json.Unmarshal([]byte(l), &e); err != nil || e["event"] != "deploy" || e["time"] == nil || e["host"] != "" {
			t.Errorf("audit line %s: %v", l, err)
		}
	}

	// release.json keeps what shipctl wrote; shipd sets result and current_since.
	os.MkdirAll(dir.Release("bbb"), 0o755)
	os.WriteFile(dir.Info("bbb"), []byte(`{"sha":"bbb","who":"me@laptop","result":"uploaded","images":["x"]}`), 0o644)
	if err := dir.setReleaseResult("bbb", "deployed", true); err != nil {
		t.Fatal(err)
	}
	var info map[string]any
	data, _ = os.ReadFile(dir.Info("bbb"))
	if err := json.Unmarshal(data, &info); err != nil || info["who"] != "me@laptop" || info["result"] != "deployed" || info["current_since"] == nil || info["images"] == nil {
		t.Errorf("release.json: %s", data)
	}
}

func TestRollbackTarget(t *testing.T) {
	dir := newAppDir(t.TempDir())
	at := func(min int) time.Time { return time.Date(2026, 1, 1, 0, min, 0, 0, time.UTC) }
	for _, r := range []release.Info{
		{SHA: "aaa111", Time: at(1), CurrentSince: at(2)},
		{SHA: "aab222", Time: at(3), CurrentSince: at(4)},
		{SHA: "ccc333", Time: at(5), CurrentSince: at(6)},
		{SHA: "ddd444", Time: at(7)}, // never current
	} {
		os.MkdirAll(dir.Release(r.SHA), 0o755)
		data, _ := json.Marshal(r)
		os.WriteFile(dir.Info(r.SHA), data, 0o644)
	}
	os.MkdirAll(filepath.Join(dir.Releases(), ".hidden"), 0o755)
	tests := []struct{ current, want, got, err string }{
		{current: "ccc333", want: "", got: "aab222"},
		{current: "aab222", want: "", got: "ccc333"},
		{current: "ccc333", want: "aa", err: "names 2 releases"},
		{current: "ccc333", want: "aaa", got: "aaa111"},
		{current: "ccc333", want: "aab", got: "aab222"},
		{current: "ccc333", want: "ddd444", got: "ddd444"},
		{current: "ccc333", want: "eee", err: "is not on the host"},
	}
	for _, tt := range tests {
		got, err := dir.rollbackTarget(tt.current, tt.want)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%s from %s: %q, %v; want an error %q", tt.want, tt.current, got, err, tt.err)
			}
			continue
		}
		if got != tt.got || err != nil {
			t.Errorf("%q from %s: %q, %v; want %s", tt.want, tt.current, got, err, tt.got)
		}
	}
	if _, err := newAppDir(t.TempDir()).rollbackTarget("", ""); err == nil || !strings.Contains(err.Error(), "no previous release") {
		t.Errorf("no releases: %v", err)
	}
}
