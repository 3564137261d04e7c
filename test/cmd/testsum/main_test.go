package main

import (
	"bytes"
	"strings"
	"testing"
)

// sample runs testsum on its fixture package (testdata/sample) with SAMPLE=what.
func sample(t *testing.T, what string, args ...string) (code int, out, errOut string) {
	t.Helper()
	t.Setenv("SAMPLE", what)
	var stdout, stderr bytes.Buffer
	code = run(append(append([]string{"-count=1"}, args...), "./testdata/sample"), &stdout, &stderr)
	t.Logf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout.String(), stderr.String())
	return code, stdout.String(), stderr.String()
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return lines[len(lines)-1]
}

func TestRun(t *testing.T) {
	tests := []struct {
		name     string
		sample   string
		args     []string
		code     int
		last     string
		want     []string // in stdout, in this order
		wantNot  []string
		wantSkip []string
	}{
		{
			name: "pass", sample: "", code: 0, last: "2 passed, 0 failed, 4 skipped",
			want:    []string{"ok  \tgithub.com/shipdeploy/ship/test/cmd/testsum/testdata/sample", "SKIPPED: 4 tests did not run"},
			wantNot: []string{"=== RUN", "--- PASS", "FAIL"},
		},
		{
			name: "skip reason", sample: "skip", code: 0, last: "2 passed, 0 failed, 4 skipped",
			wantSkip: []string{"TestMissing: skipped: a Docker engine (start dockerd, or set DOCKER_HOST)"},
		},
		{
			name: "fail", sample: "fail", code: 1, last: "3 passed, 2 failed, 3 skipped",
			want: []string{"the value was wrong", "--- FAIL: TestFail/bad", "--- FAIL: TestFail ", "FAIL\tgithub.com/", "FAIL: 1 of 1 packages"},
		},
		{
			name: "panic", sample: "panic", code: 1, last: "2 passed, 1 failed, 2 skipped",
			want: []string{"--- FAIL: TestPanic", "panic: assignment to entry in nil map", "sample_test.go:", "FAIL\tgithub.com/"},
		},
		{
			// The fixture blocks forever: only the timeout ends it.
			name: "timeout", sample: "hang", args: []string{"-timeout", "3s"}, code: 1, last: "2 passed, 1 failed, 3 skipped",
			want: []string{"TestHang did not finish", "panic: test timed out after 3s", "FAIL\tgithub.com/"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, _ := sample(t, tt.sample, tt.args...)
			if code != tt.code {
				t.Errorf("exit code %d, want %d", code, tt.code)
			}
			if got := lastLine(out); got != tt.last {
				t.Errorf("last line %q, want %q", got, tt.last)
			}
			rest := out
			for _, w := range tt.want {
				i := strings.Index(rest, w)
				if i < 0 {
					t.Errorf("stdout lacks %q (after what came before it)", w)
					continue
				}
				rest = rest[i+len(w):]
			}
			for _, w := range tt.wantNot {
				if strings.Contains(out, w) {
					t.Errorf("stdout has %q", w)
				}
			}
			for _, w := range tt.wantSkip {
				if !strings.Contains(out, "  SKIP github.com/shipdeploy/ship/test/cmd/testsum/testdata/sample "+w+"\n") {
					t.Errorf("the skip summary lacks %q", w)
				}
			}
		})
	}
}

func TestBuildFailure(t *testing.T) {
	var stdout, stderr bytes.Buffer
	code := run([]string{"./testdata/nonexistent"}, &stdout, &stderr)
	if code == 0 {
		t.Fatalf("exit 0 for a package that does not exist:\n%s%s", stdout.String(), stderr.String())
	}
	if !strings.Contains(stdout.String()+stderr.String(), "nonexistent") {
		t.Errorf("the output does not name the package:\n%s%s", stdout.String(), stderr.String())
	}
}
