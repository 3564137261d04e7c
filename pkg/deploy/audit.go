package deploy

import (
	"context"

	"github.com/shipdeploy/ship/pkg/redact"
	"github.com/shipdeploy/ship/pkg/release"
)

// appendAudit adds one line to the host's audit.log, its error and reason redacted.
func appendAudit(ctx context.Context, f release.FS, l release.Layout, e release.AuditEntry, r *redact.Redactor) error {
	e.Error = r.String(e.Error)
	e.Reason = r.String(e.Reason)
	return (&release.Store{FS: f, Layout: l}).AppendAudit(ctx, e)
}
