package release

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func newTestStore(t *testing.T) *Store {
	t.Helper()
	return NewStore(OS{}, t.TempDir())
}

func TestCurrentAndAudit(t *testing.T) {
	ctx := context.Background()
	s := newTestStore(t)
	if cur, err := s.Current(ctx); cur != "" || err != nil {
		t.Fatalf("no current: %q %v", cur, err)
	}
	for _, sha := range []string{"aaa", "bbb"} {
		if err := s.SwitchCurrent(ctx, sha); err != nil {
			t.Fatal(err)
		}
		if cur, err := s.Current(ctx); cur != sha || err != nil {
			t.Errorf("current %q %v, want %s", cur, err, sha)
		}
		if link, _ := os.Readlink(s.Layout.Current()); link != "releases/"+sha {
			t.Errorf("current -> %q: want the relative link releases/%s", link, sha)
		}
	}
	if left, _ := os.ReadDir(s.Layout.Tmp()); len(left) != 0 {
		t.Errorf("the switch left %v under .tmp/", left)
	}

	for _, r := range []string{"deployed", "failed"} {
		if err := s.AppendAudit(ctx, AuditEntry{Event: AuditDeploy, App: "web", SHA: "bbb", Reason: r, Agent: "shipd"}); err != nil {
			t.Fatal(err)
		}
	}
	f, _ := os.OpenFile(s.Layout.Audit(), os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString("not json\n")
	f.Close()
	got, err := s.Audit(ctx, 0)
	if err != nil || len(got) != 2 || got[0].Reason != "deployed" || got[1].Reason != "failed" || got[0].Time.IsZero() {
		t.Fatalf("audit: %+v %v", got, err)
	}
	if last, _ := s.Audit(ctx, 1); len(last) != 1 || last[0].Reason != "failed" {
		t.Errorf("last line: %+v", last)
	}
	if none, err := newTestStore(t).Audit(ctx, 0); none != nil || err != nil {
		t.Errorf("no audit.log: %v %v", none, err)
	}
}

func TestUploadAndReleaseJSON(t *testing.T) {
	ctx := context.Background()
	s := newTestStore(t)
	up := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	info := Info{SHA: "abc", Who: "me@laptop", Time: up, Result: Uploaded, Images: []string{"r/web:abc"}}
	if err := s.Upload(ctx, info, []byte("services: {}\n")); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(s.Layout.ComposeFile("abc"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("compose file: %v %v, want mode 0600", st, err)
	}
	if data, err := s.ComposeFile(ctx, "abc"); err != nil || string(data) != "services: {}\n" {
		t.Errorf("compose file: %q %v", data, err)
	}
	// shipd sets the result; every other field stays as shipctl wrote it.
	if err := s.SetResult(ctx, "abc", Deployed, true); err != nil {
		t.Fatal(err)
	}
	got, err := s.Info(ctx, "abc")
	if err != nil || got.Who != "me@laptop" || got.Result != Deployed || got.CurrentSince.IsZero() || len(got.Images) != 1 {
		t.Fatalf("release.json: %+v %v", got, err)
	}
	// A redeploy of the release replaces its release.json, keeps when it became
	// current, and never rewrites its compose file: another one is refused.
	info.Who = "other@ci"
	if err := s.Upload(ctx, info, []byte("services: {}\n")); err != nil {
		t.Fatal(err)
	}
	again, _ := s.Info(ctx, "abc")
	if again.Who != "other@ci" || again.Result != Uploaded || !again.CurrentSince.Equal(got.CurrentSince) {
		t.Errorf("re-upload: %+v", again)
	}
	info.Who = "third@ci"
	err = s.Upload(ctx, info, []byte("services: {web: {}}\n"))
	if err == nil || !strings.Contains(err.Error(), "never rewritten") {
		t.Errorf("an upload of another file under the same name: %v", err)
	}
	if data, _ := s.ComposeFile(ctx, "abc"); string(data) != "services: {}\n" {
		t.Errorf("the compose file was rewritten: %s", data)
	}
	if again, _ := s.Info(ctx, "abc"); again.Who != "other@ci" {
		t.Errorf("the refused upload changed release.json: %+v", again)
	}
	// The upload staged the symlink that the switch renames over current.
	if err := s.SwitchCurrent(ctx, "abc"); err != nil {
		t.Fatal(err)
	}
	if cur, err := s.Current(ctx); err != nil || cur != "abc" {
		t.Errorf("current = %q, %v; want abc", cur, err)
	}
	// What is left under .tmp/ is the emptied stage, which the next upload sweeps.
	left, _ := os.ReadDir(s.Layout.Tmp())
	for _, e := range left {
		inside, err := os.ReadDir(filepath.Join(s.Layout.Tmp(), e.Name()))
		if !e.IsDir() || err != nil || len(inside) != 0 {
			t.Errorf("the upload and the switch left %s under .tmp/ (%d entries, %v)", e.Name(), len(inside), err)
		}
	}
	if err := s.Upload(ctx, Info{SHA: "def", Time: up}, []byte("services: {}\n")); err != nil {
		t.Fatal(err)
	}
	if err := s.SwitchCurrent(ctx, "def"); err != nil {
		t.Fatal(err)
	}
	if left, _ := os.ReadDir(s.Layout.Tmp()); len(left) != 0 {
		t.Errorf("after the next upload's sweep and its switch, .tmp/ holds %v", left)
	}
	// A release without release.json (or its folder) gets one with its sha.
	if err := s.SetResult(ctx, "bare", Failed, false); err != nil {
		t.Fatal(err)
	}
	var raw map[string]any
	data, _ := os.ReadFile(s.Layout.Info("bare"))
	if json.Unmarshal(data, &raw) != nil || raw["sha"] != "bare" || raw["result"] != "failed" {
		t.Errorf("release.json of a bare release: %s", data)
	}
}

func writeInfos(t *testing.T, s *Store, infos ...Info) {
	t.Helper()
	for _, r := range infos {
		os.MkdirAll(s.Layout.Release(r.SHA), 0o755)
		data, _ := json.Marshal(r)
		if err := os.WriteFile(s.Layout.Info(r.SHA), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func at(min int) time.Time { return time.Date(2026, 1, 1, 0, min, 0, 0, time.UTC) }

func TestStoreRollbackTarget(t *testing.T) {
	ctx := context.Background()
	s := newTestStore(t)
	writeInfos(t, s,
		Info{SHA: "aaa111", Time: at(1), CurrentSince: at(2)},
		Info{SHA: "aab222", Time: at(3), CurrentSince: at(4)},
		Info{SHA: "ccc333", Time: at(5), CurrentSince: at(6)},
		Info{SHA: "ddd444", Time: at(7)}, // never current
	)
	os.MkdirAll(filepath.Join(s.Layout.Releases(), ".hidden"), 0o755)
	rels, err := s.Releases(ctx)
	if err != nil || len(rels) != 4 || rels[0].SHA != "ddd444" || rels[3].SHA != "aaa111" {
		t.Fatalf("releases, newest first: %+v %v", rels, err)
	}
	tests := []struct{ current, want, got, err string }{
		{current: "ccc333", want: "", got: "aab222"},
		{current: "aab222", want: "", got: "ccc333"},
		{current: "ccc333", want: "aa", err: "names 2 releases"},
		{current: "ccc333", want: "aab", got: "aab222"},
		{current: "ccc333", want: "ddd444", got: "ddd444"},
		{current: "ccc333", want: "eee", err: "is not on the host"},
	}
	for _, tt := range tests {
		got, err := s.RollbackTarget(ctx, tt.current, tt.want)
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
	if _, err := newTestStore(t).RollbackTarget(ctx, "", ""); err == nil || !strings.Contains(err.Error(), "no previous release") {
		t.Errorf("no releases: %v", err)
	}
}

func TestPrune(t *testing.T) {
	ctx := context.Background()
	s := newTestStore(t)
	writeInfos(t, s,
		Info{SHA: "old", Time: at(1), Built: []string{"r/web:old", "r/shared:1"}},
		Info{SHA: "cur", Time: at(2), Built: []string{"r/web:cur"}},
		Info{SHA: "mid", Time: at(3), Built: []string{"r/web:mid", "r/shared:1"}},
		Info{SHA: "new", Time: at(4), Built: []string{"r/web:new"}},
	)
	got, err := s.Prune(ctx, 1, "cur")
	if err != nil {
		t.Fatal(err)
	}
	// Kept: the newest and current; r/shared:1 went with both its users.
	if strings.Join(got.Releases, ",") != "mid,old" || strings.Join(got.Images, ",") != "r/shared:1,r/web:mid,r/web:old" {
		t.Errorf("pruned %+v", got)
	}
	for sha, want := range map[string]bool{"new": true, "cur": true, "mid": false, "old": false} {
		if _, err := os.Stat(s.Layout.Release(sha)); (err == nil) != want {
			t.Errorf("%s there: %v, want %v", sha, err == nil, want)
		}
	}
}

func TestOSWriteFileRefusesExisting(t *testing.T) {
	name := filepath.Join(t.TempDir(), "f")
	ctx := context.Background()
	if err := (OS{}).WriteFile(ctx, name, []byte("a"), 0o640); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(name); st.Mode().Perm() != 0o640 {
		t.Errorf("mode %v, want 0640 whatever the umask", st.Mode().Perm())
	}
	if err := (OS{}).WriteFile(ctx, name, []byte("b"), 0o640); !os.IsExist(err) {
		t.Errorf("second write: %v, want it to exist", err)
	}
	if err := (OS{}).Mkdir(ctx, filepath.Dir(name)); !os.IsExist(err) {
		t.Errorf("mkdir of a folder that is there: %v", err)
	}
}

func TestUploadExtraFiles(t *testing.T) {
	ctx := context.Background()
	s := newTestStore(t)
	info := Info{SHA: "abc", Time: time.Now().UTC(), Result: Uploaded}
	extra := []File{{Name: TLSCertFile, Data: []byte("CERT")}, {Name: TLSKeyFile, Data: []byte("KEY")}}
	if err := s.Upload(ctx, info, []byte("services: {}\n"), extra...); err != nil {
		t.Fatal(err)
	}
	for _, f := range extra {
		name := filepath.Join(s.Layout.Release("abc"), f.Name)
		st, err := os.Stat(name)
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v %v, want mode 0600", f.Name, st, err)
		}
		if data, _ := os.ReadFile(name); string(data) != string(f.Data) {
			t.Errorf("%s: %q", f.Name, data)
		}
	}
	for _, bad := range []string{"", "../x", "a/b", "release.json", "docker-compose.yml"} {
		if err := s.Upload(ctx, info, []byte("services: {}\n"), File{Name: bad}); err == nil {
			t.Errorf("upload of a file named %q: no error", bad)
		}
	}
}

// An upload of a release the host has stages only its release.json, and leaves
// nothing in .tmp/ but empty folders; a release that lost its compose file gets it
// back (mode 0600), and a changed one is refused.
func TestUploadOfAReleaseTheHostHas(t *testing.T) {
	ctx := context.Background()
	s := newTestStore(t)
	info := Info{SHA: "abc", Who: "me@laptop", Time: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), Result: Uploaded}
	compose := []byte("services: {}\n")
	extra := File{Name: "tls.crt", Data: []byte("cert")}
	if err := s.Upload(ctx, info, compose, extra); err != nil {
		t.Fatal(err)
	}
	info.Who = "you@laptop"
	if err := s.Upload(ctx, info, compose, extra); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Info(ctx, "abc"); err != nil || got.Who != "you@laptop" {
		t.Errorf("release.json after the second upload: %+v %v, want who you@laptop", got, err)
	}
	err := filepath.WalkDir(s.Layout.Tmp(), func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && !strings.HasPrefix(d.Name(), "current-") {
			t.Errorf("the upload left %s under .tmp/", p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(s.Layout.ComposeFile("abc")); err != nil {
		t.Fatal(err)
	}
	if err := s.Upload(ctx, info, compose); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(s.Layout.ComposeFile("abc")); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("compose file put back: %v %v, want mode 0600", st, err)
	}
	if data, _ := os.ReadFile(s.Layout.ComposeFile("abc")); string(data) != string(compose) {
		t.Errorf("compose file put back: %q, want %q", data, compose)
	}
	if err := s.Upload(ctx, info, []byte("services: {a: {}}\n")); err == nil || !strings.Contains(err.Error(), "never rewritten") {
		t.Errorf("upload of another compose file under the same name: %v, want refused", err)
	}
}

// An upload that records later (the agentless deploy's) of a release the host has
// writes nothing the run waits on: release.json stays as it was until the result is
// recorded, which writes the upload's info with it.
func TestUploadRecordLater(t *testing.T) {
	ctx := context.Background()
	s := newTestStore(t)
	info := Info{SHA: "abc", Who: "me@laptop", Time: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), Result: Uploaded}
	compose := []byte("services: {}\n")
	if err := s.Upload(ctx, info, compose); err != nil {
		t.Fatal(err)
	}
	if err := s.SetResult(ctx, "abc", Deployed, true); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(s.Layout.Info("abc"))
	again := NewStore(OS{}, string(s.Layout))
	info.Who, info.Time = "you@laptop", info.Time.Add(time.Hour)
	if err := again.UploadLooked(ctx, again.Look(ctx, "abc"), true, info, compose); err != nil {
		t.Fatal(err)
	}
	if now, _ := os.ReadFile(s.Layout.Info("abc")); string(now) != string(before) {
		t.Errorf("release.json rewritten by the upload:\n%s\nwas\n%s", now, before)
	}
	if err := again.SetResult(ctx, "abc", Failed, false); err != nil {
		t.Fatal(err)
	}
	got, err := again.Info(ctx, "abc")
	if err != nil || got.Who != "you@laptop" || got.Result != Failed || !got.Time.Equal(info.Time) || got.CurrentSince.IsZero() {
		t.Errorf("release.json recorded: %+v %v, want the upload's info, failed, its current_since kept", got, err)
	}
	if err := again.UploadLooked(ctx, nil, true, info, []byte("services: {a: {}}\n")); err == nil || !strings.Contains(err.Error(), "never rewritten") {
		t.Errorf("another compose file under the same name: %v, want refused", err)
	}
	if err := os.Remove(s.Layout.ComposeFile("abc")); err != nil {
		t.Fatal(err)
	}
	if err := again.UploadLooked(ctx, nil, true, info, compose); err != nil {
		t.Fatal(err)
	}
	if data, _ := os.ReadFile(s.Layout.ComposeFile("abc")); string(data) != string(compose) {
		t.Errorf("compose file put back: %q, want %q", data, compose)
	}
}
