package agent

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/shipdeploy/ship/pkg/proxy"
)

// Handover: a restart that refuses no connection.
//
// A plain restart (systemctl restart, or a crash and Restart=always) closes the
// routes' listening sockets with the old process and opens them again in the new one:
// in between, connections are refused (see the README for the measured gap). On
// SIGHUP (`systemctl reload shipd`) shipd instead hands its sockets over:
//
//  1. it refuses new deploys (a running one makes the handover wait for a next SIGHUP);
//  2. it starts its successor, the executable at its own path (an upgraded binary if
//     it was replaced), with the same arguments, passing each route's listening socket
//     as fds 3.. (LISTEN_FDS, as socket activation does; see proxy.Inherit) and a pipe
//     to say when it is ready;
//  3. the successor reads the state, reconciles, serves on the inherited sockets (they
//     never closed: connections wait in their backlog meanwhile), replaces the API
//     socket (a rename, so the path always has one), tells systemd MAINPID=<itself> and
//     READY=1 (NotifyAccess=all) with a barrier, and writes "ready" to the pipe;
//  4. the old shipd stops accepting, lets its in-flight requests finish and exits 0.
//     systemd watches the successor from then on (it is systemd's child: it was
//     started through a shell that exited at once): a stop or restart is graceful.
//
// If the successor is not ready within handover_timeout it is killed and the old
// shipd goes on serving. Under systemd the unit needs ExecReload=/bin/kill -HUP
// $MAINPID and NotifyAccess=all (the successor, in the unit's cgroup, is not yet the
// main process when it speaks); the successor stays in the unit's cgroup.

// handover starts the successor and returns once it serves (see above).
func (a *agent) handover(ctx context.Context, args []string) error {
	a.mu.Lock()
	if len(a.busy) > 0 {
		var running []string
		for app, what := range a.busy {
			running = append(running, app+": "+what)
		}
		a.mu.Unlock()
		sort.Strings(running)
		return fmt.Errorf("a deploy is running (%s); send SIGHUP again once it is done", strings.Join(running, ", "))
	}
	a.closing = true
	live := make([]*liveRoute, 0, len(a.routes))
	for _, lr := range a.routes {
		live = append(live, lr)
	}
	a.mu.Unlock()
	resume := func() {
		a.mu.Lock()
		a.closing = false
		a.mu.Unlock()
	}
	a.waitAllRetired()
	a.log.Info("handover: starting the successor", "routes", len(live))
	start := time.Now()

	exe, err := os.Executable()
	if err != nil {
		resume()
		return fmt.Errorf("handover: find the executable: %w", err)
	}
	lns := make([]net.Listener, 0, len(live))
	for _, lr := range live {
		if ln := lr.route.Listener(); ln != nil {
			lns = append(lns, ln)
		}
	}
	lns = append(lns, a.doorSockets()...)
	// Through /bin/sh, which starts the successor in the background and exits: the
	// successor is then the child of the service manager (PID 1, or the nearest
	// subreaper), not of this process, by the time it tells systemd MAINPID=. A main
	// process that is not its child systemd supervises poorly: a later stop or restart
	// kills it at once (SIGKILL) instead of waiting for its graceful stop. Its own
	// process group lets a successor that never gets ready be killed.
	cmd := exec.Command("/bin/sh", append([]string{"-c", `"$0" "$@" &`, exe}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Env = append(os.Environ(), a.notify.childEnv()...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	sctx, cancel := context.WithTimeout(ctx, a.cfg.HandoverTimeout)
	defer cancel()
	if err := proxy.StartSuccessor(sctx, cmd, lns); err != nil {
		if cmd.Process != nil {
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		}
		resume()
		return fmt.Errorf("handover: %w", err)
	}
	// Reap the shell.
	go func() { _ = cmd.Wait() }()
	// The successor has told systemd MAINPID=<itself> (NotifyAccess=all) and waited
	// until systemd took it in before it said it was ready: this process's exit is
	// not the main process's.
	a.log.Info("handover: the successor serves; this shipd stops", "took", time.Since(start).Round(time.Millisecond).String())
	return nil
}
