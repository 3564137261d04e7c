package deploy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"time"
)

// Audit events.
const (
	AuditDeploy   = "deploy"
	AuditRollback = "rollback"
	AuditLock     = "lock"
	AuditUnlock   = "unlock"
)

// AuditEntry is one line of a host's audit.log.
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
	// Result is a HostResult's Result for deploy and rollback, "ok" otherwise.
	Result string `json:"result"`
	// Current is the release current after the event.
	Current string `json:"current,omitempty"`
	Error   string `json:"error,omitempty"`
	Reason  string `json:"reason,omitempty"`
}

// appendAudit adds one line to the host's audit.log (O_APPEND, so concurrent writers
// never interleave within a line).
func appendAudit(ctx context.Context, f Files, l layout, e AuditEntry, r *Redactor) error {
	if e.Time.IsZero() {
		e.Time = time.Now().UTC()
	}
	e.Error = r.String(e.Error)
	e.Reason = r.String(e.Reason)
	data, err := json.Marshal(e)
	if err != nil {
		return err
	}
	if err := f.Append(ctx, l.audit(), append(data, '\n')); err != nil {
		return fmt.Errorf("append to %s: %w", l.audit(), err)
	}
	return nil
}

// readAudit reads a host's audit.log, oldest first; the last limit lines when limit > 0.
// Lines that are not JSON are skipped.
func readAudit(ctx context.Context, f Files, l layout, limit int) ([]AuditEntry, error) {
	data, err := f.ReadFile(ctx, l.audit())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", l.audit(), err)
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
