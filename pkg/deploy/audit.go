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

	"github.com/shipdeploy/ship/pkg/redact"
	"github.com/shipdeploy/ship/pkg/release"
)

// appendAudit adds one line to the host's audit.log (O_APPEND, so concurrent writers
// never interleave within a line).
func appendAudit(ctx context.Context, f Files, l release.Layout, e release.AuditEntry, r *redact.Redactor) error {
	if e.Time.IsZero() {
		e.Time = time.Now().UTC()
	}
	e.Error = r.String(e.Error)
	e.Reason = r.String(e.Reason)
	data, err := json.Marshal(e)
	if err != nil {
		return err
	}
	if err := f.Append(ctx, l.Audit(), append(data, '\n')); err != nil {
		return fmt.Errorf("append to %s: %w", l.Audit(), err)
	}
	return nil
}

// readAudit reads a host's audit.log, oldest first; the last limit lines when limit > 0.
// Lines that are not JSON are skipped.
func readAudit(ctx context.Context, f Files, l release.Layout, limit int) ([]release.AuditEntry, error) {
	data, err := f.ReadFile(ctx, l.Audit())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", l.Audit(), err)
	}
	var out []release.AuditEntry
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var e release.AuditEntry
		if json.Unmarshal(sc.Bytes(), &e) == nil {
			out = append(out, e)
		}
	}
	if limit > 0 && len(out) > limit {
		out = out[len(out)-limit:]
	}
	return out, nil
}
