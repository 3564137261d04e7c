package release

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"sync"
)

// Upload writes releases/<info.SHA>/docker-compose.yml (mode 0600), release.json and
// the release's extra files (0600). They are staged in .tmp/release-<random>/ and the
// folder renamed into place, so that releases/ never holds a partial file even when
// the connection is cut. A release the host has already keeps its compose file (an
// identical one: another is refused, nothing changed) and gets its release.json
// replaced in one step, keeping its CurrentSince.
//
// Upload looks first (Look: one step of reads, and the stage made); a deploy that
// looked in its preflight calls UploadLooked with that Look and saves the step.
func (s *Store) Upload(ctx context.Context, info Info, compose []byte, extra ...File) error {
	return s.UploadLooked(ctx, nil, false, info, compose, extra...)
}

// UploadLooked is Upload from what lk saw (nil, or a Look of another release: it
// looks now). It takes two steps, each of requests that go out together: the files
// written into the stage, current's new symlink made beside it (for SwitchCurrent),
// what a cut-off run left under .tmp/ removed (and releases/ made when the look found
// none); then the rename that puts the release (or a release the host has, its
// release.json) in place. Without a stage (a host's first deploy: no .tmp/ yet) the
// stage is made before the writes.
//
// With recordLater, a release the host has keeps its release.json as it is until
// the run records its result (UpdateInfo, StageInfo, SetResult write info then, with
// the result): its upload is the symlink and the sweep alone, one step that writes
// nothing the run waits on. A run that records its own result through this Store
// (the agentless deploy) saves the write and its rename; shipd records from what is
// on the host, so a deploy through it uploads release.json. A connection cut for good
// before the record leaves that release.json as the run found it.
func (s *Store) UploadLooked(ctx context.Context, lk *Look, recordLater bool, info Info, compose []byte, extra ...File) error {
	for _, f := range extra {
		if !validFileName(f.Name) {
			return fmt.Errorf("upload: %q is not a release file's name", f.Name)
		}
	}
	if lk == nil || lk.SHA != info.SHA {
		lk = s.Look(ctx, info.SHA)
	}
	if lk.infoErr == nil {
		info.CurrentSince = lk.info.CurrentSince
	}
	u := &upload{s: s, lk: lk, info: info, compose: compose, later: recordLater && lk.infoErr == nil, linkLater: recordLater}
	there, err := lk.hasRelease()
	if err != nil {
		return fmt.Errorf("upload: list %s: %w", s.Layout.Releases(), err)
	}
	u.there = there
	if err := u.write(ctx, extra); err != nil {
		return err
	}
	return u.place(ctx)
}

// upload is one Upload under way.
type upload struct {
	s       *Store
	lk      *Look
	info    Info
	compose []byte
	there   bool // releases/<sha>/ is there
	linked  bool // the symlink for SwitchCurrent is staged
	// linkLater: the symlink is made with the switch (SwitchSteps), in the run's
	// sequence, not here (UploadLooked's recordLater: the run switches through this
	// Store).
	linkLater bool
	// later: the host has the release, and its release.json is written with the run's
	// result (UploadLooked's recordLater).
	later bool
}

// write stages the files and the symlink, makes releases/ when it is not there and
// sweeps .tmp/, at once. A host that has the release (its release.json was read)
// never gets its files rewritten, so only release.json is staged then, and nothing is
// left in the stage for the next sweep.
func (u *upload) write(ctx context.Context, extra []File) error {
	s, l, lk, sha := u.s, u.s.Layout, u.lk, u.info.SHA
	infoJSON, err := marshalInfo(u.info)
	if err != nil {
		return err
	}
	files := append([]File{{Name: "docker-compose.yml", Data: u.compose}, {Name: "release.json", Data: infoJSON}}, extra...)
	switch {
	case u.later && errors.Is(lk.composeErr, fs.ErrNotExist):
		files = files[:1] // the compose file it lost, put back
	case u.later:
		files = nil
	case lk.infoErr == nil:
		files = files[1:2]
	}
	steps := append(s.sweeps(ctx, lk), func() error { return u.stageFiles(ctx, files) })
	if !u.linkLater {
		steps = append(steps, func() error {
			// The symlink SwitchCurrent renames over current, made now; it is made
			// again then when this one fails.
			u.linked = s.FS.Symlink(ctx, CurrentLink(sha), lk.link) == nil
			return nil
		})
	}
	if errors.Is(lk.releasesErr, fs.ErrNotExist) {
		steps = append(steps, func() error {
			if err := s.FS.MkdirAll(ctx, l.Releases()); err != nil {
				return fmt.Errorf("create %s: %w", l.Releases(), err)
			}
			return nil
		})
	}
	if err := all(steps...); err != nil {
		return fmt.Errorf("upload: %w", err)
	}
	return nil
}

// stageFiles writes files into the stage, all at once; the stage is made first when
// the look could not make it.
func (u *upload) stageFiles(ctx context.Context, files []File) error {
	s, lk := u.s, u.lk
	if len(files) == 0 {
		return nil
	}
	if lk.stageErr != nil {
		if err := s.inTmp(ctx, func() error { return s.FS.Mkdir(ctx, lk.stage) }); err != nil {
			return fmt.Errorf("create %s: %w", lk.stage, err)
		}
		lk.stageErr = nil
	}
	writes := make([]func() error, len(files))
	for i, f := range files {
		mode := fs.FileMode(0o600)
		if f.Name == "release.json" {
			mode = 0o644
		}
		writes[i] = func() error {
			if err := s.FS.WriteFile(ctx, path.Join(lk.stage, f.Name), f.Data, mode); err != nil {
				return fmt.Errorf("upload %s: %w", f.Name, err)
			}
			return nil
		}
	}
	return all(writes...)
}

// place renames the stage into releases/ for a new release, or updates the one the
// host has (keepRelease).
func (u *upload) place(ctx context.Context) error {
	s, l, lk, sha := u.s, u.s.Layout, u.lk, u.info.SHA
	if lk.infoErr != nil && !u.there {
		if err := s.FS.Rename(ctx, lk.stage, l.Release(sha)); err != nil {
			return fmt.Errorf("move the upload to %s: %w", l.Release(sha), err)
		}
		s.remember(u.info, u.switchLink(), "")
		return nil
	}
	staged := lk.infoErr != nil || (u.later && errors.Is(lk.composeErr, fs.ErrNotExist))
	if err := s.keepRelease(ctx, sha, lk.stage, u.compose, lk.compose, lk.composeErr, staged, !u.later); err != nil {
		clean := context.WithoutCancel(ctx)
		_ = all(func() error { return s.FS.RemoveAll(clean, lk.stage) }, func() error { return s.FS.RemoveAll(clean, lk.link) })
		return err
	}
	// The emptied stage goes with the run's end (LeftoverSteps), or with the next
	// upload's sweep of .tmp/.
	s.remember(u.info, u.switchLink(), lk.Stage())
	return nil
}

// switchLink is current's new symlink as the upload leaves it.
func (u *upload) switchLink() switchLink {
	switch {
	case u.linkLater:
		return switchLink{path: u.lk.link}
	case u.linked:
		return switchLink{path: u.lk.link, made: true}
	}
	return switchLink{}
}

// keepRelease updates a release the host has from the upload staged in stage: its
// compose file is never rewritten. Its name says what the file holds, so the same
// name with another file is a host's file changed by hand (or a release of before
// names had a hash). Its release.json is replaced from the stage with info. staged
// says the compose file was staged; a release missing its compose file gets it staged
// now, when it was not.
func (s *Store) keepRelease(ctx context.Context, sha, stage string, compose, have []byte, haveErr error, staged, info bool) error {
	l := s.Layout
	switch {
	case errors.Is(haveErr, fs.ErrNotExist):
		to, from := l.ComposeFile(sha), path.Join(stage, "docker-compose.yml")
		if !staged {
			if err := s.FS.WriteFile(ctx, from, compose, 0o600); err != nil {
				return fmt.Errorf("upload docker-compose.yml: %w", err)
			}
		}
		if err := s.FS.Rename(ctx, from, to); err != nil {
			return fmt.Errorf("replace %s: %w", to, err)
		}
	case haveErr != nil:
		return fmt.Errorf("read %s: %w", l.ComposeFile(sha), haveErr)
	case !bytes.Equal(have, compose):
		return fmt.Errorf("%s holds another compose file than release %s's: a release on the host is never rewritten; move the folder away (or deploy with another commit)", l.ComposeFile(sha), Short(sha))
	}
	if !info {
		return nil
	}
	to := l.Info(sha)
	if err := s.FS.Rename(ctx, path.Join(stage, "release.json"), to); err != nil {
		return fmt.Errorf("replace %s: %w", to, err)
	}
	return nil
}

// remember keeps release.json as Upload wrote it, for UpdateInfo, the symlink it
// staged or left to the switch, for SwitchCurrent and SwitchSteps, and the emptied
// stage ("" none), for LeftoverSteps.
func (s *Store) remember(info Info, link switchLink, stage string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.uploaded == nil {
		s.uploaded = map[string]Info{}
		s.links = map[string]switchLink{}
		s.stages = map[string]string{}
	}
	s.uploaded[info.SHA] = info
	if link.path != "" {
		s.links[info.SHA] = link
	}
	if stage != "" {
		s.stages[info.SHA] = stage
	}
}

// stagedLink is the symlink to sha that Upload staged under .tmp/ (made) or left to
// the switch, taken; "" none.
func (s *Store) stagedLink(sha string) (link string, made bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.links[sha]
	delete(s.links, sha)
	return l.path, l.made
}

// all runs fns at once and waits for them: their requests go out together. The error
// joins theirs.
func all(fns ...func() error) error {
	errs := make([]error, len(fns))
	var wg sync.WaitGroup
	for i, fn := range fns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = fn()
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// inTmp runs fn, which writes under .tmp/; when that fails because .tmp/ is not
// there, it makes .tmp/ and runs fn again. .tmp/ is there on every deploy but a host's
// first, and a request is saved.
func (s *Store) inTmp(ctx context.Context, fn func() error) error {
	err := fn()
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := s.FS.MkdirAll(ctx, s.Layout.Tmp()); err != nil {
		return fmt.Errorf("create %s: %w", s.Layout.Tmp(), err)
	}
	return fn()
}
