// Package vcs reads what ship needs from the application's git checkout: the commit,
// whether the tree is clean, and a short hash of the uncommitted change.
package vcs

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
)

// ErrNotRepo means the folder is not inside a git checkout.
var ErrNotRepo = errors.New("not a git checkout")

// Info describes the checkout's HEAD.
type Info struct {
	SHA     string // full commit sha of HEAD
	Subject string // its commit subject
	Clean   bool   // no uncommitted change to tracked files and no untracked, unignored file
	Diff    string // short hash of the uncommitted change ("" when clean)
	GitDir  string // absolute path of the .git folder
	Top     string // the checkout's top folder
}

// Version is the tag an image of this tree gets: the sha, or <sha>-dirty-<diff hash>.
func (i Info) Version() string {
	if i.Clean {
		return i.SHA
	}
	return i.SHA + "-dirty-" + i.Diff
}

// Short is the first 12 characters of the sha, for output.
func (i Info) Short() string {
	if len(i.SHA) > 12 {
		return i.SHA[:12]
	}
	return i.SHA
}

// Head reads the checkout that holds dir. Its git commands run at once, from dir: a
// rev-parse for the top folder, the .git folder and the commit, the commit's subject,
// the diff and the untracked files. When dir is below the top folder the last two are
// asked again from there (they must not depend on where the config is); when the
// rev-parse fails, headSlow asks one question at a time, to say what is missing.
func Head(ctx context.Context, dir string) (Info, error) {
	var out, logOut, diff, untracked string
	var errs [4]error
	var wg sync.WaitGroup
	wg.Go(func() {
		out, errs[0] = git(ctx, dir, "rev-parse", "--show-toplevel", "--absolute-git-dir", "--verify", "HEAD^{commit}")
	})
	wg.Go(func() { logOut, errs[1] = git(ctx, dir, "log", "-1", "--format=%H%x00%s", "HEAD") })
	wg.Go(func() { diff, errs[2] = git(ctx, dir, "diff", "HEAD", "--binary") })
	wg.Go(func() { untracked, errs[3] = git(ctx, dir, "ls-files", "--others", "--exclude-standard", "-z") })
	wg.Wait()
	if err := cancelled(ctx, errs[:]); err != nil {
		return Info{}, err
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if errs[0] != nil || len(lines) != 3 {
		return headSlow(ctx, dir)
	}
	info := Info{Top: lines[0], GitDir: lines[1], SHA: lines[2]}
	subject, ok := strings.CutPrefix(logOut, info.SHA+"\x00")
	if errs[1] != nil || !ok {
		// HEAD moved in between, or the log said more than asked: ask for the sha's.
		var err error
		if subject, err = git(ctx, dir, "log", "-1", "--format=%s", info.SHA); err != nil {
			return Info{}, err
		}
	}
	info.Subject = strings.TrimSpace(subject)
	if !sameDir(dir, info.Top) || errs[2] != nil || errs[3] != nil {
		errs[2], errs[3] = nil, nil
		wg.Go(func() { diff, errs[2] = git(ctx, info.Top, "diff", "HEAD", "--binary") })
		wg.Go(func() { untracked, errs[3] = git(ctx, info.Top, "ls-files", "--others", "--exclude-standard", "-z") })
		wg.Wait()
		if err := firstErr(errs[2:]); err != nil {
			return Info{}, err
		}
	}
	return info.withChange(diff, untracked), nil
}

// sameDir reports whether dir is top, git's top folder (symlinks resolved).
func sameDir(dir, top string) bool {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return false
	}
	real, err := filepath.EvalSymlinks(abs)
	return err == nil && real == top
}

// headSlow is Head one git command at a time, each failure told apart: not a checkout,
// or one without a commit yet.
func headSlow(ctx context.Context, dir string) (Info, error) {
	top, err := git(ctx, dir, "rev-parse", "--show-toplevel")
	if ctx.Err() != nil || errors.Is(err, context.Canceled) {
		return Info{}, err
	}
	if err != nil {
		return Info{}, fmt.Errorf("%s: %w", dir, ErrNotRepo)
	}
	info := Info{Top: strings.TrimSpace(top)}
	gitDir, err := git(ctx, dir, "rev-parse", "--absolute-git-dir")
	if err != nil {
		return Info{}, err
	}
	info.GitDir = strings.TrimSpace(gitDir)
	sha, err := git(ctx, dir, "rev-parse", "--verify", "HEAD^{commit}")
	if ctx.Err() != nil || errors.Is(err, context.Canceled) {
		return Info{}, err
	}
	if err != nil {
		return Info{}, fmt.Errorf("%s: the checkout has no commit yet; commit first", info.Top)
	}
	info.SHA = strings.TrimSpace(sha)
	subject, err := git(ctx, dir, "log", "-1", "--format=%s", info.SHA)
	if err != nil {
		return Info{}, err
	}
	info.Subject = strings.TrimSpace(subject)
	diff, err := git(ctx, info.Top, "diff", "HEAD", "--binary")
	if err != nil {
		return Info{}, err
	}
	untracked, err := git(ctx, info.Top, "ls-files", "--others", "--exclude-standard", "-z")
	if err != nil {
		return Info{}, err
	}
	return info.withChange(diff, untracked), nil
}

// withChange sets Clean and Diff from `git diff HEAD --binary` and the untracked files
// (`git ls-files --others -z`): the hash covers the diff, then each untracked file's
// name and content.
func (i Info) withChange(diff, untracked string) Info {
	if diff == "" && untracked == "" {
		i.Clean = true
		return i
	}
	h := sha256.New()
	io.WriteString(h, diff)
	for _, name := range strings.Split(strings.TrimRight(untracked, "\x00"), "\x00") {
		if name == "" {
			continue
		}
		fmt.Fprintf(h, "\x00untracked %s\x00", name)
		if data, err := os.ReadFile(filepath.Join(i.Top, name)); err == nil {
			h.Write(data)
		}
	}
	i.Diff = hex.EncodeToString(h.Sum(nil))[:12]
	return i
}

// firstErr is the first error of errs that is not nil: a cancellation before any
// other, so that Ctrl-C reads as one.
func firstErr(errs []error) error {
	if err := cancelled(context.Background(), errs); err != nil {
		return err
	}
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// cancelled is the first of errs that is a cancellation (Ctrl-C), or ctx's error.
func cancelled(ctx context.Context, errs []error) error {
	for _, err := range errs {
		if errors.Is(err, context.Canceled) {
			return err
		}
	}
	return ctx.Err()
}

// shortSHA is the first 12 characters of sha.
func shortSHA(sha string) string {
	if len(sha) > 12 {
		return sha[:12]
	}
	return sha
}

// Commit resolves rev (a sha, a prefix of one, a tag, a branch) in the checkout that
// holds dir to its full sha and subject.
func Commit(ctx context.Context, dir, rev string) (sha, subject string, err error) {
	if strings.HasPrefix(rev, "-") {
		return "", "", fmt.Errorf("--sha %q: not a commit", rev)
	}
	out, err := git(ctx, dir, "rev-parse", "--verify", "--quiet", rev+"^{commit}")
	if ctx.Err() != nil || errors.Is(err, context.Canceled) {
		return "", "", err
	}
	if err != nil {
		return "", "", fmt.Errorf("--sha %s: no such commit in %s", rev, dir)
	}
	sha = strings.TrimSpace(out)
	subject, err = git(ctx, dir, "log", "-1", "--format=%s", sha)
	if err != nil {
		return "", "", err
	}
	return sha, strings.TrimSpace(subject), nil
}

// FileAt is the content of file (a path on this machine, inside the checkout that
// holds dir) at commit sha.
func FileAt(ctx context.Context, dir, sha, file string) ([]byte, error) {
	top, err := git(ctx, dir, "rev-parse", "--show-toplevel")
	if err != nil {
		return nil, err
	}
	top = strings.TrimSpace(top)
	abs, err := filepath.Abs(file)
	if err != nil {
		return nil, err
	}
	if real, err := filepath.EvalSymlinks(filepath.Dir(abs)); err == nil {
		abs = filepath.Join(real, filepath.Base(abs))
	}
	if real, err := filepath.EvalSymlinks(top); err == nil {
		top = real
	}
	rel, err := filepath.Rel(top, abs)
	if err != nil || strings.HasPrefix(rel, "..") {
		return nil, fmt.Errorf("%s is not in the checkout %s", file, top)
	}
	out, err := git(ctx, dir, "show", sha+":"+filepath.ToSlash(rel))
	if err != nil {
		return nil, fmt.Errorf("%s at %s: the commit has no such file", filepath.ToSlash(rel), shortSHA(sha))
	}
	return []byte(out), nil
}

// Origin says where a deploy comes from, for release.json and audit.log: the branch
// HEAD tracks ("origin/main"), else the local branch and machine ("main on
// build-7"), else the machine.
func Origin(ctx context.Context, dir string) string {
	host, _ := os.Hostname()
	if up, err := git(ctx, dir, "rev-parse", "--abbrev-ref", "--symbolic-full-name", "@{upstream}"); err == nil && strings.TrimSpace(up) != "" {
		return strings.TrimSpace(up)
	}
	if branch, err := git(ctx, dir, "rev-parse", "--abbrev-ref", "HEAD"); err == nil {
		if b := strings.TrimSpace(branch); b != "" && b != "HEAD" {
			return b + " on " + host
		}
	}
	return host
}

func git(ctx context.Context, dir string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "git", args...)
	cmd.Dir = dir
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			// Killed because the command was cancelled: say so (exit 130), not
			// "signal: killed".
			return "", fmt.Errorf("git %s: %w", strings.Join(args, " "), ctx.Err())
		}
		if interrupted(err) {
			// Ctrl-C in a terminal reaches git too (one process group), often
			// before shipctl has cancelled its context: that is the user's
			// cancellation as well (exit 130), not a failure of git.
			return "", fmt.Errorf("git %s: interrupted: %w", strings.Join(args, " "), context.Canceled)
		}
		return "", fmt.Errorf("git %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out.String(), nil
}

// interrupted reports whether err is a process's death by SIGINT or SIGTERM.
func interrupted(err error) bool {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return false
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && (ws.Signal() == syscall.SIGINT || ws.Signal() == syscall.SIGTERM)
}
