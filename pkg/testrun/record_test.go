package testrun_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shipdeploy/ship/pkg/testrun"
	"github.com/shipdeploy/ship/pkg/vcs"
)

func testInfo(t *testing.T, clean bool) vcs.Info {
	t.Helper()
	info := vcs.Info{SHA: strings.Repeat("ab", 20), Clean: clean, GitDir: t.TempDir()}
	if !clean {
		info.Diff = "0123456789ab"
	}
	return info
}

func TestRecord(t *testing.T) {
	for _, clean := range []bool{true, false} {
		t.Run(map[bool]string{true: "clean", false: "dirty"}[clean], func(t *testing.T) {
			info := testInfo(t, clean)
			before := time.Now().UTC()
			if err := testrun.Save(info, "docker-compose.test.yml", testrun.Result{Duration: 3 * time.Second}); err != nil {
				t.Fatal(err)
			}
			rec, ok, err := testrun.Passed(info, info.Version())
			if err != nil || !ok {
				t.Fatalf("testrun.Passed(%s) = %v, %v, want the record", info.Version(), ok, err)
			}
			want := testrun.Record{Version: info.Version(), SHA: info.SHA, Clean: clean, Duration: 3 * time.Second, File: "docker-compose.test.yml"}
			got := rec
			got.Time = time.Time{}
			if got != want {
				t.Errorf("record = %+v, want %+v", got, want)
			}
			if rec.Time.Before(before.Truncate(time.Second)) || rec.Time.Location() != time.UTC {
				t.Errorf("record time %v, want a UTC time after %v", rec.Time, before)
			}
			// The record is inside .git, one file per version, no temporary left.
			entries, err := os.ReadDir(filepath.Join(info.GitDir, "ship", "tests"))
			if err != nil {
				t.Fatal(err)
			}
			if len(entries) != 1 || entries[0].Name() != info.Version()+".json" {
				t.Errorf("records folder holds %v, want only %s.json", entries, info.Version())
			}
		})
	}
}

func TestPassedOtherVersion(t *testing.T) {
	dirty := testInfo(t, false)
	if err := testrun.Save(dirty, "docker-compose.test.yml", testrun.Result{}); err != nil {
		t.Fatal(err)
	}
	// Tests of a dirty tree do not vouch for its commit, nor for another change.
	for _, version := range []string{dirty.SHA, dirty.SHA + "-dirty-ffffffffffff", strings.Repeat("cd", 20)} {
		if _, ok, err := testrun.Passed(dirty, version); ok || err != nil {
			t.Errorf("testrun.Passed(%s) = %v, %v, want no record", version, ok, err)
		}
	}
}

func TestPassedBadRecord(t *testing.T) {
	info := testInfo(t, true)
	dir := filepath.Join(info.GitDir, "ship", "tests")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Run("not JSON", func(t *testing.T) {
		if err := os.WriteFile(filepath.Join(dir, info.SHA+".json"), []byte("{"), 0o644); err != nil {
			t.Fatal(err)
		}
		_, ok, err := testrun.Passed(info, info.SHA)
		if ok || err == nil || !strings.Contains(err.Error(), info.SHA) {
			t.Fatalf("Passed = %v, %v, want an error naming the version", ok, err)
		}
	})
	t.Run("another version's record", func(t *testing.T) {
		// A record copied under another name does not count for that name.
		other := testInfo(t, true)
		other.SHA = strings.Repeat("cd", 20)
		if err := testrun.Save(other, "docker-compose.test.yml", testrun.Result{}); err != nil {
			t.Fatal(err)
		}
		data, err := os.ReadFile(filepath.Join(other.GitDir, "ship", "tests", other.SHA+".json"))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, info.SHA+".json"), data, 0o644); err != nil {
			t.Fatal(err)
		}
		if _, ok, err := testrun.Passed(info, info.SHA); ok || err != nil {
			t.Fatalf("Passed = %v, %v, want no record", ok, err)
		}
	})
}

func TestSaveUnwritable(t *testing.T) {
	info := testInfo(t, true)
	// GitDir is a file: the records folder cannot be made.
	file := filepath.Join(info.GitDir, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	info.GitDir = file
	err := testrun.Save(info, "docker-compose.test.yml", testrun.Result{})
	if err == nil || !strings.Contains(err.Error(), "record test result") {
		t.Fatalf("Save = %v, want an error saying what failed", err)
	}
}
