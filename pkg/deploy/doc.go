// Package deploy takes a release of a compose app to the hosts of an environment,
// without an agent or through shipd (agent: true, see "Through shipd"), and reads back
// what they run: Run (shipctl deploy), Rollback, Status, History, Logs, Lock and Unlock;
// AgentStatus for shipd itself (pkg/install installs it). It does the work and reports
// it as Events; it never prints. The hosts are reached through the Host interface
// (release.FS for the files and Engine, pkg/engine's core); pkg/sshhost is the real
// one, one SSH connection per host per command carrying SFTP and the engine's socket.
//
// # The runner
//
// Runner is the one run on a host: pull -> pre-deploy jobs -> apply -> switch current
// -> record (release.json's result, an audit.log line); on a failure after a change,
// the previous release is put back (or, with none, the app's containers removed) and
// the failure recorded. Deploy, rollback (no jobs) and restore (no switch, no record:
// shipd after a restart) are its Kinds. The apply step is a Strategy: Up here (the
// engine's Up of the project, then a wait until healthy), shipd's swap in pkg/agent
// (blue-green per service), and room for a third. The host's files go through
// release.Store (the one implementation of the on-host contract), pull and jobs
// through pkg/engine (PullImages, RunJob).
//
// What differs between the callers stays with them, through the runner's hooks:
// shipctl's lock, the connection made again after a failure (Failed), "host
// unreachable", prune and the "done" event (hostrun.go); shipd's state file, routes
// and reconcile (pkg/agent). Once a change to a host has started, a cancellation only
// stops the step under way: putting the previous release back and the record run
// under a context of their own (WithoutCancel, with a timeout).
//
// # On the host
//
//	<path>/releases/<name>/docker-compose.yml the resolved compose file (mode 0600)
//	<path>/releases/<name>/release.json       name (sha), version, env, subject, time, who, from, result, images
//	<path>/current -> releases/<name>         relative symlink, switched after healthy
//	<path>/.lock/holder.json                  the lock: who, machine, pid, command, sha, time
//	<path>/audit.log                          one JSON line per deploy, rollback, lock, unlock
//	<path>/.tmp/                              staging for uploads and the new symlink
//
// A release's name is <sha>-<hash>: the commit's sha (<sha>-dirty-<hash> for
// uncommitted changes: the images' tag) and the first 8 hex digits of the SHA-256 of
// its resolved compose file (release.NameFor). A release on the host is never
// rewritten: the same commit deployed with another resolved file (an env_file edit,
// a variable used in interpolation) is a new release beside the first, so a restore
// or rollback always brings back exactly what ran; an identical redeploy is the same
// release (its compose file is kept, release.json updated). Output shows a name as
// <sha12>-<hash>; rollback takes a name, or any unique prefix of one or of its
// short form (a commit's sha names its releases). Hosts deployed before names had a
// hash keep their releases named <sha>: they are listed and rolled back to as
// before, and new releases get the new names.
//
// Each environment has its own compose project on the host: <app>-<env> (made a
// valid project name), or environments.<env>.project in ship.yaml. The project's
// working_dir (and the config_files label) is <path>/releases/<name>, so each
// container says which release created it; shipd knows the app by the project name
// too. ship.yaml refuses two environments that list one host with the same path or
// project (file:line, naming both). At deploy and rollback time, before anything
// changes, a host is refused when its folder's current release was deployed by
// another environment (release.json's env), when the project runs containers of
// another folder, or when the folder has a release but the project has no
// containers while the app's own name does from this folder: a host of before
// projects were per environment. Such a host keeps running under project <app>:
// write project: <app> for the environment to keep that name, or remove those
// containers to start anew under <app>-<env>.
//
// Status compares each container with the current release: a service whose
// container's config hash is not the current release's (a deploy cut off before it
// switched current, a container changed by hand), a container of a service the
// release lacks, or a service without a container is drift, shown with the release
// that created the container and the command that fixes it (shipctl rollback ENV
// <current>: it applies current's release again); drift makes status exit 1.
//
// # A deploy
//
// Before anything slow or interactive (Open): every image ship built is looked up in
// the registry (a HEAD of its manifest with the registry credentials; shipctl ship,
// which has not built yet, asks the registry's /v2/ with the credentials instead);
// every host is dialled, its SFTP and engine answer (the first host's lock is tried
// then: its mkdir is that host's SFTP check); then the lock is taken on every other
// host, one host after the other in the order of ship.yaml: two deploys never
// interleave across hosts, and a deploy that finds a host locked (after --lock-wait)
// releases what it took and changes nothing (ErrLocked, exit 6). The lock is held
// (its heartbeat kept) from then on: through ship's build, test and push, and the
// question and countdown. ship opens the hosts this way before it builds, and its
// deploy goes over the same connections (Options.Conn): one SSH connection per host
// for the whole run.
//
// Then the compose file is loaded for the environment (its env_file), the images of
// built services pinned to <registry>/<image>:<sha>, the engine checks that it can run
// the release, and the plan of each host is made; the host's folder is read for the
// upload at the same time (release.Store.Look), under the lock. Then Options.Confirm runs: the
// command shows the plan, asks when the environment has confirm: true, and counts the
// grace period down. Ctrl-C until then changes nothing: the locks are released (and an
// app folder the lock made on a fresh host is removed). Then, on each host
// (env.parallel at once, 0 = all), independently of the others:
//
//  1. upload: docker-compose.yml (0600) and release.json are written under .tmp/ and
//     renamed into releases/<name> (a new folder is renamed whole; a redeploy of a
//     release the host has keeps its compose file and replaces release.json with
//     one rename). A connection cut
//     in the middle leaves at most a part of a file under .tmp/, which the failed
//     deploy removes once it has connected again (else the next deploy does).
//  2. pull (engine.PullImages, in parallel and by each service's platform; begun
//     with the upload, as it changes nothing the app runs): the
//     images the engine lacks, through the host's engine, with the registry's
//     credentials (X-Registry-Auth) sent with each pull. pull_policy always pulls
//     every time, never/build never.
//  3. pre-deploy jobs (x-ship: {job: pre-deploy}), in name order: the job with its
//     dependencies is started with the new images, and waited for (10 minutes at
//     most). Its output is shown as it runs (events of step job_output), and its last
//     50 lines and exit code are kept in the release's release.json (jobs:), which
//     `shipctl logs ENV JOB` shows once its container is gone; a non-zero exit stops
//     the deploy with the job's last 20 log lines.
//  4. apply: the project without its job services, removing orphans (so the finished
//     job containers go), then a wait until every service is healthy, or running
//     when it has no health check (2 minutes at most).
//  5. switch: a new symlink under .tmp/ renamed over current (posix-rename); the
//     release.json with the result was staged under .tmp/ during the apply.
//  6. once current has switched, that release.json is renamed into place,
//     audit.log gets a line, and the lock is released last, in one ordered sequence
//     with the switch (release.Sequence: two round trips over SFTP); old releases are
//     pruned meanwhile. The lock's heartbeat knows the lock is the run's; when it
//     does not, holder.json is read and the lock released after the sequence.
//
// Steps 2 to 6 are the Runner's with the Up strategy. A host whose deploy fails
// before the switch puts its previous release back: that release's compose file,
// read from releases/<prev>/, is applied again (its images
// are on the host) and waited on; current never moved. When nothing had been touched
// yet (the upload or a pull failed), there is nothing to put back. When the host had
// no previous release, the new release's containers are stopped and removed, its
// volumes kept. The host's result is "failed" (exit 4) or, when putting back failed,
// "restore-failed" (exit 5); the exit code is the worst of all hosts. Every host ends
// with a "done" event saying which release it is on.
//
// When the connection to a host broke (the failure itself, often), the deploy
// connects to it again to do the above; when it cannot, the host's result is
// "restore-failed" if the engine had been touched (its state is unknown), its lock
// stays, and the error says to release it with `shipctl unlock`.
//
// Ctrl-C after the first change stops the step under way; the host then puts its
// previous release back as after a failure, and the command exits 130.
//
// # Through shipd
//
// An environment with agent: true deploys through shipd, the agent on each host
// (pkg/agent), which swaps blue-green behind its own proxy. Everything up to the upload
// is the agentless path's, with two more checks before anything changes: Prepare
// refuses what shipd cannot swap (compose's CheckAgent: a routed service with ports:,
// container_name, network_mode or a writable named volume, a pre-deploy job that
// depends on a routed service), naming file:line and service; and the preflight asks
// shipd on every host for its status (ErrNoAgent: `shipctl agent install ENV`). Then,
// per host, after the lock and the upload, shipctl asks shipd to deploy the release
// (agentapi, over the host's SSH connection: direct-streamlocal to shipd's socket,
// agentapi.DefaultSocket unless SSHOptions.AgentSocket, which the CLI takes from
// SHIP_AGENT_SOCKET; there is no ship.yaml key for it). The request carries the
// registry credentials of the release's images (Target.RegistryAuth), which shipd
// pulls with and never keeps. shipd's events are shown as the deploy's own (its "done"
// is left out: shipctl says where the host ends once the lock is released). shipd
// pulls, runs the jobs, swaps, switches current and writes release.json's result and
// audit.log (with "agent": "shipd"): shipctl writes neither again. The request also
// asks shipd to prune old releases (Keep) and to release shipctl's lock (Unlock, the
// holder's token) once the outcome is recorded: on the host those file writes cost no
// round trip, and the result says what shipd did. What it did not (a refusal, a cut
// answer, a shipd from before these fields) shipctl does as without an agent, the
// unlock and the prune at once.
//
// The outcome maps onto the host results: deployed; failed (exit 4: the new container
// failed its health check and never got traffic, or shipd put the previous release
// back), with the failed container's last log lines in the error; restore-failed (5);
// shipd busy with the app (a restore after its restart) is "locked" (6). A request
// shipd refused before starting (bad request, unknown release, stopping) changed
// nothing: shipctl records it in audit.log and release.json as the agentless path
// records such a failure. When shipd's answer is cut (shipd restarted, the connection
// broke), shipctl asks shipd's status until it answers again (Options.AgentWait, 2
// minutes by default; systemd restarts it at once) and the deploy, or the restore shipd
// runs after a restart, is over; shipd's record of it decides the result. A deploy cut
// by a restart of shipd did not happen: shipd puts the release that was current back,
// so that is "failed" (exit 4). What shipctl did not see it never reports as a failure
// or a success: when shipd does not answer in time, the host's result is "unknown"
// (ErrOutcomeUnknown, exit 5: check the host), and the error names `shipctl agent
// status ENV` and `shipctl history ENV`. Ctrl-C cannot stop a deploy shipd has started:
// shipctl says so, reports the host "unknown, still running on the host" with those
// commands, releases its lock and exits 130 while shipd carries on.
//
// Rollback goes through shipd the same way (agentapi's rollback, blue-green). Status
// adds shipd's routes of the app; AgentStatus is shipd's whole status, per host.
// `shipctl agent install` is pkg/install.
//
// # Choices
//
//   - The release file is compose-go's project marshalled to YAML: interpolated
//     (env_file values inlined, so mode 0600), images pinned, without build sections
//     (the hosts pull) and without service env_file entries (their values are already
//     in environment). It is read back without interpolation, by the deploy itself
//     too, so that a deploy and a later rollback or restore run the same project; a
//     "$" in a value stays literal. `docker compose` on the host would need
//     --no-interpolate to read it the same way.
//   - A bind mount of a path inside the local checkout (written relative, "./data")
//     is refused before anything is touched: the hosts do not have that folder. Use a
//     named volume, or an absolute path, which is used on the host as written.
//   - Secrets: every value of the environment's env_file and of the services'
//     env_file files is a secret (values shorter than redact.MinSecretLen excepted: too
//     common to scrub). They are scrubbed from every event, error, audit line and
//     notification, and from `shipctl logs`, since the engine's errors and a
//     container's logs can echo its configuration. Values from the process
//     environment are not treated as secrets.
//   - Locks: .lock is created with an atomic mkdir; holder.json inside says who, with
//     a token of the run's own. A deploy or rollback refreshes holder.json's heartbeat
//     (rewritten through a temporary file inside .lock/, renamed over it) every
//     Target.LockRefresh, DefaultLockRefresh (10s) unless set (SHIP_LOCK_REFRESH). A
//     lock whose heartbeat is older than StaleAfter (3) of its holder's intervals was
//     left by a run that ended (killed, or cut off from the host) and is taken over
//     with a warning; the hostname and pid decide nothing, since containers share
//     them. The heartbeat is the holder's clock and the age the taker's: machines that
//     deploy to one host need clocks that agree within that bound. Taking over renames
//     .lock aside under .tmp/ in one step, then checks that what it moved is the
//     holder.json it judged stale (else puts it back): of two deploys taking over at
//     once, one does, and the other finds the new lock held. A lock taken with
//     `shipctl lock` (no heartbeat), or by an older shipctl, is never stale: `shipctl
//     unlock` removes it. A run that finds its lock taken over (its heartbeat was late
//     beyond the bound) says so.
//   - Prune keeps the newest env.keep releases by release.json time, and current; it
//     removes the others' folders and untags the images ship built for them that no
//     kept release uses. Other images (postgres:16) are never removed: another app
//     may use them. Pruning runs after the lock is released; its failures are
//     warnings.
//   - Rollback without a sha goes to the release made current before the current one
//     (release.json's current_since), so that two rollbacks in a row go back and
//     forth, like `cd -`. With a sha, any unique prefix of a release on the hosts.
//     Jobs do not run on a rollback.
//   - Notifications (pkg/notify): JSON POSTed to notify.webhook on start (after the confirmation),
//     success, failure (a deploy that failed on any host; the results say which host
//     was restored) and rollback (when a rollback ends, with error set if it failed).
//     Each attempt has 5s, three attempts with a pause of 1s then 2s; a notification
//     that fails is a warning, never the deploy's failure.
//   - --sha deploys another commit: its compose file is read from that commit (git
//     show), ship.yaml and the env_file from the working tree.
package deploy
