// Package agentapi is shipd's API: the wire types and a client. shipd serves HTTP/1.1
// with JSON bodies on a unix socket (/run/shipd/shipd.sock, mode 0660); shipctl reaches
// it through its SSH connection to the host (direct-streamlocal), tests through a local
// unix dial. The Client takes any dialer.
//
// Endpoints:
//
//	GET  /v1/status    Status
//	POST /v1/deploy    DeployRequest  -> NDJSON stream of Message: events, then the result
//	POST /v1/rollback  RollbackRequest -> the same stream
//
// A request refused before anything starts (bad request, locked, unknown release) gets
// a 4xx status with an ErrorBody. Once a deploy has started the status is 200 and the
// body is a stream of Messages, one JSON object per line: {"event": ...} while it runs,
// {"result": ...} as the last line. The deploy goes on to its end even if the client
// goes away; its outcome is in audit.log and Status.
package agentapi

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	"github.com/shipdeploy/ship/pkg/event"
)

// DefaultSocket is where shipd serves its API.
const DefaultSocket = "/run/shipd/shipd.sock"

// Paths of the API.
const (
	PathStatus   = "/v1/status"
	PathDeploy   = "/v1/deploy"
	PathRollback = "/v1/rollback"
)

// Duration is a time.Duration written as text on the wire ("1.5s").
type Duration time.Duration

// MarshalJSON writes the duration as a string, e.g. "30s".
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

// UnmarshalJSON reads a string such as "30s" (or a number of nanoseconds).
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		var n int64
		if nerr := json.Unmarshal(b, &n); nerr != nil {
			return fmt.Errorf("duration: want a string such as \"30s\": %w", err)
		}
		*d = Duration(n)
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("duration %q: %w", s, err)
	}
	*d = Duration(v)
	return nil
}

// Std returns the duration as a time.Duration.
func (d Duration) Std() time.Duration { return time.Duration(d) }

// HealthCheck overrides shipd's health-check defaults for one deploy (zero fields keep
// them; kamal-proxy's 1s interval, 5s timeout, 30s deadline are shipd's defaults).
type HealthCheck struct {
	// Interval between the starts of two attempts.
	Interval Duration `json:"interval,omitempty"`
	// Timeout of one attempt.
	Timeout Duration `json:"timeout,omitempty"`
	// Deadline for the new container to pass; past it the deploy fails.
	Deadline Duration `json:"deadline,omitempty"`
}

// Origin says who asked for a deploy or rollback and for which environment and host,
// for audit.log.
type Origin struct {
	Env  string `json:"env,omitempty"`
	Host string `json:"host,omitempty"` // the host as ship.yaml names it
	Who  string `json:"who,omitempty"`  // user@machine
	From string `json:"from,omitempty"` // git remote branch, or the machine
}

// DeployRequest asks shipd to make a release of an app current, blue-green. shipctl
// has uploaded <Path>/releases/<SHA>/docker-compose.yml (images pinned) before.
type DeployRequest struct {
	// App is the compose project name.
	App string `json:"app"`
	// Path is the app's folder on the host (absolute): releases/, current, audit.log.
	Path string `json:"path"`
	// SHA names the release: the folder under releases/.
	SHA string `json:"sha"`
	// RegistryAuth maps an image reference (or a registry host) to the base64
	// X-Registry-Auth value for pulling it. It is never logged, stored or sent back.
	RegistryAuth map[string]string `json:"registry_auth,omitempty"`
	// Health overrides the health-check defaults.
	Health *HealthCheck `json:"health,omitempty"`
	// WaitTimeout bounds the wait until a service without a route is healthy
	// (default shipd's wait_timeout).
	WaitTimeout Duration `json:"wait_timeout,omitempty"`
	// JobTimeout bounds each pre-deploy job (default shipd's job_timeout).
	JobTimeout Duration `json:"job_timeout,omitempty"`
	// Keep, above 0, has shipd prune once the release is current: remove the app's
	// old releases but the newest Keep and current, and untag the images ship built
	// for them that no kept release uses (shipctl's keep). On the host that costs
	// shipctl no round trip. 0 leaves them. Result.Pruned says shipd did it: a shipd
	// that does not know Keep leaves it nil, and shipctl prunes itself.
	Keep int `json:"keep,omitempty"`
	// Unlock is the token of shipctl's lock on the host (<path>/.lock/holder.json):
	// once the outcome is recorded, shipd releases that lock if it is still this
	// holder's, and says so in Result.Unlocked; on the host that costs shipctl no
	// round trip. "" leaves the lock to shipctl, as does a shipd before Unlock.
	Unlock string `json:"unlock,omitempty"`
	Origin
}

// LogValue keeps RegistryAuth out of logs.
func (r DeployRequest) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("app", r.App), slog.String("path", r.Path), slog.String("sha", r.SHA),
		slog.Int("registry_auths", len(r.RegistryAuth)), slog.String("who", r.Who),
	)
}

// String describes the request without its credentials.
func (r DeployRequest) String() string {
	return fmt.Sprintf("deploy %s %s at %s (%d registry credential(s))", r.App, r.SHA, r.Path, len(r.RegistryAuth))
}

// GoString keeps RegistryAuth out of %#v.
func (r DeployRequest) GoString() string { return r.String() }

// RollbackRequest asks shipd to make an earlier release current again, blue-green. Its
// pre-deploy jobs do not run.
type RollbackRequest struct {
	App  string `json:"app"`
	Path string `json:"path"`
	// SHA is the release to go back to, or a unique prefix of it; "" is the previous
	// release (of the others, the one made current last, by release.json).
	SHA string `json:"sha,omitempty"`
	// RegistryAuth as in DeployRequest, for images no longer on the host.
	RegistryAuth map[string]string `json:"registry_auth,omitempty"`
	Health       *HealthCheck      `json:"health,omitempty"`
	WaitTimeout  Duration          `json:"wait_timeout,omitempty"`
	// Unlock as in DeployRequest.
	Unlock string `json:"unlock,omitempty"`
	Origin
}

// LogValue keeps RegistryAuth out of logs.
func (r RollbackRequest) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("app", r.App), slog.String("path", r.Path), slog.String("sha", r.SHA),
		slog.Int("registry_auths", len(r.RegistryAuth)), slog.String("who", r.Who),
	)
}

// String describes the request without its credentials.
func (r RollbackRequest) String() string {
	return fmt.Sprintf("rollback %s to %q at %s (%d registry credential(s))", r.App, r.SHA, r.Path, len(r.RegistryAuth))
}

// GoString keeps RegistryAuth out of %#v.
func (r RollbackRequest) GoString() string { return r.String() }

// Steps an Event belongs to: pkg/event's, the words pkg/deploy uses too.
const (
	StepPreflight = event.StepPreflight // the release read and checked
	StepPull      = event.StepPull      // images pulled through the host's engine
	StepJob       = event.StepJob       // a pre-deploy job
	StepApply     = event.StepApply     // a container started, recreated or left alone
	StepHealth    = event.StepHealth    // a new container health-checked
	StepSwitch    = event.StepSwitch    // a route switched, or current pointed at the release
	StepDrain     = event.StepDrain     // the old container drained and stopped
	StepAudit     = event.StepAudit     // audit.log, release.json
	StepRestore   = event.StepRestore   // the previous release put back after a failure
	StepPrune     = event.StepPrune     // old releases and their images removed (the request's Keep)
	StepLock      = event.StepLock      // shipctl's lock released (the request's Unlock)
	StepDone      = event.StepDone      // the end: Msg says which release is current
)

// Levels of an Event.
const (
	LevelInfo  = event.LevelInfo
	LevelWarn  = event.LevelWarn
	LevelError = event.LevelError
)

// Event is one thing a deploy did.
type Event struct {
	Time  time.Time   `json:"time"`
	Step  event.Step  `json:"step"`
	Level event.Level `json:"level"`
	// Service is the compose service it is about, if one.
	Service string `json:"service,omitempty"`
	Msg     string `json:"msg"`
	// Logs are a failed container's last log lines, oldest first.
	Logs []string `json:"logs,omitempty"`
}

// Outcomes of a deploy or rollback: pkg/event's, the words of pkg/deploy's host results.
const (
	ResultDeployed      = event.ResultDeployed      // the release is current and serving
	ResultFailed        = event.ResultFailed        // failed; the previous release was kept or put back
	ResultRestoreFailed = event.ResultRestoreFailed // failed, and putting the previous release back failed too
)

// Result is how a deploy or rollback ended: the last message of the stream.
type Result struct {
	App string `json:"app"`
	SHA string `json:"sha"` // the release asked for
	// Result is ResultDeployed, ResultFailed or ResultRestoreFailed.
	Result event.Result `json:"result"`
	// Current is the release current at the end; Previous the one before the deploy
	// ("" none).
	Current  string `json:"current,omitempty"`
	Previous string `json:"previous,omitempty"`
	// Error says why it failed.
	Error string `json:"error,omitempty"`
	// Logs are the last log lines of the container that failed, if one did.
	Logs     []string `json:"logs,omitempty"`
	Duration Duration `json:"duration"`
	// Pruned is what shipd pruned after the deploy, when the request's Keep asked it
	// to; nil when it did not (a failed deploy, Keep 0, or a shipd before Keep).
	Pruned *Pruned `json:"pruned,omitempty"`
	// Unlocked says shipd released shipctl's lock, as the request's Unlock asked.
	Unlocked bool `json:"unlocked,omitempty"`
}

// Pruned is what shipd's prune after a deploy removed.
type Pruned struct {
	// Releases are the removed releases' names.
	Releases []string `json:"releases,omitempty"`
	// Images are the image tags untagged.
	Images []string `json:"images,omitempty"`
	// Error says what could not be removed; the deploy succeeded all the same.
	Error string `json:"error,omitempty"`
}

// Message is one line of a deploy's stream: an Event, or the Result as the last line.
type Message struct {
	Event  *Event  `json:"event,omitempty"`
	Result *Result `json:"result,omitempty"`
}

// Route is one routed service as shipd serves it.
type Route struct {
	App     string `json:"app"`
	Service string `json:"service"`
	// Listen is the address shipd serves; Target the container address it proxies to.
	Listen    string `json:"listen"`
	Target    string `json:"target,omitempty"`
	Container string `json:"container,omitempty"` // the live container's name
	Release   string `json:"release,omitempty"`   // the release the live container runs
	// Since is when Target became live.
	Since    time.Time `json:"since,omitzero"`
	Requests uint64    `json:"requests"`
	InFlight int64     `json:"in_flight"`
	Error    string    `json:"error,omitempty"`
	// ListenTLS, Hosts, Paths and TLS are a route on shipd's shared front door: its
	// HTTPS address (Listen is then the plain one, "" for HTTPS only), the names it
	// serves (none: every name no other route serves), its path prefixes (none: "/")
	// and whether it is served over HTTPS.
	ListenTLS string   `json:"listen_tls,omitempty"`
	Hosts     []string `json:"hosts,omitempty"`
	Paths     []string `json:"paths,omitempty"`
	TLS       bool     `json:"tls,omitempty"`
}

// Cert is the certificate of one host name shipd serves over HTTPS.
type Cert struct {
	Host string `json:"host"`
	// Custom is a certificate the app brought (x-ship.tls cert and key), not ACME's.
	Custom   bool      `json:"custom,omitempty"`
	NotAfter time.Time `json:"not_after,omitzero"`
	// Error is why it could not be issued: the CA's reason and the fix.
	Error string `json:"error,omitempty"`
}

// App is one app shipd has deployed.
type App struct {
	App  string `json:"app"`
	Path string `json:"path"`
	// Release is the release shipd last made current; Previous the one before.
	Release  string    `json:"release,omitempty"`
	Previous string    `json:"previous,omitempty"`
	Since    time.Time `json:"since,omitzero"`
	// Deploying is the release being deployed now, if one is.
	Deploying string `json:"deploying,omitempty"`
	// LastResult and LastError are how the last deploy or rollback ended.
	LastResult event.Result `json:"last_result,omitempty"`
	LastError  string       `json:"last_error,omitempty"`
	LastTime   time.Time    `json:"last_time,omitzero"`
}

// Status is shipd's state.
type Status struct {
	Version string    `json:"version"`
	PID     int       `json:"pid"`
	Started time.Time `json:"started"`
	Uptime  Duration  `json:"uptime"`
	Routes  []Route   `json:"routes"`
	Apps    []App     `json:"apps"`
	// Certs are the certificates of the names served over HTTPS.
	Certs []Cert `json:"certs,omitempty"`
}

// Error codes of an ErrorBody.
const (
	CodeBadRequest = "bad-request" // the request cannot be carried out as written
	CodeLocked     = "locked"      // another deploy of the app is running
	CodeNotFound   = "not-found"   // no such release, or no previous one
	CodeInternal   = "internal"    // shipd failed
	CodeShutdown   = "shutting-down"
)

// ErrorBody is the body of a 4xx or 5xx answer.
type ErrorBody struct {
	Code  string `json:"code"`
	Error string `json:"error"`
}
