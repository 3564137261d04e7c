// Package release defines what shipctl (pkg/deploy) and shipd (pkg/agent) both keep in
// an app's folder on a host (DESIGN.md, "On the host"), and picks the release a
// rollback goes back to. Store reads and writes them through a small file-system
// interface, FS: over SFTP for shipctl (pkg/sshhost), the local file system for
// shipd (OS).
//
//	<root>/releases/<name>/docker-compose.yml  the resolved compose file (mode 0600)
//	<root>/releases/<name>/release.json        Info
//	<root>/current -> releases/<name>          the release that serves
//	<root>/audit.log                           one AuditEntry per line
//	<root>/.lock/holder.json                   who holds the app's lock
//	<root>/.tmp/                               staging for atomic renames
//
// A release's name is <version>-<hash> (NameFor): the version is the commit's sha
// (<sha>-dirty-<hash> for a tree with uncommitted changes), the hash the first 8 hex
// digits of the SHA-256 of its resolved compose file. A release on the host is never
// rewritten: the same commit deployed with another environment (an env_file edit, a
// variable used in interpolation) is another release, and an identical redeploy is the
// same one. Hosts deployed before this naming have releases named by the version
// alone; they are read, listed and rolled back to like the others.
package release

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"path"
	"strings"
	"time"

	"github.com/shipdeploy/ship/pkg/event"
)

// Layout is an app's folder on a host; its methods name the files in it.
type Layout string

// Releases is the folder that holds one folder per release.
func (l Layout) Releases() string { return path.Join(string(l), "releases") }

// Release is the folder of the release sha.
func (l Layout) Release(sha string) string { return path.Join(string(l), "releases", sha) }

// ComposeFile is the release's resolved compose file.
func (l Layout) ComposeFile(sha string) string {
	return path.Join(l.Release(sha), "docker-compose.yml")
}

// Info is the release's release.json.
func (l Layout) Info(sha string) string { return path.Join(l.Release(sha), "release.json") }

// Current is the symlink to the release that serves (see CurrentLink).
func (l Layout) Current() string { return path.Join(string(l), "current") }

// Lock is the folder whose creation takes the app's lock.
func (l Layout) Lock() string { return path.Join(string(l), ".lock") }

// Holder is the file inside Lock that says who holds it.
func (l Layout) Holder() string { return path.Join(string(l), ".lock", "holder.json") }

// Audit is the app's audit.log.
func (l Layout) Audit() string { return path.Join(string(l), "audit.log") }

// Tmp is where uploads and new symlinks are staged before they are renamed into place,
// so that nothing half-written ever appears under releases/.
func (l Layout) Tmp() string { return path.Join(string(l), ".tmp") }

// CurrentLink is what Current holds for sha: a path relative to the app's folder.
func CurrentLink(sha string) string { return "releases/" + sha }

// HashLen is the number of hex digits of the compose file's hash in a release's name.
const HashLen = 8

// NameFor is the name of the release of version whose resolved compose file is file
// (as resolved with the version alone as the release's folder, so that the name does
// not depend on itself): <version>-<hash>. The release's other files (extra: the
// app's own TLS certificate and key) are hashed with it, so that a new certificate is
// a new release too; without them the hash is the compose file's alone.
func NameFor(version string, file []byte, extra ...File) string {
	h := sha256.New()
	h.Write(file)
	for _, f := range extra {
		h.Write([]byte{0})
		h.Write([]byte(f.Name))
		h.Write([]byte{0})
		h.Write(f.Data)
	}
	return version + "-" + hex.EncodeToString(h.Sum(nil))[:HashLen]
}

// Results of a release, in release.json.
const (
	Uploaded = "uploaded" // uploaded; the deploy has not finished (or was cut off)
	Deployed = "deployed" // healthy and made current (it may have been replaced since)
	Failed   = "failed"   // did not become current
)

// Info is a release's release.json: written by shipctl at upload, its Result and
// CurrentSince updated by whichever of shipctl and shipd made it current.
type Info struct {
	// SHA is the release's name: its folder under releases/ (NameFor).
	SHA string `json:"sha"`
	// Version is the commit's sha (with a dirty tree's suffix) the release was made
	// from: its images' tag. Empty in releases made before names had a hash.
	Version string `json:"version,omitempty"`
	// Env is the environment of ship.yaml that deployed it: a deploy of another
	// environment to the same folder is refused. Empty in older releases.
	Env     string    `json:"env,omitempty"`
	Subject string    `json:"subject,omitempty"`
	Time    time.Time `json:"time"`           // when it was uploaded
	Who     string    `json:"who"`            // user@hostname that deployed it
	From    string    `json:"from,omitempty"` // the git remote branch, or the machine, it came from
	Result  string    `json:"result"`
	// CurrentSince is when it last became current (deploy or rollback).
	CurrentSince time.Time `json:"current_since,omitzero"`
	Images       []string  `json:"images,omitempty"`
	Built        []string  `json:"built,omitempty"`
	// Jobs are the last runs of the release's pre-deploy jobs, one per job.
	Jobs []JobRun `json:"jobs,omitempty"`
}

// JobRun is how a pre-deploy job's last run ended, with its last lines of output
// (secrets scrubbed), for shipctl logs ENV JOB once its container is gone.
type JobRun struct {
	Service string    `json:"service"`
	Time    time.Time `json:"time"` // when it ended
	Code    int       `json:"exit_code"`
	Lines   []string  `json:"lines,omitempty"`
}

// SetJob records run as its job's last run.
func (i *Info) SetJob(run JobRun) {
	for k, j := range i.Jobs {
		if j.Service == run.Service {
			i.Jobs[k] = run
			return
		}
	}
	i.Jobs = append(i.Jobs, run)
}

// Audit events.
const (
	AuditDeploy   = "deploy"
	AuditRollback = "rollback"
	AuditLock     = "lock"
	AuditUnlock   = "unlock"
)

// AuditEntry is one line of audit.log.
type AuditEntry struct {
	Time  time.Time `json:"time"`
	Event string    `json:"event"`
	App   string    `json:"app"`
	Env   string    `json:"env"`
	Host  string    `json:"host"`
	// SHA is the release the event is about; Prev the one current before it.
	SHA  string `json:"sha,omitempty"`
	Prev string `json:"prev,omitempty"`
	Who  string `json:"who"`
	From string `json:"from,omitempty"`
	// Result is the host's result for deploy and rollback, "ok" otherwise.
	Result event.Result `json:"result"`
	// Current is the release current after the event.
	Current string `json:"current,omitempty"`
	Error   string `json:"error,omitempty"`
	Reason  string `json:"reason,omitempty"`
	// Agent marks the lines shipd wrote.
	Agent string `json:"agent,omitempty"`
}

// RollbackTarget is the release `rollback [SHA]` goes back to on a host that has
// releases and whose current release is current: the one want names (its whole name,
// or a unique prefix of it or of its Short form: a commit's sha names its releases), or for want "", the previous release (of the others that
// were ever current, the one made current last).
func RollbackTarget(releases []Info, current, want string) (string, error) {
	var have []string
	for _, r := range releases {
		have = append(have, Short(r.SHA))
	}
	list := "it has none"
	if len(have) > 0 {
		list = "it has " + strings.Join(have, ", ")
	}
	if want == "" {
		prev, ok := previous(releases, current)
		if !ok {
			return "", fmt.Errorf("no previous release to roll back to (current: %s; %s)", Name(current), list)
		}
		return prev.SHA, nil
	}
	var match []string
	for _, r := range releases {
		if r.SHA == want {
			return r.SHA, nil
		}
		if strings.HasPrefix(r.SHA, want) || strings.HasPrefix(Short(r.SHA), want) {
			match = append(match, r.SHA)
		}
	}
	switch len(match) {
	case 0:
		return "", fmt.Errorf("release %s is not on the host (%s)", want, list)
	case 1:
		return match[0], nil
	}
	for i := range match {
		match[i] = Short(match[i])
	}
	return "", fmt.Errorf("%q names %d releases (%s); give more of the release's name", want, len(match), strings.Join(match, ", "))
}

// previous is, of the releases other than current that were ever current, the one
// made current last.
func previous(releases []Info, current string) (Info, bool) {
	var best Info
	found := false
	for _, r := range releases {
		if r.SHA == current || r.CurrentSince.IsZero() {
			continue
		}
		if !found || r.CurrentSince.After(best.CurrentSince) {
			best, found = r, true
		}
	}
	return best, found
}

// Short is a release's name (or a sha) as output shows it: the commit's sha cut to 12
// characters, and whatever follows it whole (a dirty tree's suffix, the compose
// file's hash): <sha12>-<hash>, <sha12>-dirty-<hash>-<hash>.
func Short(sha string) string {
	head, tail, found := strings.Cut(sha, "-")
	if len(head) > 12 {
		head = head[:12]
	}
	if found {
		return head + "-" + tail
	}
	return head
}

// Name is how output names the release sha: Short, or "no release" for "".
func Name(sha string) string {
	if sha == "" {
		return "no release"
	}
	return Short(sha)
}
