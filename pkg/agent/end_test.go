package agent_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/shipdeploy/ship/pkg/release"
	"github.com/shipdeploy/ship/test/testenv"
)

// A deploy whose request has Keep prunes on the host once the release is current: the
// old releases but the newest Keep and current are removed, with the image tags ship
// built for them, and the result says so (shipctl then does not prune over SSH). A
// request without Keep leaves them. Unlock releases shipctl's lock when it is still
// the holder's of that token, and only then.
func TestDeployPrunesAndUnlocks(t *testing.T) {
	a := newApp(t)
	d := newDaemon(t)
	d.start(false)
	ctx := context.Background()
	built := func(sha string) string { return a.name + "/built:" + sha }
	start := time.Now().UTC().Add(-time.Hour)
	for i, sha := range []string{"r1", "r2", "r3"} {
		yaml := fmt.Sprintf("services:\n  web:\n    image: %s\n    pull_policy: never\n    environment: {VERSION: %s}\n    stop_grace_period: 2s\n    x-ship: {port: 8080, listen: %q, health: /up, drain: 1s}\n",
			testenv.AppImageRef, sha, a.listen)
		dir := filepath.Join(a.path, "releases", sha)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		info, _ := json.Marshal(release.Info{SHA: sha, Time: start.Add(time.Duration(i) * time.Minute), Who: "tester@test", Result: release.Uploaded, Built: []string{built(sha)}})
		for name, data := range map[string][]byte{"docker-compose.yml": []byte(yaml), "release.json": info} {
			if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := a.cli.ImageTag(ctx, client.ImageTagOptions{Source: testenv.AppImageRef, Target: built(sha)}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { a.cli.ImageRemove(context.Background(), built(sha), client.ImageRemoveOptions{}) })
	}

	lock := func(token string) {
		if err := os.MkdirAll(filepath.Join(a.path, ".lock"), 0o755); err != nil {
			t.Fatal(err)
		}
		holder := fmt.Sprintf(`{"who": "tester@test", "machine": "test", "pid": 1, "command": "deploy", "token": %q}`, token)
		if err := os.WriteFile(filepath.Join(a.path, ".lock", "holder.json"), []byte(holder), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	locked := func() bool {
		_, err := os.Stat(filepath.Join(a.path, ".lock", "holder.json"))
		return err == nil
	}
	lock("someone-else")
	for _, sha := range []string{"r1", "r2"} {
		req := a.request(sha, 10*time.Second)
		req.Unlock = "mine"
		res, ev, err := a.deploy(d, req)
		if err != nil {
			t.Fatalf("deploy %s: %v\n%s", sha, err, ev)
		}
		if res.Pruned != nil {
			t.Errorf("deploy %s without Keep pruned: %+v", sha, res.Pruned)
		}
		if res.Unlocked || !locked() {
			t.Errorf("deploy %s released a lock of another holder (unlocked %v)", sha, res.Unlocked)
		}
	}
	if _, err := os.Stat(filepath.Join(a.path, "releases", "r1")); err != nil {
		t.Fatalf("a deploy without Keep removed r1: %v", err)
	}

	lock("mine")
	req := a.request("r3", 10*time.Second)
	req.Keep, req.Unlock = 1, "mine"
	res, ev, err := a.deploy(d, req)
	if err != nil {
		t.Fatalf("deploy r3: %v\n%s", err, ev)
	}
	if !res.Unlocked || locked() {
		t.Errorf("the holder's lock is still there (unlocked %v)", res.Unlocked)
	}
	if _, err := os.Stat(filepath.Join(a.path, ".lock")); err == nil {
		t.Error(".lock is still there")
	}
	if res.Pruned == nil || res.Pruned.Error != "" {
		t.Fatalf("pruned = %+v\n%s", res.Pruned, ev)
	}
	gone := slices.Sorted(slices.Values(res.Pruned.Releases))
	if fmt.Sprint(gone) != "[r1 r2]" {
		t.Errorf("pruned releases %v, want [r1 r2]", gone)
	}
	for sha, want := range map[string]bool{"r1": false, "r2": false, "r3": true} {
		_, err := os.Stat(filepath.Join(a.path, "releases", sha))
		if (err == nil) != want {
			t.Errorf("release %s there: %v, want %v", sha, err == nil, want)
		}
		if a.hasImage(built(sha)) != want {
			t.Errorf("image %s there: %v, want %v", built(sha), !want, want)
		}
	}
	if !strings.Contains(ev.String(), "removed 2 old release(s)") || !strings.Contains(ev.String(), "untagged 2 image(s)") {
		t.Errorf("no prune event:\n%s", ev)
	}
}
