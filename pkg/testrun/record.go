package testrun

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/shipdeploy/ship/pkg/vcs"
)

// Record is what a passing run leaves in the checkout, so that push and deploy can
// require that the version they ship was tested.
type Record struct {
	Version  string        `json:"version"` // sha, or <sha>-dirty-<diff hash>
	SHA      string        `json:"sha"`
	Clean    bool          `json:"clean"`
	Time     time.Time     `json:"time"`
	Duration time.Duration `json:"duration_ns"`
	File     string        `json:"file"`
}

// recordDir is inside .git, so a record never makes the tree dirty.
func recordDir(info vcs.Info) string { return filepath.Join(info.GitDir, "ship", "tests") }

// Save records that the tests of info's tree passed.
func Save(info vcs.Info, file string, res Result) error {
	rec := Record{Version: info.Version(), SHA: info.SHA, Clean: info.Clean, Time: time.Now().UTC(), Duration: res.Duration, File: file}
	data, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return err
	}
	dir := recordDir(info)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("record test result: %w", err)
	}
	tmp, err := os.CreateTemp(dir, ".tmp-*")
	if err != nil {
		return fmt.Errorf("record test result: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(data, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("record test result: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("record test result: %w", err)
	}
	return os.Rename(tmp.Name(), filepath.Join(dir, rec.Version+".json"))
}

// Passed returns the record of a passing run for version, or ok false when there is none.
func Passed(info vcs.Info, version string) (Record, bool, error) {
	data, err := os.ReadFile(filepath.Join(recordDir(info), version+".json"))
	if errors.Is(err, os.ErrNotExist) {
		return Record{}, false, nil
	}
	if err != nil {
		return Record{}, false, err
	}
	var rec Record
	if err := json.Unmarshal(data, &rec); err != nil {
		return Record{}, false, fmt.Errorf("test record for %s: %w", version, err)
	}
	return rec, rec.Version == version, nil
}
