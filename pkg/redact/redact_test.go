package redact

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRedactor(t *testing.T) {
	r := New("short", "a-long-secret", "a-long-secret-and-more")
	tests := []struct{ in, want string }{
		{"short is not scrubbed", "short is not scrubbed"},
		{"token=a-long-secret;", "token=[redacted];"},
		{"a-long-secret-and-more", "[redacted]"},
		{"nothing here", "nothing here"},
	}
	for _, tt := range tests {
		if got := r.String(tt.in); got != tt.want {
			t.Errorf("String(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	if r.Error(nil) != nil {
		t.Error("nil became an error")
	}
	err := r.Error(context.DeadlineExceeded)
	if err != context.DeadlineExceeded {
		t.Errorf("an error without secrets was wrapped: %v", err)
	}
	r.Also(func(s string) string { return strings.ReplaceAll(s, "pw123456", "***") })
	if got := r.String("pw123456"); got != "***" {
		t.Errorf("Also: %q", got)
	}
	var nilR *Redactor
	if nilR.String("a-long-secret") != "a-long-secret" || nilR.Len() != 0 || nilR.AddEnvFile("/nowhere") != nil {
		t.Error("a nil Redactor scrubs")
	}
}

func TestRedactorError(t *testing.T) {
	r := New("a-long-secret")
	err := r.Error(fmt.Errorf("connect with a-long-secret: %w", context.Canceled))
	if err.Error() != "connect with [redacted]: context canceled" {
		t.Errorf("Error() = %q", err)
	}
	if !errors.Is(err, context.Canceled) {
		t.Error("the scrubbed error no longer matches what it wraps")
	}
}

func TestAddEnvFile(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, ".env.prod")
	if err := os.WriteFile(file, []byte("# a comment\nDB_PASSWORD=hunter2-hunter2\nPORT=80\nexport TOKEN='tok-123456789'\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := New()
	if err := r.AddEnvFile(file); err != nil {
		t.Fatal(err)
	}
	if got := r.String("db hunter2-hunter2 tok-123456789 port 80"); got != "db [redacted] [redacted] port 80" {
		t.Errorf("String = %q", got)
	}
	if err := r.AddEnvFile(filepath.Join(dir, "missing")); err != nil {
		t.Errorf("a missing file: %v", err)
	}
	bad := filepath.Join(dir, "bad")
	if err := os.WriteFile(bad, []byte("SECRET=\"unterminated-secret-value\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := r.AddEnvFile(bad); err != nil && strings.Contains(err.Error(), "unterminated-secret-value") {
		t.Errorf("the error quotes the file: %v", err)
	}
}
