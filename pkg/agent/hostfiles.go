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
)

// An app's folder on the host, as pkg/deploy lays it out (DESIGN.md, "On the host"):
//
//	<path>/releases/<sha>/docker-compose.yml   uploaded by shipctl
//	<path>/releases/<sha>/release.json         uploaded by shipctl; shipd sets result and current_since
//	<path>/current -> releases/<sha>           switched by shipd once the release serves
//	<path>/audit.log                           one JSON line per deploy or rollback
//	<path>/.tmp/                               staging for atomic renames
type appDir string

func (d appDir) release(sha string) string { return filepath.Join(string(d), "releases", sha) }
func (d appDir) composeFile(sha string) string {
	return filepath.Join(d.release(sha), "docker-compose.yml")
}
func (d appDir) releaseJSON(sha string) string { return filepath.Join(d.release(sha), "release.json") }
func (d appDir) current() string               { return filepath.Join(string(d), "current") }
func (d appDir) audit() string                 { return filepath.Join(string(d), "audit.log") }
func (d appDir) tmp() string                   { return filepath.Join(string(d), ".tmp") }

// readCurrent is the release current points at; "" when there is none.
func (d appDir) readCurrent() (string, error) {
	target, err := os.Readlink(d.current())
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read %s: %w", d.current(), err)
	}
	return filepath.Base(target), nil
}

// switchCurrent points current at the release in one step: a new symlink under .tmp/
// (what pkg/deploy writes: "releases/<sha>", relative), renamed over current.
func (d appDir) switchCurrent(sha string) error {
	if err := os.MkdirAll(d.tmp(), 0o755); err != nil {
		return fmt.Errorf("switch current: %w", err)
	}
	tmp := filepath.Join(d.tmp(), "current-"+randomSuffix())
	if err := os.Symlink("releases/"+sha, tmp); err != nil {
		return fmt.Errorf("switch current: %w", err)
	}
	if err := os.Rename(tmp, d.current()); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("switch current: %w", err)
	}
	return nil
}

// auditEntry is one line of audit.log, in pkg/deploy's format (deploy.AuditEntry).
type auditEntry struct {
	Time    time.Time `json:"time"`
	Event   string    `json:"event"` // "deploy" or "rollback"
	App     string    `json:"app"`
	Env     string    `json:"env"`
	Host    string    `json:"host"`
	SHA     string    `json:"sha,omitempty"`
	Prev    string    `json:"prev,omitempty"`
	Who     string    `json:"who"`
	From    string    `json:"from,omitempty"`
	Result  string    `json:"result"`
	Current string    `json:"current,omitempty"`
	Error   string    `json:"error,omitempty"`
	Reason  string    `json:"reason,omitempty"`
	// Agent marks the lines shipd wrote.
	Agent string `json:"agent,omitempty"`
}

// appendAudit adds one line to audit.log (O_APPEND: concurrent writers never
// interleave within a line).
func (d appDir) appendAudit(e auditEntry) error {
	if e.Time.IsZero() {
		e.Time = time.Now().UTC()
	}
	data, err := json.Marshal(e)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(d.audit(), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("append to %s: %w", d.audit(), err)
	}
	_, err = f.Write(append(data, '\n'))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("append to %s: %w", d.audit(), err)
	}
	return nil
}

// setReleaseResult sets result (and, when it became current, current_since) in the
// release's release.json, keeping every other field as shipctl wrote it.
func (d appDir) setReleaseResult(sha, result string, current bool) error {
	name := d.releaseJSON(sha)
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

// releaseInfo is what shipd reads of a release.json.
type releaseInfo struct {
	SHA          string    `json:"sha"`
	Time         time.Time `json:"time"`
	CurrentSince time.Time `json:"current_since"`
}

// releases lists the releases on the host, newest upload first.
func (d appDir) releases() ([]releaseInfo, error) {
	entries, err := os.ReadDir(filepath.Join(string(d), "releases"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []releaseInfo
	for _, e := range entries {
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		info := releaseInfo{SHA: e.Name()}
		if data, err := os.ReadFile(d.releaseJSON(e.Name())); err == nil {
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

// rollbackTarget picks the release to go back to, as pkg/deploy does: the one want
// names (a unique sha prefix), or else, of the others that were ever current, the one
// made current last.
func (d appDir) rollbackTarget(current, want string) (string, error) {
	rels, err := d.releases()
	if err != nil {
		return "", err
	}
	var have []string
	for _, r := range rels {
		have = append(have, short(r.SHA))
	}
	list := "the host has none"
	if len(have) > 0 {
		list = "the host has " + strings.Join(have, ", ")
	}
	if want == "" {
		var best releaseInfo
		for _, r := range rels {
			if r.SHA == current || r.CurrentSince.IsZero() {
				continue
			}
			if best.SHA == "" || r.CurrentSince.After(best.CurrentSince) {
				best = r
			}
		}
		if best.SHA == "" {
			return "", fmt.Errorf("no previous release to roll back to (current: %s; %s)", releaseName(current), list)
		}
		return best.SHA, nil
	}
	var match []string
	for _, r := range rels {
		if r.SHA == want {
			return r.SHA, nil
		}
		if strings.HasPrefix(r.SHA, want) {
			match = append(match, r.SHA)
		}
	}
	switch len(match) {
	case 0:
		return "", fmt.Errorf("release %s is not on the host (%s)", want, list)
	case 1:
		return match[0], nil
	}
	return "", fmt.Errorf("%q names %d releases (%s); give more of the sha", want, len(match), strings.Join(match, ", "))
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
