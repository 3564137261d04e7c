package testenv

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// A test process owns what it creates: engine objects carry its labels (Labels), and
// what cannot carry a label (a compose project that shipctl creates, an sshd, a
// folder) is written in its ledger (Track). The ledger is a file in the user's cache
// folder that the process holds a shared flock on while it runs: the kernel drops the
// lock when the process ends, however it ends (a test binary killed at its -timeout
// runs no cleanup), which is how a later run knows that the owner is gone, whatever
// PID namespace either of them is in. Sweep removes what gone owners left; it never
// touches what a running test process owns.

// LabelPackage and LabelOwner are the labels testenv puts on the engine objects a test
// creates: the test package's name, and the owning process.
const (
	LabelPackage = "ship.test"
	LabelOwner   = "ship.test.owner"
)

var (
	ownerOnce sync.Once
	self      string   // this process's owner id
	ledger    *os.File // held with a shared flock until the process ends
	ledgerMu  sync.Mutex
	ownerErr  error
)

// ledgerDir is where the ledgers of test processes are kept: SHIP_TEST_LEDGER, else
// the user's cache folder's ship/test-owners (the same for every run of the suite).
func ledgerDir() (string, error) {
	if d := os.Getenv("SHIP_TEST_LEDGER"); d != "" {
		return d, nil
	}
	base, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("no user cache folder for the test ledger (set XDG_CACHE_HOME, HOME or SHIP_TEST_LEDGER): %w", err)
	}
	return filepath.Join(base, "ship", "test-owners"), nil
}

// Owner is this test process's owner id, "host.pid.random": the value of LabelOwner on
// what it creates and the name of its ledger. The first call creates the ledger.
func Owner() (string, error) {
	ownerOnce.Do(func() {
		dir, err := ledgerDir()
		if err == nil {
			err = os.MkdirAll(dir, 0o755)
		}
		if err != nil {
			ownerErr = err
			return
		}
		host, _ := os.Hostname()
		suffix, err := randomHex()
		if err != nil {
			ownerErr = err
			return
		}
		id := fmt.Sprintf("%s.%d.%s", safeName(host), os.Getpid(), suffix[:8])
		f, err := os.OpenFile(filepath.Join(dir, id+".ledger"), os.O_CREATE|os.O_EXCL|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			ownerErr = err
			return
		}
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_SH); err != nil {
			f.Close()
			ownerErr = fmt.Errorf("lock the test ledger %s: %w", f.Name(), err)
			return
		}
		self, ledger = id, f
		// The ledger's time is the owner's last sign of life (Sweep compares
		// images' creation with it): kept fresh while the process runs.
		go func(path string) {
			for range time.Tick(5 * time.Second) {
				now := time.Now()
				os.Chtimes(path, now, now)
			}
		}(f.Name())
	})
	return self, ownerErr
}

// Labels are the labels an engine object a test creates carries: the package's name
// (pkg, e.g. "e2e") and this process as its owner, for Sweep.
func Labels(t testing.TB, pkg string) map[string]string {
	t.Helper()
	id, err := Owner()
	if err != nil {
		t.Fatal(err)
	}
	return map[string]string{LabelPackage: pkg, LabelOwner: id}
}

// Track writes in this process's ledger something it created that carries no label,
// for Sweep after a run that was killed: kind "dir" (a folder, removed), "proc" (a
// process id, killed when it still runs the same program), "project" (a compose
// project: its containers, networks and volumes) or "image" (an image reference).
func Track(t testing.TB, kind, name string) {
	t.Helper()
	if err := track(kind, name); err != nil {
		t.Fatal(err)
	}
}

func track(kind, name string) error {
	if _, err := Owner(); err != nil {
		return err
	}
	if strings.ContainsAny(name, "\n") {
		return fmt.Errorf("track %s %q: a name with a newline", kind, name)
	}
	ledgerMu.Lock()
	defer ledgerMu.Unlock()
	_, err := ledger.WriteString(kind + " " + name + "\n")
	return err
}

// trackProc writes a running process in the ledger with its start time, so that a
// sweep never kills another process that got the same id later.
func trackProc(pid int) error {
	start, err := procStart(pid)
	if err != nil {
		return err
	}
	return track("proc", fmt.Sprintf("%d %d", pid, start))
}

// endOwner removes this process's ledger: Main calls it once everything is cleaned.
func endOwner() {
	ledgerMu.Lock()
	defer ledgerMu.Unlock()
	if ledger != nil {
		os.Remove(ledger.Name())
		ledger.Close()
		ledger = nil
	}
}

// ownerGone reports whether the process that owns id has ended: its ledger in dir is
// there and no process holds it. An owner without a ledger here (a test process on
// another machine using this engine, or with another ledger folder) is never gone:
// nothing here can tell.
func ownerGone(dir, id string) bool {
	host, _, _ := strings.Cut(id, ".")
	me, _ := os.Hostname()
	if host != safeName(me) || strings.ContainsAny(id, "/") {
		return false
	}
	f, err := os.Open(filepath.Join(dir, id+".ledger"))
	if err != nil {
		return false
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		return false // its owner holds it
	}
	syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	return true
}

// readLedger is the kind and name of each line of a ledger.
func readLedger(path string) ([][2]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var items [][2]string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if kind, name, ok := strings.Cut(sc.Text(), " "); ok {
			items = append(items, [2]string{kind, name})
		}
	}
	return items, sc.Err()
}

// procStart is the start time of process pid in clock ticks since boot (field 22 of
// /proc/pid/stat).
func procStart(pid int) (uint64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(data)
	i := strings.LastIndexByte(s, ')') // the command name may hold spaces
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	return strconv.ParseUint(f[19], 10, 64) // field 22; f[0] is field 3
}

func safeName(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' {
			return r
		}
		return '-'
	}, s)
}

// Tied makes cmd's process die with the test process: it is sent SIGKILL when the
// test binary ends, also when it is killed at its -timeout and runs no cleanup.
func Tied(cmd *exec.Cmd) *exec.Cmd {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	return cmd
}

// TrackProcess writes a process the test started in the ledger, so that a sweep after
// a killed run kills it if it still runs.
func TrackProcess(t testing.TB, pid int) {
	t.Helper()
	if err := trackProc(pid); err != nil {
		t.Fatal(err)
	}
}
