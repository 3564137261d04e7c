package engine

import (
	"context"
	"fmt"
	"maps"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/moby/moby/client"
)

// Labels docker compose v2 sets, and reads back in `docker compose ps`, `down` and `up`.
const (
	labelProject     = "com.docker.compose.project"
	labelService     = "com.docker.compose.service"
	labelNumber      = "com.docker.compose.container-number"
	labelOneOff      = "com.docker.compose.oneoff"
	labelConfigHash  = "com.docker.compose.config-hash"
	labelWorkingDir  = "com.docker.compose.project.working_dir"
	labelConfigFiles = "com.docker.compose.project.config_files"
	labelVersion     = "com.docker.compose.version"
	labelDependsOn   = "com.docker.compose.depends_on"
	labelImage       = "com.docker.compose.image"
	labelNetwork     = "com.docker.compose.network"
	labelVolume      = "com.docker.compose.volume"
)

// objectLabels are a network's or a volume's labels: the file's labels and custom
// labels, then those docker compose sets (kind is labelNetwork or labelVolume, key the
// object's name in the file, hash its NetworkHash or VolumeHash).
func objectLabels(project, kind, key, hash string, labels, custom map[string]string) map[string]string {
	out := map[string]string{}
	maps.Copy(out, labels)
	maps.Copy(out, custom)
	out[kind] = key
	out[labelProject] = project
	out[labelVersion] = ComposeVersion
	out[labelConfigHash] = hash
	return out
}

const (
	defaultWaitTimeout = 2 * time.Minute
	defaultPoll        = 200 * time.Millisecond
	healthLogLines     = 20
)

// Local returns a client for the engine named by the environment (DOCKER_HOST and
// friends, else the local socket). It negotiates its API version with the engine on
// its first request (down to client.MinAPIVersion), unless DOCKER_API_VERSION fixes it.
func Local() (*client.Client, error) {
	return client.New(client.FromEnv)
}

// Engine applies compose projects to one Docker engine.
type Engine struct {
	api client.APIClient

	// RegistryAuth, when set, returns the base64-encoded X-Registry-Auth value for
	// pulling image (a reference as written in the project); "" pulls anonymously.
	RegistryAuth func(image string) (string, error)

	// Dial, when set, opens a TCP connection from the engine's host (an SSH
	// connection's direct-tcpip channel): Up's HTTP health checks reach a container's
	// address on its network through it. nil dials from this machine.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)

	// Proxy is added to every container's environment where the service does not set
	// the key, as docker compose adds the docker CLI's proxy settings (see ProxyEnv).
	Proxy map[string]string

	poll time.Duration

	// pinged is set once the engine has answered a ping that negotiated the API
	// version: Check, Up and StartReplica ping once per Engine, not each time.
	pinged atomic.Bool
}

// New returns an Engine that talks to the engine behind api. The client should
// negotiate its API version (see Local).
func New(api client.APIClient) *Engine {
	return &Engine{api: api, poll: defaultPoll}
}

// Negotiated returns an Engine over a client that has already pinged the engine and
// negotiated its API version (pkg/sshx's Docker does): it does not ping again, a
// round trip saved on a far host.
func Negotiated(api client.APIClient) *Engine {
	e := New(api)
	e.pinged.Store(true)
	return e
}

// connect pings the engine, negotiating the API version, the first time it is
// called on e, and returns the version requests use.
func (e *Engine) connect(ctx context.Context) (string, error) {
	if !e.pinged.Load() {
		if _, err := e.api.Ping(ctx, client.PingOptions{NegotiateAPIVersion: true}); err != nil {
			return "", fmt.Errorf("connect to the docker engine: %w", err)
		}
		e.pinged.Store(true)
	}
	return e.api.ClientVersion(), nil
}

// Event is one step of Up or Down, reported through a Progress function.
//
// Action is one of "pull", "create", "start", "stop", "recreate", "unchanged", "wait",
// "healthy", "exited", "remove", "network", "volume". Service and Container are empty
// where they do not apply (networks, volumes); Msg says more in a few words.
type Event struct {
	Service, Container, Action, Msg string
}

// UpOptions tunes Up.
type UpOptions struct {
	// Services are the only services to start, with what they depend on; nil is all.
	Services []string
	// Wait, after starting, waits until every started container is healthy (when it
	// has a health check) or running (when it has none).
	Wait bool
	// WaitTimeout bounds Wait and each depends_on condition; 0 means 2 minutes.
	WaitTimeout time.Duration
	// RemoveOrphans removes the containers of services no longer in the project.
	RemoveOrphans bool
	// Progress, when set, receives events; it is called from one goroutine at a time.
	Progress func(Event)
	// HTTPHealth, by service, is an HTTP check that Wait makes too once the
	// container is healthy (or running): a GET of the path on the container's address
	// and port must answer 2xx within WaitTimeout (x-ship.health without shipd).
	HTTPHealth map[string]HTTPHealth
}

// HTTPHealth is an HTTP health check of a service's container: GET Path on Port of
// its address on the service's network.
type HTTPHealth struct {
	Path string
	Port int
}

// DownOptions tunes Down.
type DownOptions struct {
	// Volumes also removes the project's named volumes and its containers' anonymous ones.
	Volumes bool
	// Progress, when set, receives events; it is called from one goroutine at a time.
	Progress func(Event)
}

// Container is one container of a project, as `docker compose ps -a` shows it.
type Container struct {
	ID, Name, Service string
	Number            int
	OneOff            bool
	// Image is the image reference the container was created from.
	Image string
	// ImageID is the ID of the image it runs.
	ImageID string
	// State is created, running, paused, restarting, removing, exited or dead.
	State string
	// Health is starting, healthy or unhealthy; "" without a health check.
	Health   string
	ExitCode int
	// ConfigHash is the com.docker.compose.config-hash label.
	ConfigHash string
	// WorkingDir is the com.docker.compose.project.working_dir label: the folder of
	// the release that created it (<path>/releases/<name> for ship's).
	WorkingDir string
}

// LogOptions selects the logs Logs returns.
type LogOptions struct {
	// Services limits the logs to these services; nil is all.
	Services []string
	// Follow keeps streaming until the context ends or every container has stopped.
	Follow bool
	// Tail is the number of lines to show from the end of each log ("" or "all": all).
	Tail string
	// Timestamps prefixes each line with the engine's RFC 3339 timestamp.
	Timestamps bool
	// Attached, when set, is called once every container's stream is open (or failed
	// to open): from then on removing a container loses none of its lines.
	Attached func()
}

// LogLine is one line of a container's output.
type LogLine struct {
	Service, Container string
	// Stream is "stdout" or "stderr".
	Stream string
	// Text is the line without its trailing newline.
	Text string
}

// reporter serializes calls to a Progress function; its zero value discards events.
type reporter struct {
	mu sync.Mutex
	fn func(Event)
}

func newReporter(fn func(Event)) *reporter { return &reporter{fn: fn} }

func (r *reporter) event(service, container, action, msg string) {
	if r == nil || r.fn == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.fn(Event{Service: service, Container: container, Action: action, Msg: msg})
}

// apiVersion negotiates (when the client is set up to) and returns the API version
// requests will use.
func (e *Engine) apiVersion(ctx context.Context) string {
	v, _ := e.connect(ctx)
	if v == "" {
		return e.api.ClientVersion()
	}
	return v
}

// Ping checks that the engine answers.
func (e *Engine) Ping(ctx context.Context) error {
	_, err := e.api.Ping(ctx, client.PingOptions{})
	return err
}
