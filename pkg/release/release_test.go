package release

import (
	"strings"
	"testing"
	"time"
)

func TestRollbackTarget(t *testing.T) {
	at := func(min int) time.Time { return time.Date(2026, 1, 1, 0, min, 0, 0, time.UTC) }
	// Newest upload first, as both readers list them.
	rels := []Info{
		{SHA: "ddd444", Time: at(7)}, // never current
		{SHA: "ccc333", Time: at(5), CurrentSince: at(6)},
		{SHA: "aab222", Time: at(3), CurrentSince: at(4)},
		{SHA: "aaa111", Time: at(1), CurrentSince: at(8)}, // rolled back to last
	}
	tests := []struct {
		name          string
		rels          []Info
		current, want string
		got, err      string
	}{
		{name: "previous is the one made current last", rels: rels, current: "ccc333", got: "aaa111"},
		{name: "previous skips current", rels: rels, current: "aaa111", got: "ccc333"},
		{name: "previous skips never current", rels: rels[:2], current: "ccc333", err: "no previous release to roll back to (current: ccc333; it has ddd444, ccc333)"},
		{name: "no releases", current: "", err: "no previous release to roll back to (current: no release; it has none)"},
		{name: "whole sha", rels: rels, current: "ccc333", want: "ddd444", got: "ddd444"},
		{name: "unique prefix", rels: rels, current: "ccc333", want: "aab", got: "aab222"},
		{name: "exact match wins over prefix", rels: append([]Info{{SHA: "aab"}}, rels...), current: "ccc333", want: "aab", got: "aab"},
		{name: "ambiguous prefix", rels: rels, current: "ccc333", want: "aa", err: `"aa" names 2 releases (aab222, aaa111); give more of the sha`},
		{name: "not on the host", rels: rels, current: "ccc333", want: "eee", err: "release eee is not on the host (it has ddd444, ccc333, aab222, aaa111)"},
		{name: "list shows short shas", rels: []Info{{SHA: strings.Repeat("f", 40)}}, want: "e", err: "(it has ffffffffffff)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := RollbackTarget(tt.rels, tt.current, tt.want)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("got %q, %v; want an error with %q", got, err, tt.err)
				}
				return
			}
			if err != nil || got != tt.got {
				t.Fatalf("got %q, %v; want %q", got, err, tt.got)
			}
		})
	}
}

func TestLayout(t *testing.T) {
	l := Layout("/srv/web")
	for _, tt := range []struct{ got, want string }{
		{l.ComposeFile("abc"), "/srv/web/releases/abc/docker-compose.yml"},
		{l.Info("abc"), "/srv/web/releases/abc/release.json"},
		{l.Current(), "/srv/web/current"},
		{l.Audit(), "/srv/web/audit.log"},
		{l.Lock(), "/srv/web/.lock"},
		{l.Holder(), "/srv/web/.lock/holder.json"},
		{l.Tmp(), "/srv/web/.tmp"},
		{CurrentLink("abc"), "releases/abc"},
	} {
		if tt.got != tt.want {
			t.Errorf("%s, want %s", tt.got, tt.want)
		}
	}
}
