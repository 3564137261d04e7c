package testenv

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/client"
)

// sweepChildEnv names the objects a sweep child creates; set, TestSweepChild runs.
const sweepChildEnv = "SHIP_TESTENV_SWEEP_CHILD"

// TestSweepChild is the test process TestSweep starts twice: it creates a folder, a
// process, a labelled network and volume and a compose project's network, tracked as
// a test does, says READY with the process's id and waits on its stdin.
func TestSweepChild(t *testing.T) {
	name := os.Getenv(sweepChildEnv)
	if name == "" {
		t.Skip("started by TestSweep")
	}
	cli, err := client.New(client.FromEnv)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	dir := filepath.Join(os.Getenv("SHIP_TESTENV_SWEEP_TMP"), name)
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	Track(t, "dir", dir)
	sleep := exec.Command("sleep", "600") // not Tied: a killed run leaves it
	if err := sleep.Start(); err != nil {
		t.Fatal(err)
	}
	TrackProcess(t, sleep.Process.Pid)
	labels := Labels(t, "testenv")
	if _, err := cli.NetworkCreate(ctx, name+"-net", client.NetworkCreateOptions{Labels: labels}); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.VolumeCreate(ctx, client.VolumeCreateOptions{Name: name + "-vol", Labels: labels}); err != nil {
		t.Fatal(err)
	}
	Track(t, "project", name+"-app")
	project := map[string]string{"com.docker.compose.project": name + "-app-e2e"}
	if _, err := cli.NetworkCreate(ctx, name+"-app-e2e_default", client.NetworkCreateOptions{Labels: project}); err != nil {
		t.Fatal(err)
	}
	fmt.Printf("READY %d\n", sleep.Process.Pid)
	io.Copy(io.Discard, os.Stdin)
}

// sweepChild is one TestSweepChild process.
type sweepChild struct {
	name  string
	cmd   *exec.Cmd
	stdin io.Closer
	sleep int
}

func startSweepChild(t *testing.T, ledgers, tmp string) *sweepChild {
	t.Helper()
	hex, _ := randomHex()
	c := &sweepChild{name: "ship-sweep-" + hex[:10]}
	c.cmd = exec.Command(os.Args[0], "-test.run=^TestSweepChild$", "-test.v")
	c.cmd.Env = append(os.Environ(), sweepChildEnv+"="+c.name, "SHIP_TEST_LEDGER="+ledgers, "SHIP_TESTENV_SWEEP_TMP="+tmp)
	stdin, _ := c.cmd.StdinPipe()
	out, _ := c.cmd.StdoutPipe()
	c.stdin = stdin
	Tied(c.cmd)
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		if c.cmd.ProcessState == nil {
			c.cmd.Process.Kill()
			c.cmd.Wait()
		}
		syscall.Kill(c.sleep, syscall.SIGKILL)
		ctx, cancel := context.WithTimeout(context.Background(), Scale(time.Minute))
		defer cancel()
		cli := Docker(t)
		cli.NetworkRemove(ctx, c.name+"-net", client.NetworkRemoveOptions{})
		cli.NetworkRemove(ctx, c.name+"-app-e2e_default", client.NetworkRemoveOptions{})
		cli.VolumeRemove(ctx, c.name+"-vol", client.VolumeRemoveOptions{Force: true})
	})
	sc := bufio.NewScanner(out)
	var seen []string
	for sc.Scan() {
		seen = append(seen, sc.Text())
		if pid, ok := strings.CutPrefix(sc.Text(), "READY "); ok {
			c.sleep, _ = strconv.Atoi(pid)
			go io.Copy(io.Discard, out)
			return c
		}
	}
	t.Fatalf("the child test process ended before it was ready:\n%s", strings.Join(seen, "\n"))
	return nil
}

// alive reports whether pid runs (a zombie waiting for its reaper does not).
func alive(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	return i > 0 && !strings.HasPrefix(strings.TrimSpace(s[i+1:]), "Z")
}

// TestSweep: a test process killed (SIGKILL, as at its -timeout) leaves its folder,
// a process, labelled engine objects and a compose project; the next run's sweep
// removes them all, and leaves alone everything of a test process that still runs.
func TestSweep(t *testing.T) {
	cli := Docker(t)
	ledgers, tmp := t.TempDir(), t.TempDir()
	live := startSweepChild(t, ledgers, tmp)
	dead := startSweepChild(t, ledgers, tmp)
	dead.cmd.Process.Kill()
	dead.cmd.Wait()

	ctx, cancel := context.WithTimeout(context.Background(), Scale(2*time.Minute))
	defer cancel()
	sweep(ctx, cli, ledgers)

	exists := func(c *sweepChild) []string {
		var there []string
		if _, err := os.Stat(filepath.Join(tmp, c.name)); err == nil {
			there = append(there, "folder")
		}
		if alive(c.sleep) {
			there = append(there, "process")
		}
		for _, n := range []string{c.name + "-net", c.name + "-app-e2e_default"} {
			if _, err := cli.NetworkInspect(ctx, n, client.NetworkInspectOptions{}); !cerrdefs.IsNotFound(err) {
				there = append(there, "network "+n)
			}
		}
		if _, err := cli.VolumeInspect(ctx, c.name+"-vol", client.VolumeInspectOptions{}); !cerrdefs.IsNotFound(err) {
			there = append(there, "volume")
		}
		return there
	}
	// The killed process's sleep is reparented and reaped: wait for that, not a time.
	for deadline := time.Now().Add(Scale(10 * time.Second)); alive(dead.sleep) && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if left := exists(dead); len(left) > 0 {
		t.Errorf("the sweep left what the killed test process had: %v", left)
	}
	if there := exists(live); len(there) != 5 {
		t.Errorf("the sweep touched what a running test process has: only %v is left of its folder, process, 2 networks and volume", there)
	}
	ledgerOf(t, ledgers, live) // the running process's ledger is kept
	if n := len(ledgerFiles(ledgers)); n != 1 {
		t.Errorf("%d ledgers after the sweep, want the running process's alone", n)
	}

	// The running one ends normally: Main removes its folder and its ledger.
	live.stdin.Close()
	if err := live.cmd.Wait(); err != nil {
		t.Fatalf("the child test process: %v", err)
	}
	if n := len(ledgerFiles(ledgers)); n != 0 {
		t.Errorf("%d ledgers after the last test process ended, want none", n)
	}
	if dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "st-*")); len(dirs) != 0 {
		t.Errorf("the test processes' folders are left: %v", dirs)
	}
}

func ledgerFiles(dir string) []string {
	files, _ := filepath.Glob(filepath.Join(dir, "*.ledger"))
	return files
}

// ledgerOf is the ledger that lists c's folder.
func ledgerOf(t *testing.T, dir string, c *sweepChild) string {
	t.Helper()
	for _, f := range ledgerFiles(dir) {
		items, _ := readLedger(f)
		for _, it := range items {
			if it[0] == "dir" && filepath.Base(it[1]) == c.name {
				return f
			}
		}
	}
	t.Fatalf("no ledger lists %s", c.name)
	return ""
}

func TestScaleFactor(t *testing.T) {
	for _, c := range []struct {
		env  string
		load float64
		cpus int
		want float64
	}{
		{"", 0.5, 2, 1}, {"", 6, 2, 3}, {"", 100, 2, 8}, {"2.5", 0, 2, 2.5}, {"0.1", 6, 2, 3}, {"x", 1, 0, 1},
	} {
		if got := scaleFactor(c.env, c.load, c.cpus); got != c.want {
			t.Errorf("scaleFactor(%q, %v, %d) = %v, want %v", c.env, c.load, c.cpus, got, c.want)
		}
	}
}

// TestOwnerGone: an owner is gone only when its ledger is here and nobody holds it;
// one of another host, or without a ledger here, is never taken for gone.
func TestOwnerGone(t *testing.T) {
	dir := t.TempDir()
	host, _ := os.Hostname()
	me := safeName(host)
	write := func(id string) *os.File {
		f, err := os.Create(filepath.Join(dir, id+".ledger"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		return f
	}
	write(me + ".1.ended")
	held := write(me + ".2.running")
	if err := syscall.Flock(int(held.Fd()), syscall.LOCK_SH); err != nil {
		t.Fatal(err)
	}
	write("not-" + me + ".3.elsewhere")
	for id, want := range map[string]bool{
		me + ".1.ended": true, me + ".2.running": false, "not-" + me + ".3.elsewhere": false,
		me + ".4.unknown": false, me + ".5/../x": false,
	} {
		if got := ownerGone(dir, id); got != want {
			t.Errorf("ownerGone(%q) = %v, want %v", id, got, want)
		}
	}
}
