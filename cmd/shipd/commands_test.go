package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCommands(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "shipd.yaml")
	os.WriteFile(bad, []byte("sockett: /run/x.sock\n"), 0o644)
	tests := []struct {
		args         []string
		code         int
		stdout, errs string
	}{
		{[]string{"--version"}, 0, "shipd ", ""},
		{[]string{"version"}, 0, "shipd ", ""},
		{nil, 2, "", "usage:"},
		{[]string{"deploy"}, 2, "", `unknown command "deploy"`},
		{[]string{"run", "--config", bad}, 2, "", "line 1: field sockett not found"},
		{[]string{"run", "--config", filepath.Join(t.TempDir(), "none.yaml")}, 2, "", "none.yaml"},
		{[]string{"run", "extra"}, 2, "", "unexpected arguments"},
	}
	for _, tt := range tests {
		var stdout, stderr bytes.Buffer
		code := run(tt.args, &stdout, &stderr)
		if code != tt.code || !strings.Contains(stdout.String(), tt.stdout) || !strings.Contains(stderr.String(), tt.errs) {
			t.Errorf("shipd %v: exit %d, stdout %q, stderr %q; want %d, %q, %q", tt.args, code, stdout.String(), stderr.String(), tt.code, tt.stdout, tt.errs)
		}
	}
}
