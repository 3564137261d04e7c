// Command testsum runs `go test -json` with the arguments it is given and prints what
// plain `go test` would: the output of failing tests and the ok/FAIL line of each
// package, as they come. Then it lists every skipped test with the reason it gave
// (testenv.Missing says which part is missing and how to get it), so that a run
// without an engine, sshd or registry cannot pass for a full one, and ends with
//
//	N passed, N failed, N skipped
//
// alone on a line. Its exit code is go test's, and 1 when the stream shows a
// failure go test did not report in its exit code.
//
//	go run ./test/cmd/testsum -race -count=1 ./...
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"regexp"
	"sort"
	"strings"
	"syscall"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	cmd := exec.Command("go", append([]string{"test", "-json"}, args...)...)
	cmd.Stderr = stderr // build errors and go's own complaints, as they are
	out, err := cmd.StdoutPipe()
	if err != nil {
		fmt.Fprintln(stderr, "testsum:", err)
		return 1
	}
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(stderr, "testsum:", err)
		return 1
	}
	// Ctrl-C reaches go test through the process group; testsum stays to print
	// what the stream held until then.
	signal.Ignore(syscall.SIGINT)
	s := newSummary(stdout)
	s.read(out)
	err = cmd.Wait()
	s.finish()
	code := 0
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		code = exit.ExitCode()
		if code <= 0 {
			code = 1 // killed by a signal
		}
	case err != nil:
		fmt.Fprintln(stderr, "testsum: go test:", err)
		code = 1
	case s.failed > 0 || s.pkgFailed > 0:
		code = 1
	}
	return code
}

// event is one line of `go test -json` (cmd/test2json).
type event struct {
	Action     string
	Package    string
	ImportPath string // of build-output and build-fail events
	Test       string
	Output     string
}

// test is what the summary keeps of one test until it ends.
type test struct {
	pkg, name string
	output    []string
}

// skip is one skipped test and the reason it gave.
type skip struct {
	pkg, name, reason string
}

type summary struct {
	w               io.Writer
	running         map[string]*test // by package and name
	skips           []skip
	passed, failed  int
	pkgs, pkgFailed int
}

func newSummary(w io.Writer) *summary {
	return &summary{w: w, running: map[string]*test{}}
}

// read handles the stream line by line; a line that is not an event (a panic of
// test2json itself, say) is printed as it is.
func (s *summary) read(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		line := sc.Bytes()
		var e event
		if len(line) == 0 || line[0] != '{' || json.Unmarshal(line, &e) != nil {
			fmt.Fprintf(s.w, "%s\n", line)
			continue
		}
		s.handle(e)
	}
}

func (s *summary) handle(e event) {
	switch {
	case e.Action == "build-output":
		fmt.Fprint(s.w, e.Output)
	case e.Test == "":
		s.pkgEvent(e)
	default:
		s.testEvent(e)
	}
}

// pkgEvent prints a package's own output (its ok/FAIL line, a panic or timeout
// outside any test's frame) and, when the package ends, the output of its tests
// that never ended: those a panic or a timeout cut short.
func (s *summary) pkgEvent(e event) {
	switch e.Action {
	case "output":
		if pkgEnd.MatchString(e.Output) {
			// A test cut short by a panic or a timeout shows before the verdict.
			s.flushUnfinished(e.Package)
		}
		if !framing(e.Output) {
			fmt.Fprint(s.w, e.Output)
		}
	case "fail":
		s.pkgs++
		s.pkgFailed++
		s.flushUnfinished(e.Package)
	case "pass", "skip":
		s.pkgs++
		s.flushUnfinished(e.Package)
	}
}

func (s *summary) testEvent(e event) {
	key := e.Package + "\x00" + e.Test
	t := s.running[key]
	if t == nil {
		t = &test{pkg: e.Package, name: e.Test}
		s.running[key] = t
	}
	switch e.Action {
	case "output":
		t.output = append(t.output, e.Output)
	case "pass":
		s.passed++
		delete(s.running, key)
	case "fail":
		s.failed++
		delete(s.running, key)
		// Subtests' output comes with their parent's frame; print each once.
		if !strings.Contains(e.Test, "/") || !s.parentRunning(e.Package, e.Test) {
			s.print(t.output)
		} else {
			s.appendToParent(e.Package, e.Test, t.output)
		}
	case "skip":
		s.skips = append(s.skips, skip{pkg: e.Package, name: e.Test, reason: reason(t.output)})
		delete(s.running, key)
	}
}

func (s *summary) parentRunning(pkg, name string) bool {
	parent := name[:strings.LastIndex(name, "/")]
	_, ok := s.running[pkg+"\x00"+parent]
	return ok
}

// appendToParent keeps a failed subtest's output for its parent, which fails too
// and prints it in order.
func (s *summary) appendToParent(pkg, name string, output []string) {
	parent := s.running[pkg+"\x00"+name[:strings.LastIndex(name, "/")]]
	parent.output = append(parent.output, output...)
}

// flushUnfinished prints the output of pkg's tests that never ended.
func (s *summary) flushUnfinished(pkg string) {
	var keys []string
	for k, t := range s.running {
		if t.pkg == pkg {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		t := s.running[k]
		if !strings.Contains(t.name, "/") {
			fmt.Fprintf(s.w, "--- %s did not finish:\n", t.name)
			s.print(t.output)
		}
		s.failed++
		delete(s.running, k)
	}
}

// print prints a test's output without the framing of -v.
func (s *summary) print(output []string) {
	for _, line := range output {
		if !framing(line) {
			fmt.Fprint(s.w, line)
		}
	}
}

// framing is a line of go test -v's framing that plain go test does not print.
func framing(line string) bool {
	if strings.TrimSpace(line) == "PASS" {
		return true
	}
	for _, p := range []string{"=== RUN", "=== PAUSE", "=== CONT", "=== NAME", "--- PASS", "--- SKIP"} {
		if strings.HasPrefix(strings.TrimSpace(line), p) {
			return true
		}
	}
	return false
}

// pkgEnd is a package's closing line: "ok  \tpkg\t1.2s" or "FAIL\tpkg ...".
var pkgEnd = regexp.MustCompile(`^(ok|FAIL)\s+\S`)

// logPrefix is the "file.go:12: " that t.Log puts before a message.
var logPrefix = regexp.MustCompile(`^\s*[\w.-]+\.go:\d+: `)

// reason is the last thing a skipped test logged: its t.Skip message.
func reason(output []string) string {
	for i := len(output) - 1; i >= 0; i-- {
		line := strings.TrimSpace(output[i])
		if line == "" || framing(line) {
			continue
		}
		if logPrefix.MatchString(output[i]) {
			return logPrefix.ReplaceAllString(strings.TrimRight(output[i], "\n"), "")
		}
	}
	return "no reason given"
}

// finish prints the skipped tests and the counts.
func (s *summary) finish() {
	for _, t := range s.running { // a stream that ended early
		s.flushUnfinished(t.pkg)
	}
	if len(s.skips) > 0 {
		fmt.Fprintf(s.w, "\nSKIPPED: %d tests did not run. Each says what it needs and how to get it;\n", len(s.skips))
		fmt.Fprintln(s.w, "in CI (CI=true) a missing part fails the test instead.")
		for _, sk := range s.skips {
			fmt.Fprintf(s.w, "  SKIP %s %s: %s\n", sk.pkg, sk.name, sk.reason)
		}
	}
	if s.pkgFailed > 0 {
		fmt.Fprintf(s.w, "\nFAIL: %d of %d packages (see above)\n", s.pkgFailed, s.pkgs)
	}
	fmt.Fprintf(s.w, "\n%d passed, %d failed, %d skipped\n", s.passed, s.failed, len(s.skips))
}
