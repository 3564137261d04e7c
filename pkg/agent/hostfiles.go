package agent

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/shipdeploy/ship/pkg/release"
)

// appDir is an app's folder on the host, laid out as pkg/release says: shipctl uploads
// releases/<sha>/ (docker-compose.yml and release.json); shipd sets the release's result
// and current_since, switches current once the release serves and appends to audit.log.
type appDir struct{ release.Layout }

func newAppDir(path string) appDir { return appDir{release.Layout(path)} }

// readCurrent is the release current points at; "" when there is none.
func (d appDir) readCurrent() (string, error) {
	target, err := os.Readlink(d.Current())
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read %s: %w", d.Current(), err)
	}
	return filepath.Base(target), nil
}

// switchCurrent points current at the release in one step: a new symlink under .tmp/
// (what pkg/deploy writes: "releases/<sha>", relative), renamed over current.
func (d appDir) switchCurrent(sha string) error {
	if err := os.MkdirAll(d.Tmp(), 0o755); err != nil {
		return fmt.Errorf("switch current: %w", err)
	}
	tmp := filepath.Join(d.Tmp(), "current-"+randomSuffix())
	if err := os.Symlink(release.CurrentLink(sha), tmp); err != nil {
		return fmt.Errorf("switch current: %w", err)
	}
	if err := os.Rename(tmp, d.Current()); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("switch current: %w", err)
	}
	return nil
}

// appendAudit adds one line to audit.log (O_APPEND: concurrent writers never
// interleave within a line).
func (d appDir) appendAudit(e release.AuditEntry) error {
	if e.Time.IsZero() {
		e.Time = time.Now().UTC()
	}
	data, err := json.Marshal(e)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(d.Audit(), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("append to %s: %w", d.Audit(), err)
	}
	_, err = f.Write(append(data, '\n'))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("append to %s: %w", d.Audit(), err)
	}
	return nil
}

// setReleaseResult sets result (and, when it became current, current_since) in the
// release's release.json, keeping every other field as shipctl wrote it.
func (d appDir) setReleaseResult(sha, result string, current bool) error {
	name := d.Info(sha)
	info := map[string]any{}
	data, err := os.ReadFile(name)
	switch {
	case errors.Is(err, os.ErrNotExist):
		info["sha"] = sha
	case err != nil:
		return fmt.Errorf("update %s: %w", name, err)
	default:
		if err := json.Unmarshal(data, &info); err != nil {
			return fmt.Errorf("update %s: %w", name, err)
		}
	}
	info["result"] = result
	if current {
		info["current_since"] = time.Now().UTC()
	}
	out, err := json.MarshalIndent(info, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(name, append(out, '\n'), 0o644)
}

// releases lists the releases on the host, newest upload first.
func (d appDir) releases() ([]release.Info, error) {
	entries, err := os.ReadDir(d.Releases())
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []release.Info
	for _, e := range entries {
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		info := release.Info{SHA: e.Name()}
		if data, err := os.ReadFile(d.Info(e.Name())); err == nil {
			_ = json.Unmarshal(data, &info)
			info.SHA = e.Name()
		}
		out = append(out, info)
	}
	sort.SliceStable(out, func(i, j int) bool {
		if !out[i].Time.Equal(out[j].Time) {
			return out[i].Time.After(out[j].Time)
		}
		return out[i].SHA < out[j].SHA
	})
	return out, nil
}

// rollbackTarget picks the release on the host that a rollback to want goes back to
// (see release.RollbackTarget).
func (d appDir) rollbackTarget(current, want string) (string, error) {
	rels, err := d.releases()
	if err != nil {
		return "", err
	}
	return release.RollbackTarget(rels, current, want)
}

func randomSuffix() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// short is a sha as output shows it: 12 characters.
func short(sha string) string {
	if i := strings.Index(sha, "-dirty-"); i >= 0 {
		return short(sha[:i]) + sha[i:]
	}
	if len(sha) > 12 {
		return sha[:12]
	}
	return sha
}

func releaseName(sha string) string {
	if sha == "" {
		return "no release"
	}
	return short(sha)
}
