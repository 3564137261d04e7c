package release

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path"
)

// Look is what a deploy needs to know of an app's folder, read in one step under the
// lock, before anything changes: where current points (and its release.json, for the
// check that the folder is the environment's), what the host has of the release
// about to be uploaded (release.json, compose file, folder), what is under releases/
// and .tmp/; and the upload's stage, made then. Upload goes on from it and asks
// nothing again, so that over SFTP its own requests are the writes and the renames.
type Look struct {
	// SHA is the release it was taken for.
	SHA string
	// Current is the release current points at ("" none); CurrentErr is why it could
	// not be read.
	Current    string
	CurrentErr error
	// CurrentInfo is current's release.json, read through the symlink at the same time
	// (CurrentInfoErr when it could not be: no current, or no release.json).
	CurrentInfo    Info
	CurrentInfoErr error

	info        Info  // the release's release.json
	infoErr     error // nil: the host has the release
	compose     []byte
	composeErr  error
	releases    map[string]bool // folders under releases/
	releasesErr error
	tmp         []string // entries under .tmp/
	tmpErr      error
	stage, link string // the upload's folder and current's new symlink, under .tmp/
	stageErr    error  // the stage could not be made (no .tmp/ yet): Upload makes it
}

// Stage is the folder under .tmp/ the look made for the upload; "" when it made none.
// A deploy that ends before its upload removes it (else the next upload's sweep does).
func (lk *Look) Stage() string {
	if lk == nil || lk.stageErr != nil {
		return ""
	}
	return lk.stage
}

// Look reads what a deploy of sha needs to know, all at once (over SFTP, one round
// trip for the lot), and makes the upload's stage under .tmp/. The errors of the reads
// stay in the Look for the ones that need them: current's is Look.CurrentErr.
func (s *Store) Look(ctx context.Context, sha string) *Look {
	l := s.Layout
	lk := &Look{SHA: sha, stage: path.Join(l.Tmp(), "release-"+TempSuffix()), link: path.Join(l.Tmp(), "current-"+TempSuffix())}
	_ = all(
		func() error { lk.Current, lk.CurrentErr = s.Current(ctx); return nil },
		func() error {
			// Through the symlink: no wait for its target.
			data, err := s.FS.ReadFile(ctx, path.Join(l.Current(), path.Base(l.Info(sha))))
			if err == nil {
				err = json.Unmarshal(data, &lk.CurrentInfo)
			}
			lk.CurrentInfoErr = err
			return nil
		},
		func() error { lk.info, lk.infoErr = s.Info(ctx, sha); return nil },
		func() error { lk.compose, lk.composeErr = s.FS.ReadFile(ctx, l.ComposeFile(sha)); return nil },
		func() error {
			entries, err := s.FS.ReadDir(ctx, l.Releases())
			lk.releasesErr = err
			lk.releases = map[string]bool{}
			for _, e := range entries {
				if e.IsDir() {
					lk.releases[e.Name()] = true
				}
			}
			return nil
		},
		func() error {
			entries, err := s.FS.ReadDir(ctx, l.Tmp())
			lk.tmpErr = err
			for _, e := range entries {
				lk.tmp = append(lk.tmp, e.Name())
			}
			return nil
		},
		func() error { lk.stageErr = s.FS.Mkdir(ctx, lk.stage); return nil },
	)
	if lk.Current == "" && lk.CurrentErr == nil {
		lk.CurrentInfo, lk.CurrentInfoErr = Info{}, fs.ErrNotExist
	}
	return lk
}

// hasRelease says whether releases/<sha>/ is there (as a folder), or the error of
// listing releases/.
func (lk *Look) hasRelease() (bool, error) {
	switch {
	case errors.Is(lk.releasesErr, fs.ErrNotExist):
		return false, nil
	case lk.releasesErr != nil:
		return false, lk.releasesErr
	}
	return lk.releases[lk.SHA], nil
}

// sweeps are the removals of what a cut-off run left under .tmp/ (all but the stage
// and the link).
func (s *Store) sweeps(ctx context.Context, lk *Look) []func() error {
	if lk.tmpErr != nil && !errors.Is(lk.tmpErr, fs.ErrNotExist) {
		return []func() error{func() error { return fmt.Errorf("empty %s: %w", s.Layout.Tmp(), lk.tmpErr) }}
	}
	var out []func() error
	for _, name := range lk.tmp {
		if name == path.Base(lk.stage) || name == path.Base(lk.link) {
			continue
		}
		out = append(out, func() error {
			if err := s.FS.RemoveAll(ctx, path.Join(s.Layout.Tmp(), name)); err != nil {
				return fmt.Errorf("empty %s: %w", s.Layout.Tmp(), err)
			}
			return nil
		})
	}
	return out
}
