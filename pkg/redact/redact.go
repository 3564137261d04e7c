// Package redact scrubs known secret values (env_file values, registry passwords) from
// text and errors: the last line of defence before anything is shown or written.
package redact

import (
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"

	"github.com/compose-spec/compose-go/v2/dotenv"
)

// MinSecretLen is the length below which a value is not scrubbed: shorter values
// ("1", "true", "8080") are too common in ordinary text to be replaced everywhere.
const MinSecretLen = 6

// Redacted replaces a secret in text.
const Redacted = "[redacted]"

// Redactor scrubs known secret values from text: the values of env_file files, which
// compose interpolates into the release's compose file, and whatever else it is told.
// It is the last line of defence: the engine's errors and a container's log lines can
// echo a container's configuration. The zero value and nil scrub nothing. Safe for use
// from several goroutines.
type Redactor struct {
	mu      sync.RWMutex
	secrets []string // longest first, so that a secret containing another goes whole
	extra   []func(string) string
}

// New returns a Redactor for the given values.
func New(secrets ...string) *Redactor {
	r := &Redactor{}
	r.Add(secrets...)
	return r
}

// Add makes the values secret too; those shorter than MinSecretLen are ignored.
func (r *Redactor) Add(secrets ...string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	seen := map[string]bool{}
	for _, s := range r.secrets {
		seen[s] = true
	}
	for _, s := range secrets {
		s = strings.TrimSpace(s)
		if len(s) < MinSecretLen || seen[s] {
			continue
		}
		seen[s] = true
		r.secrets = append(r.secrets, s)
	}
	sort.Slice(r.secrets, func(i, j int) bool { return len(r.secrets[i]) > len(r.secrets[j]) })
}

// Also makes fn part of the scrubbing, e.g. the registry keychain's own Redact.
func (r *Redactor) Also(fn func(string) string) {
	if fn == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.extra = append(r.extra, fn)
}

// AddEnvFile makes every value of a KEY=VALUE file secret. A file that is not there is
// no error (compose will say so when it needs it); on a nil Redactor it does nothing.
func (r *Redactor) AddEnvFile(path string) error {
	if r == nil {
		return nil
	}
	data, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read env_file: %w", err)
	}
	vals, err := dotenv.UnmarshalBytesWithLookup(data, func(string) (string, bool) { return "", false })
	if err != nil {
		// The parser's message can quote the file, and the file holds secrets.
		return fmt.Errorf("env_file %s: not KEY=VALUE lines", path)
	}
	for _, v := range vals {
		r.Add(v)
	}
	return nil
}

// Len is how many secrets the Redactor knows.
func (r *Redactor) Len() int {
	if r == nil {
		return 0
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.secrets)
}

// String returns s with every secret replaced by Redacted.
func (r *Redactor) String(s string) string {
	if r == nil {
		return s
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	for _, secret := range r.secrets {
		if strings.Contains(s, secret) {
			s = strings.ReplaceAll(s, secret, Redacted)
		}
	}
	for _, fn := range r.extra {
		s = fn(s)
	}
	return s
}

// Error returns err with every secret scrubbed from its message; errors.Is and
// errors.As still see the original.
func (r *Redactor) Error(err error) error {
	if r == nil {
		return err
	}
	return Error(err, r.String)
}

// Error returns err with its message passed through scrub; errors.Is and errors.As
// still see the original. An error scrub leaves as it was is returned as it is.
func Error(err error, scrub func(string) string) error {
	if err == nil {
		return err
	}
	msg := scrub(err.Error())
	if msg == err.Error() {
		return err
	}
	return &redactedError{msg: msg, err: err}
}

// redactedError is an error with its message scrubbed, wrapping the original.
type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }
