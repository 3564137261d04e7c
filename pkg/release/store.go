package release

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strings"
	"sync"
	"time"
)

// readAhead is how many files Releases reads at once.
const readAhead = 16

// Store is an app's folder on one host, read and written through an FS: the one
// implementation of the on-host contract for shipctl and shipd. Every write that
// replaces something is staged under Layout.Tmp() and renamed into place.
type Store struct {
	FS     FS
	Layout Layout

	mu sync.Mutex
	// uploaded is release.json as Upload wrote it, for the UpdateInfo that follows
	// (the result of the same run, under the same lock): it need not be read again.
	uploaded map[string]Info
	// links are the symlinks to each uploaded release that Upload staged under .tmp/
	// (or left to the switch to make: SwitchSteps), for SwitchCurrent: the switch is
	// then one rename.
	links map[string]switchLink
	// stages are the emptied stages of uploads of releases the host had, removed
	// with the run's end (LeftoverSteps) rather than by the next upload's sweep.
	stages map[string]string
}

// switchLink is current's new symlink for a release, under .tmp/.
type switchLink struct {
	path string
	made bool // Upload made it; else the switch's sequence does (SwitchSteps)
}

// NewStore is the store of the app folder dir, reached through f.
func NewStore(f FS, dir string) *Store { return &Store{FS: f, Layout: Layout(dir)} }

// Current is the release current points at; "" when there is none.
func (s *Store) Current(ctx context.Context) (string, error) {
	target, err := s.FS.Readlink(ctx, s.Layout.Current())
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read %s: %w", s.Layout.Current(), err)
	}
	return path.Base(target), nil
}

// SwitchCurrent points current at sha in one step: a new symlink under .tmp/, renamed
// over current.
func (s *Store) SwitchCurrent(ctx context.Context, sha string) error {
	l := s.Layout
	if link, made := s.stagedLink(sha); made {
		if err := s.FS.Rename(ctx, link, l.Current()); err == nil {
			return nil
		}
		// Swept away, or never made: made again below.
		_ = s.FS.RemoveAll(context.WithoutCancel(ctx), link)
	}
	tmp := path.Join(l.Tmp(), "current-"+TempSuffix())
	if err := s.inTmp(ctx, func() error { return s.FS.Symlink(ctx, CurrentLink(sha), tmp) }); err != nil {
		return fmt.Errorf("create the symlink %s: %w", tmp, err)
	}
	if err := s.FS.Rename(ctx, tmp, l.Current()); err != nil {
		_ = s.FS.RemoveAll(context.WithoutCancel(ctx), tmp)
		return fmt.Errorf("switch %s: %w", l.Current(), err)
	}
	return nil
}

// ClearTmp removes what a cut-off upload left under .tmp/.
func (s *Store) ClearTmp(ctx context.Context) error {
	if err := s.FS.RemoveAll(ctx, s.Layout.Tmp()); err != nil {
		return fmt.Errorf("empty %s: %w", s.Layout.Tmp(), err)
	}
	return nil
}

// ComposeFile reads a release's resolved compose file.
func (s *Store) ComposeFile(ctx context.Context, sha string) ([]byte, error) {
	data, err := s.FS.ReadFile(ctx, s.Layout.ComposeFile(sha))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", s.Layout.ComposeFile(sha), err)
	}
	return data, nil
}

// Info reads a release's release.json.
func (s *Store) Info(ctx context.Context, sha string) (Info, error) {
	data, err := s.FS.ReadFile(ctx, s.Layout.Info(sha))
	if err != nil {
		return Info{}, err
	}
	var info Info
	if err := json.Unmarshal(data, &info); err != nil {
		return Info{}, fmt.Errorf("%s: %w", s.Layout.Info(sha), err)
	}
	return info, nil
}

// UpdateInfo changes a release's release.json in one step (staged in .tmp/); a
// release without one gets one with only its SHA and the change (and its folder, when
// that is not there either: shipd records the outcome of a deploy it was asked for).
func (s *Store) UpdateInfo(ctx context.Context, sha string, change func(*Info)) error {
	st, err := s.StageInfo(ctx, sha, change)
	if err != nil {
		return err
	}
	return s.Commit(ctx, st)
}

// Staged is a release.json written under .tmp/ and not in place yet (StageInfo).
type Staged struct {
	sha, tmp string
	// before is release.json as Upload wrote it, when that was what was changed: put
	// back for the next UpdateInfo when the staged one is discarded.
	before *Info
}

// StageInfo writes a release's release.json, changed as UpdateInfo changes it, under
// .tmp/ without putting it in place: Commit does that in one rename. A run stages its
// result while current is switched, so that the record after the switch is one
// request, and the result never says deployed before the switch is done.
func (s *Store) StageInfo(ctx context.Context, sha string, change func(*Info)) (*Staged, error) {
	s.mu.Lock()
	info, ok := s.uploaded[sha]
	delete(s.uploaded, sha)
	s.mu.Unlock()
	st := &Staged{sha: sha, tmp: path.Join(s.Layout.Tmp(), "release.json-"+TempSuffix())}
	var err error
	if ok {
		before := info
		st.before = &before
	} else {
		info, err = s.Info(ctx, sha)
	}
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("update release.json: %w", err)
		}
		info = Info{SHA: sha}
		if err := s.FS.MkdirAll(ctx, s.Layout.Release(sha)); err != nil {
			return nil, fmt.Errorf("create %s: %w", s.Layout.Release(sha), err)
		}
	}
	change(&info)
	data, err := marshalInfo(info)
	if err != nil {
		s.forget(st)
		return nil, err
	}
	if err := s.inTmp(ctx, func() error { return s.FS.WriteFile(ctx, st.tmp, data, 0o644) }); err != nil {
		_ = s.FS.RemoveAll(context.WithoutCancel(ctx), st.tmp)
		s.forget(st)
		return nil, fmt.Errorf("write %s: %w", s.Layout.Info(sha), err)
	}
	return st, nil
}

// Commit puts a staged release.json in place, in one step.
func (s *Store) Commit(ctx context.Context, st *Staged) error {
	to := s.Layout.Info(st.sha)
	if err := s.FS.Rename(ctx, st.tmp, to); err != nil {
		_ = s.FS.RemoveAll(context.WithoutCancel(ctx), st.tmp)
		return fmt.Errorf("write %s: %w", to, err)
	}
	return nil
}

// Discard removes a staged release.json that will not be put in place; nil is none.
func (s *Store) Discard(ctx context.Context, st *Staged) {
	if st == nil {
		return
	}
	_ = s.FS.RemoveAll(ctx, st.tmp)
	s.forget(st)
}

// forget puts back what StageInfo took of Upload's release.json.
func (s *Store) forget(st *Staged) {
	if st.before == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.uploaded == nil {
		s.uploaded = map[string]Info{}
	}
	if _, ok := s.uploaded[st.sha]; !ok {
		s.uploaded[st.sha] = *st.before
	}
}

// SetResult sets a release's result in its release.json and, when it became current,
// CurrentSince.
func (s *Store) SetResult(ctx context.Context, sha, result string, current bool) error {
	return s.UpdateInfo(ctx, sha, func(info *Info) {
		info.Result = result
		if current {
			info.CurrentSince = time.Now().UTC()
		}
	})
}

func marshalInfo(info Info) ([]byte, error) {
	data, err := json.MarshalIndent(info, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(data, '\n'), nil
}

// Releases reads every release's release.json, newest (by Time) first. A folder
// without a readable release.json is listed with only its SHA (and sorts last).
func (s *Store) Releases(ctx context.Context) ([]Info, error) {
	l := s.Layout
	entries, err := s.FS.ReadDir(ctx, l.Releases())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", l.Releases(), err)
	}
	var out []Info
	for _, e := range entries {
		if e.IsDir() && !strings.HasPrefix(e.Name(), ".") {
			out = append(out, Info{SHA: e.Name()})
		}
	}
	// Every release.json at once (at most readAhead in flight).
	sem := make(chan struct{}, readAhead)
	reads := make([]func() error, len(out))
	for i := range out {
		reads[i] = func() error {
			sem <- struct{}{}
			defer func() { <-sem }()
			if ri, err := s.Info(ctx, out[i].SHA); err == nil {
				ri.SHA = out[i].SHA
				out[i] = ri
			}
			return nil
		}
	}
	_ = all(reads...)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	sort.SliceStable(out, func(i, j int) bool {
		if !out[i].Time.Equal(out[j].Time) {
			return out[i].Time.After(out[j].Time)
		}
		return out[i].SHA < out[j].SHA
	})
	return out, nil
}

// RollbackTarget is the release a rollback to want goes back to (see RollbackTarget).
func (s *Store) RollbackTarget(ctx context.Context, current, want string) (string, error) {
	releases, err := s.Releases(ctx)
	if err != nil {
		return "", err
	}
	return RollbackTarget(releases, current, want)
}

// AppendAudit adds one line to audit.log (O_APPEND, so concurrent writers never
// interleave within a line). A zero Time is now.
func (s *Store) AppendAudit(ctx context.Context, e AuditEntry) error {
	data, err := auditLine(e)
	if err != nil {
		return err
	}
	if err := s.FS.Append(ctx, s.Layout.Audit(), data); err != nil {
		return fmt.Errorf("append to %s: %w", s.Layout.Audit(), err)
	}
	return nil
}

// auditLine is e as a line of audit.log; a zero Time is now.
func auditLine(e AuditEntry) ([]byte, error) {
	if e.Time.IsZero() {
		e.Time = time.Now().UTC()
	}
	data, err := json.Marshal(e)
	if err != nil {
		return nil, err
	}
	return append(data, '\n'), nil
}

// Audit reads audit.log, oldest first; the last limit lines when limit > 0. Lines
// that are not JSON are skipped.
func (s *Store) Audit(ctx context.Context, limit int) ([]AuditEntry, error) {
	data, err := s.FS.ReadFile(ctx, s.Layout.Audit())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", s.Layout.Audit(), err)
	}
	var out []AuditEntry
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var e AuditEntry
		if json.Unmarshal(sc.Bytes(), &e) == nil {
			out = append(out, e)
		}
	}
	if limit > 0 && len(out) > limit {
		out = out[len(out)-limit:]
	}
	return out, nil
}

// removeRelease removes a release's folder: the files it is known to hold first, all
// at once, then the folder with whatever else it holds.
func (s *Store) removeRelease(ctx context.Context, sha string) error {
	l := s.Layout
	if r, ok := s.FS.(folderRemover); ok {
		// Its two files and it in one batch; what else it holds (the app's TLS
		// files) leaves it there, and it goes the long way.
		if err := r.RemoveIn(ctx, l.Release(sha), path.Base(l.ComposeFile(sha)), path.Base(l.Info(sha))); err == nil {
			return nil
		}
	}
	if err := all(
		func() error { return s.FS.RemoveAll(ctx, l.ComposeFile(sha)) },
		func() error { return s.FS.RemoveAll(ctx, l.Info(sha)) },
	); err != nil {
		return err
	}
	return s.FS.RemoveAll(ctx, l.Release(sha))
}

// folderRemover is an FS that removes files and then their folder in one batch of
// requests (pkg/sshhost's); the folder's removal's error says whether it is gone.
type folderRemover interface {
	RemoveIn(ctx context.Context, dir string, files ...string) error
}

// Pruned is what Prune removed.
type Pruned struct {
	// Releases are the removed releases' shas.
	Releases []string
	// Images are the images ship built for them that no kept release uses: the
	// caller's to remove from the engine. Sorted.
	Images []string
}

// Said is what a prune that removed p's releases and untagged `untagged` of its
// images tells the user, shipctl and shipd alike; "" when no release was removed.
func (p Pruned) Said(untagged int) string {
	if len(p.Releases) == 0 {
		return ""
	}
	names := make([]string, len(p.Releases))
	for i, sha := range p.Releases {
		names[i] = Short(sha)
	}
	msg := fmt.Sprintf("removed %d old release(s): %s", len(names), strings.Join(names, ", "))
	if untagged > 0 {
		msg += fmt.Sprintf("; untagged %d image(s)", untagged)
	}
	return msg
}

// Prune removes old release folders: it keeps the newest keep releases (by the time in
// their release.json, at least one) and current. Images of other origin (postgres:16)
// are never in Pruned.Images: another app on the host may use them. The error names
// every folder that could not be removed.
func (s *Store) Prune(ctx context.Context, keep int, current string) (Pruned, error) {
	releases, err := s.Releases(ctx)
	if err != nil {
		return Pruned{}, fmt.Errorf("prune: %w", err)
	}
	return s.PruneListed(ctx, releases, keep, current)
}

// PruneListed is Prune of releases as Releases listed them a moment before (while the
// deploy ran, so that prune's own requests are only the removals). A release added
// since is not in the list and is kept.
func (s *Store) PruneListed(ctx context.Context, releases []Info, keep int, current string) (Pruned, error) {
	keep = max(keep, 1)
	var kept, gone []Info
	for i, r := range releases {
		if i < keep || r.SHA == current {
			kept = append(kept, r)
		} else {
			gone = append(gone, r)
		}
	}
	used := map[string]bool{}
	for _, r := range kept {
		for _, ref := range r.Built {
			used[ref] = true
		}
	}
	var out Pruned
	var errs []string
	unused := map[string]bool{}
	removed := make([]error, len(gone))
	removes := make([]func() error, len(gone))
	for i, r := range gone {
		removes[i] = func() error {
			removed[i] = s.removeRelease(ctx, r.SHA)
			return nil
		}
	}
	_ = all(removes...)
	for i, r := range gone {
		if err := removed[i]; err != nil {
			errs = append(errs, fmt.Sprintf("remove %s: %v", s.Layout.Release(r.SHA), err))
			continue
		}
		out.Releases = append(out.Releases, r.SHA)
		for _, ref := range r.Built {
			if !used[ref] && !unused[ref] {
				unused[ref] = true
				out.Images = append(out.Images, ref)
			}
		}
	}
	sort.Strings(out.Images)
	if len(errs) > 0 {
		return out, fmt.Errorf("prune: %s", strings.Join(errs, "; "))
	}
	return out, nil
}

// File is a file of a release beside its compose file (the app's own TLS certificate
// and key), written mode 0600.
type File struct {
	Name string // a plain name in the release's folder, e.g. "tls-cert.pem"
	Data []byte
}

// validFileName accepts a plain file name that is not one of the release's own.
func validFileName(name string) bool {
	return name != "" && name != "." && name != ".." && !strings.ContainsAny(name, "/\\\x00") &&
		name != "docker-compose.yml" && name != "release.json"
}

// The app's own certificate and key in a release's folder (ship.yaml's environment
// tls: {cert, key}): shipd serves them for the names the certificate holds.
const (
	TLSCertFile = "tls-cert.pem"
	TLSKeyFile  = "tls-key.pem"
)
