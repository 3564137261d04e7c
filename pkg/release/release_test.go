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
	// Names with the compose file's hash; one commit deployed twice.
	named := []Info{
		{SHA: strings.Repeat("a", 40) + "-0badf00d", Time: at(3), CurrentSince: at(4)},
		{SHA: strings.Repeat("b", 40) + "-12345678", Time: at(2), CurrentSince: at(2)},
		{SHA: strings.Repeat("a", 40) + "-12345678", Time: at(1), CurrentSince: at(1)},
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
		{name: "ambiguous prefix", rels: rels, current: "ccc333", want: "aa", err: `"aa" names 2 releases (aab222, aaa111); give more of the release's name`},
		{name: "not on the host", rels: rels, current: "ccc333", want: "eee", err: "release eee is not on the host (it has ddd444, ccc333, aab222, aaa111)"},
		{name: "list shows short shas", rels: []Info{{SHA: strings.Repeat("f", 40)}}, want: "e", err: "(it has ffffffffffff)"},
		{name: "a commit's sha names its release", rels: named, current: named[0].SHA, want: strings.Repeat("b", 40), got: named[1].SHA},
		{name: "the short form names it too", rels: named, current: named[0].SHA, want: "bbbbbbbbbbbb-1234", got: named[1].SHA},
		{name: "one commit, two releases", rels: named, current: named[1].SHA, want: "aaaa", err: `"aaaa" names 2 releases (aaaaaaaaaaaa-0badf00d, aaaaaaaaaaaa-12345678); give more`},
		{name: "a legacy name wins as a whole name", rels: append(named, Info{SHA: strings.Repeat("a", 40)}), current: named[1].SHA, want: strings.Repeat("a", 40), got: strings.Repeat("a", 40)},
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

func TestNameForAndShort(t *testing.T) {
	sha := strings.Repeat("c", 40)
	a, b := NameFor(sha, []byte("services: {web: {}}\n")), NameFor(sha, []byte("services: {web: {environment: {A: 1}}}\n"))
	if a == b || !strings.HasPrefix(a, sha+"-") || len(a) != 40+1+HashLen {
		t.Errorf("names %q and %q: want <sha>-<%d hex digits>, different for different files", a, b, HashLen)
	}
	if again := NameFor(sha, []byte("services: {web: {}}\n")); again != a {
		t.Errorf("the same file is named %q then %q", a, again)
	}
	for in, want := range map[string]string{
		sha:                          "cccccccccccc",
		sha + "-0badf00d":            "cccccccccccc-0badf00d",
		sha + "-dirty-1234":          "cccccccccccc-dirty-1234",
		sha + "-dirty-1234-0badf00d": "cccccccccccc-dirty-1234-0badf00d",
		"abc":                        "abc",
	} {
		if got := Short(in); got != want {
			t.Errorf("Short(%q) = %q, want %q", in, got, want)
		}
	}
}
