package release

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"sync"
)

// Upload writes releases/<info.SHA>/docker-compose.yml (mode 0600), release.json and
// the release's extra files (0600). They are staged in .tmp/release-<random>/ and the
// folder renamed into place, so that releases/ never holds a partial file even when
// the connection is cut. A release the host has already keeps its compose file (an
// identical one: another is refused, nothing changed) and gets its release.json
// replaced in one step, keeping its CurrentSince.
//
// The requests that do not depend on each other go out together (an FS over SFTP
// has them in flight at once): emptying .tmp/, making releases/, reading the
// release's release.json; then the files and what the host holds of the release;
// then the renames.
func (s *Store) Upload(ctx context.Context, info Info, compose []byte, extra ...File) error {
	for _, f := range extra {
		if !validFileName(f.Name) {
			return fmt.Errorf("upload: %q is not a release file's name", f.Name)
		}
	}
	l := s.Layout
	u := &upload{s: s, info: info, compose: compose,
		stage: path.Join(l.Tmp(), "release-"+TempSuffix()), link: path.Join(l.Tmp(), "current-"+TempSuffix())}
	// What a cut-off run left under .tmp/ is removed while the upload is staged there.
	swept := make(chan error, 1)
	go func() { swept <- s.sweepTmp(ctx, path.Base(u.stage), path.Base(u.link)) }()
	err := u.begin(ctx)
	if err == nil {
		err = u.write(ctx, extra)
	}
	if serr := <-swept; err == nil && serr != nil {
		err = fmt.Errorf("upload: %w", serr)
	}
	if err != nil {
		return err
	}
	return u.place(ctx)
}

// upload is one Upload under way.
type upload struct {
	s           *Store
	info        Info
	compose     []byte
	stage, link string
	oldErr      error  // reading the release's release.json: nil when the host has it
	there       error  // listing the release's folder (read when oldErr != nil)
	have        []byte // the host's compose file of the release
	haveErr     error
	linked      bool // the symlink for SwitchCurrent is staged
}

// begin makes the stage and releases/ and reads the release's release.json, at once.
func (u *upload) begin(ctx context.Context) error {
	s, l := u.s, u.s.Layout
	var old Info
	err := all(
		func() error {
			if err := s.inTmp(ctx, func() error { return s.FS.Mkdir(ctx, u.stage) }); err != nil {
				return fmt.Errorf("create %s: %w", u.stage, err)
			}
			return nil
		},
		func() error {
			if err := s.FS.MkdirAll(ctx, l.Releases()); err != nil {
				return fmt.Errorf("create %s: %w", l.Releases(), err)
			}
			return nil
		},
		func() error {
			old, u.oldErr = s.Info(ctx, u.info.SHA)
			return nil
		},
	)
	if u.oldErr == nil {
		u.info.CurrentSince = old.CurrentSince
	}
	return err
}

// write stages the files and the symlink and reads what the host holds of the
// release, at once. The host that has the release (its release.json was read) never
// gets its files rewritten, so only release.json is staged then, and nothing is left
// in the stage for the next sweep.
func (u *upload) write(ctx context.Context, extra []File) error {
	s, l, sha := u.s, u.s.Layout, u.info.SHA
	infoJSON, err := marshalInfo(u.info)
	if err != nil {
		return err
	}
	files := append([]File{{Name: "docker-compose.yml", Data: u.compose}, {Name: "release.json", Data: infoJSON}}, extra...)
	if u.oldErr == nil {
		files = files[1:2]
	}
	steps := []func() error{
		func() error {
			// The symlink SwitchCurrent renames over current, made now; it is made
			// again then when this one fails.
			u.linked = s.FS.Symlink(ctx, CurrentLink(sha), u.link) == nil
			return nil
		},
		func() error {
			if u.oldErr != nil {
				if _, u.there = s.FS.ReadDir(ctx, l.Release(sha)); u.there != nil {
					u.haveErr = u.there
					return nil
				}
			}
			u.have, u.haveErr = s.FS.ReadFile(ctx, l.ComposeFile(sha))
			return nil
		},
	}
	for _, f := range files {
		mode := fs.FileMode(0o600)
		if f.Name == "release.json" {
			mode = 0o644
		}
		steps = append(steps, func() error {
			if err := s.FS.WriteFile(ctx, path.Join(u.stage, f.Name), f.Data, mode); err != nil {
				return fmt.Errorf("upload %s: %w", f.Name, err)
			}
			return nil
		})
	}
	if err := all(steps...); err != nil {
		return fmt.Errorf("upload: %w", err)
	}
	return nil
}

// place renames the stage into releases/ for a new release, or updates the one the
// host has (keepRelease).
func (u *upload) place(ctx context.Context) error {
	s, l, sha := u.s, u.s.Layout, u.info.SHA
	switch {
	case u.oldErr != nil && errors.Is(u.there, fs.ErrNotExist):
		if err := s.FS.Rename(ctx, u.stage, l.Release(sha)); err != nil {
			return fmt.Errorf("move the upload to %s: %w", l.Release(sha), err)
		}
		s.remember(u.info, u.link, u.linked)
		return nil
	case u.there != nil:
		return fmt.Errorf("read %s: %w", l.Release(sha), u.there)
	}
	if err := s.keepRelease(ctx, sha, u.stage, u.compose, u.have, u.haveErr, u.oldErr != nil); err != nil {
		clean := context.WithoutCancel(ctx)
		_ = all(func() error { return s.FS.RemoveAll(clean, u.stage) }, func() error { return s.FS.RemoveAll(clean, u.link) })
		return err
	}
	// The emptied stage goes with the next upload's sweep of .tmp/.
	s.remember(u.info, u.link, u.linked)
	return nil
}

// keepRelease updates a release the host has from the upload staged in stage: its
// compose file is never rewritten. Its name says what the file holds, so the same
// name with another file is a host's file changed by hand (or a release of before
// names had a hash). Its release.json is replaced. staged says the compose file was
// staged too; a release missing its compose file gets it staged now, when it was not.
func (s *Store) keepRelease(ctx context.Context, sha, stage string, compose, have []byte, haveErr error, staged bool) error {
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
	to := l.Info(sha)
	if err := s.FS.Rename(ctx, path.Join(stage, "release.json"), to); err != nil {
		return fmt.Errorf("replace %s: %w", to, err)
	}
	return nil
}

// remember keeps release.json as Upload wrote it, for UpdateInfo, and the symlink it
// staged (when linked), for SwitchCurrent.
func (s *Store) remember(info Info, link string, linked bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.uploaded == nil {
		s.uploaded = map[string]Info{}
		s.links = map[string]string{}
	}
	s.uploaded[info.SHA] = info
	if linked {
		s.links[info.SHA] = link
	}
}

// stagedLink is the symlink to sha that Upload staged under .tmp/, taken; "" none.
func (s *Store) stagedLink(sha string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	link := s.links[sha]
	delete(s.links, sha)
	return link
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

// sweepTmp removes what is under .tmp/ but keep: ClearTmp beside writes into .tmp/.
func (s *Store) sweepTmp(ctx context.Context, keep ...string) error {
	entries, err := s.FS.ReadDir(ctx, s.Layout.Tmp())
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("empty %s: %w", s.Layout.Tmp(), err)
	}
	var removes []func() error
	for _, e := range entries {
		if slices.Contains(keep, e.Name()) {
			continue
		}
		removes = append(removes, func() error {
			p := path.Join(s.Layout.Tmp(), e.Name())
			if err := s.FS.RemoveAll(ctx, p); err != nil {
				return fmt.Errorf("empty %s: %w", s.Layout.Tmp(), err)
			}
			return nil
		})
	}
	return all(removes...)
}
