package engine

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/mount"
	"github.com/moby/moby/api/types/network"
)

func loadProject(t *testing.T, yaml string) *types.Project {
	t.Helper()
	p, err := loader.LoadWithContext(context.Background(), types.ConfigDetails{
		WorkingDir:  "/srv/app",
		ConfigFiles: []types.ConfigFile{{Filename: "/srv/app/compose.yaml", Content: []byte(yaml)}},
		Environment: types.Mapping{},
	}, func(o *loader.Options) { o.SetProjectName("demo", true) })
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	p.ComposeFiles = []string{"/srv/app/compose.yaml"} // the loader leaves it to its caller
	return p
}

func TestConfigHash(t *testing.T) {
	base := loadProject(t, `
services:
  web:
    image: app:1
    environment: {A: "1"}
    deploy: {replicas: 1}
`).Services["web"]
	h0, err := ConfigHash(base)
	if err != nil {
		t.Fatal(err)
	}
	if h, _ := ConfigHash(base); h != h0 || len(h0) != 64 {
		t.Fatalf("hash not stable: %s, %s", h0, h)
	}
	tests := []struct {
		name   string
		change func(s *types.ServiceConfig)
		same   bool
	}{
		{"environment", func(s *types.ServiceConfig) { v := "2"; s.Environment = types.MappingWithEquals{"A": &v} }, false},
		{"image", func(s *types.ServiceConfig) { s.Image = "app:2" }, false},
		{"command", func(s *types.ServiceConfig) { s.Command = types.ShellCommand{"serve"} }, false},
		{"build", func(s *types.ServiceConfig) { s.Build = &types.BuildConfig{Context: "."} }, true},
		{"profiles", func(s *types.ServiceConfig) { s.Profiles = []string{"debug"} }, true},
		{"pull_policy", func(s *types.ServiceConfig) { s.PullPolicy = "always" }, true},
		{"depends_on", func(s *types.ServiceConfig) {
			s.DependsOn = types.DependsOnConfig{"db": {Condition: "service_started"}}
		}, true},
		{"x-ship", func(s *types.ServiceConfig) { s.Extensions = types.Extensions{"x-ship": map[string]any{"port": 80}} }, true},
		{"replicas", func(s *types.ServiceConfig) { n := 1; s.Deploy = &types.DeployConfig{Replicas: &n} }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := base
			s.Environment = types.MappingWithEquals{}
			for k, v := range base.Environment {
				s.Environment[k] = v
			}
			tt.change(&s)
			h, err := ConfigHash(s)
			if err != nil {
				t.Fatal(err)
			}
			if (h == h0) != tt.same {
				t.Errorf("hash changed = %v, want %v", h != h0, !tt.same)
			}
		})
	}
	if base.Deploy == nil || base.Deploy.Replicas == nil {
		t.Errorf("ConfigHash changed the caller's deploy.replicas")
	}
}

func TestBuildCreate(t *testing.T) {
	p := loadProject(t, `
services:
  web:
    image: app:1
    command: ["serve", "--fast"]
    entrypoint: /bin/app
    environment: {B: "2", A: "1", EMPTY: ""}
    ports:
      - "127.0.0.1:8080:80"
      - "9000-9001:9000-9001/udp"
      - target: 443
        published: "8443"
        host_ip: 0.0.0.0
    expose: ["3000", "4000-4001/udp"]
    volumes:
      - ./conf:/etc/app:ro
      - type: bind
        source: /var/run/app.sock
        target: /run/app.sock
        bind: {create_host_path: false}
      - data:/data:nocopy
      - data:/plain:ro
      - type: tmpfs
        target: /cache
        tmpfs: {size: 1m}
      - /anon
    tmpfs: ["/run:size=64k", "/tmp"]
    restart: on-failure:3
    healthcheck:
      test: ["CMD", "/app", "health"]
      interval: 500ms
      timeout: 2s
      retries: 4
      start_period: 1s
      start_interval: 100ms
    labels: {team: core}
    user: "1000:1000"
    working_dir: /app/work
    extra_hosts: ["db.local:10.0.0.2"]
    stop_grace_period: 1m30s
    stop_signal: SIGINT
    hostname: web1
    domainname: example.com
    init: true
    read_only: true
    tty: true
    stdin_open: true
    privileged: true
    cap_add: [NET_ADMIN]
    cap_drop: [ALL]
    dns: [1.1.1.1]
    dns_search: [example.com]
    sysctls: {net.core.somaxconn: "1024"}
    shm_size: 64m
    mem_limit: 256m
    cpus: 0.1
    ulimits:
      nofile: {soft: 1024, hard: 2048}
      nproc: 512
    logging: {driver: json-file, options: {max-size: 10m}}
    depends_on:
      db: {condition: service_healthy}
    networks:
      front: {}
      back: {aliases: [api], ipv4_address: 172.30.0.10}
  db:
    image: db:1
    networks: [back]
networks:
  front: {}
  back:
    ipam: {config: [{subnet: 172.30.0.0/24}]}
volumes:
  data: {}
`)
	s := p.Services["web"]
	in := createInput{project: p, service: s, number: 1, hash: "h", imageID: "sha256:abc", apiVersion: "1.41",
		inherit: map[string]string{"/anon": "anon-vol", "/image-vol": "img-vol"}}
	spec, err := buildCreate(in)
	if err != nil {
		t.Fatal(err)
	}
	c, h := spec.config, spec.host
	if spec.name != "demo-web-1" || c.Image != "app:1" {
		t.Errorf("name, image = %s, %s", spec.name, c.Image)
	}
	if !slices.Equal(c.Cmd, []string{"serve", "--fast"}) || !slices.Equal(c.Entrypoint, []string{"/bin/app"}) {
		t.Errorf("cmd %v entrypoint %v", c.Cmd, c.Entrypoint)
	}
	if !slices.Equal(c.Env, []string{"A=1", "B=2", "EMPTY="}) {
		t.Errorf("env = %v", c.Env)
	}
	for k, want := range map[string]string{
		labelProject: "demo", labelService: "web", labelNumber: "1", labelOneOff: "False",
		labelConfigHash: "h", labelImage: "sha256:abc", labelWorkingDir: "/srv/app",
		labelConfigFiles: "/srv/app/compose.yaml", labelDependsOn: "db:service_healthy:false",
		labelVersion: ComposeVersion, "team": "core",
	} {
		if c.Labels[k] != want {
			t.Errorf("label %s = %q, want %q", k, c.Labels[k], want)
		}
	}
	for _, port := range []string{"80/tcp", "9000/udp", "9001/udp", "443/tcp", "3000/tcp", "4000/udp", "4001/udp"} {
		if _, ok := c.ExposedPorts[network.MustParsePort(port)]; !ok {
			t.Errorf("port %s not exposed: %v", port, c.ExposedPorts)
		}
	}
	if b := h.PortBindings[network.MustParsePort("80/tcp")]; len(b) != 1 || b[0] != (network.PortBinding{HostIP: netip.MustParseAddr("127.0.0.1"), HostPort: "8080"}) {
		t.Errorf("80/tcp bindings = %v", b)
	}
	if b := h.PortBindings[network.MustParsePort("443/tcp")]; len(b) != 1 || b[0] != (network.PortBinding{HostIP: netip.MustParseAddr("0.0.0.0"), HostPort: "8443"}) {
		t.Errorf("443/tcp bindings = %v", b)
	}
	if b := h.PortBindings[network.MustParsePort("9001/udp")]; len(b) != 1 || b[0].HostPort != "9001" {
		t.Errorf("9001/udp bindings = %v", b)
	}
	// A named volume without options is a Binds entry, as docker compose writes it.
	if !slices.Equal(h.Binds, []string{"/srv/app/conf:/etc/app:ro", "demo_data:/plain:ro"}) {
		t.Errorf("binds = %v", h.Binds)
	}
	wantMounts := []mount.Mount{
		{Type: mount.TypeBind, Source: "/var/run/app.sock", Target: "/run/app.sock"},
		{Type: mount.TypeVolume, Source: "demo_data", Target: "/data", VolumeOptions: &mount.VolumeOptions{NoCopy: true}},
		{Type: mount.TypeTmpfs, Target: "/cache", TmpfsOptions: &mount.TmpfsOptions{SizeBytes: 1 << 20}},
		{Type: mount.TypeVolume, Source: "anon-vol", Target: "/anon"},
		{Type: mount.TypeVolume, Source: "img-vol", Target: "/image-vol"},
	}
	if len(h.Mounts) != len(wantMounts) {
		t.Fatalf("mounts = %+v", h.Mounts)
	}
	for i, want := range wantMounts {
		got := h.Mounts[i]
		if got.Type != want.Type || got.Source != want.Source || got.Target != want.Target ||
			(want.VolumeOptions != nil && (got.VolumeOptions == nil || got.VolumeOptions.NoCopy != want.VolumeOptions.NoCopy)) ||
			(want.TmpfsOptions != nil && (got.TmpfsOptions == nil || got.TmpfsOptions.SizeBytes != want.TmpfsOptions.SizeBytes)) {
			t.Errorf("mount %d = %+v, want %+v", i, got, want)
		}
	}
	if h.Tmpfs["/run"] != "size=64k" || h.Tmpfs["/tmp"] != "" || len(h.Tmpfs) != 2 {
		t.Errorf("tmpfs = %v", h.Tmpfs)
	}
	if h.RestartPolicy != (container.RestartPolicy{Name: container.RestartPolicyOnFailure, MaximumRetryCount: 3}) {
		t.Errorf("restart = %+v", h.RestartPolicy)
	}
	hc := c.Healthcheck
	if hc == nil || !slices.Equal(hc.Test, []string{"CMD", "/app", "health"}) || hc.Interval != 500*time.Millisecond ||
		hc.Timeout != 2*time.Second || hc.Retries != 4 || hc.StartPeriod != time.Second || hc.StartInterval != 0 {
		t.Errorf("healthcheck = %+v (start_interval must be dropped before API 1.44)", hc)
	}
	if c.User != "1000:1000" || c.WorkingDir != "/app/work" || c.Hostname != "web1" || c.Domainname != "example.com" ||
		c.StopSignal != "SIGINT" || c.StopTimeout == nil || *c.StopTimeout != 90 || !c.Tty || !c.OpenStdin {
		t.Errorf("config = %+v", c)
	}
	if !slices.Equal(h.ExtraHosts, []string{"db.local:10.0.0.2"}) || h.Init == nil || !*h.Init || !h.ReadonlyRootfs ||
		!h.Privileged || !slices.Equal(h.CapAdd, []string{"NET_ADMIN"}) || !slices.Equal(h.CapDrop, []string{"ALL"}) ||
		!slices.Equal(h.DNS, []netip.Addr{netip.MustParseAddr("1.1.1.1")}) || !slices.Equal(h.DNSSearch, []string{"example.com"}) ||
		h.Sysctls["net.core.somaxconn"] != "1024" || h.ShmSize != 64<<20 {
		t.Errorf("host config = %+v", h)
	}
	if h.Memory != 256<<20 || h.NanoCPUs != 100_000_000 {
		t.Errorf("memory %d, nano cpus %d", h.Memory, h.NanoCPUs)
	}
	if len(h.Ulimits) != 2 || *h.Ulimits[0] != (container.Ulimit{Name: "nofile", Soft: 1024, Hard: 2048}) ||
		*h.Ulimits[1] != (container.Ulimit{Name: "nproc", Soft: 512, Hard: 512}) {
		t.Errorf("ulimits = %v, %v", h.Ulimits[0], h.Ulimits[1])
	}
	if h.LogConfig.Type != "json-file" || h.LogConfig.Config["max-size"] != "10m" {
		t.Errorf("logging = %+v", h.LogConfig)
	}

	// API 1.41: created on the primary network (back: it sorts first), connected to the other after.
	if h.NetworkMode != "demo_back" || len(spec.network.EndpointsConfig) != 1 {
		t.Fatalf("network mode %s, endpoints %v", h.NetworkMode, spec.network.EndpointsConfig)
	}
	back := spec.network.EndpointsConfig["demo_back"]
	if !slices.Equal(back.Aliases, []string{"demo-web-1", "web", "api"}) || back.IPAMConfig == nil || back.IPAMConfig.IPv4Address != netip.MustParseAddr("172.30.0.10") {
		t.Errorf("back endpoint = %+v", back)
	}
	if len(spec.connect) != 1 || spec.connect[0].network != "demo_front" || !slices.Equal(spec.connect[0].settings.Aliases, []string{"demo-web-1", "web"}) {
		t.Errorf("connect after create = %+v", spec.connect)
	}

	// API 1.44: every network at create, and start_interval.
	in.apiVersion = "1.44"
	spec, err = buildCreate(in)
	if err != nil {
		t.Fatal(err)
	}
	if len(spec.network.EndpointsConfig) != 2 || len(spec.connect) != 0 {
		t.Errorf("API 1.44: endpoints %v, connect %v", spec.network.EndpointsConfig, spec.connect)
	}
	if spec.config.Healthcheck.StartInterval != 100*time.Millisecond {
		t.Errorf("API 1.44: start_interval = %s", spec.config.Healthcheck.StartInterval)
	}
}

func TestBuildCreateNetworkModeAndDefaults(t *testing.T) {
	p := loadProject(t, `
services:
  web:
    image: app:1
  side:
    image: app:1
    network_mode: service:web
    container_name: sidecar
    healthcheck: {disable: true}
  host:
    image: app:1
    network_mode: host
    restart: unless-stopped
`)
	spec, err := buildCreate(createInput{project: p, service: p.Services["web"], number: 1, apiVersion: "1.41"})
	if err != nil {
		t.Fatal(err)
	}
	if spec.host.NetworkMode != "demo_default" || spec.host.RestartPolicy.Name != "" || spec.config.Healthcheck != nil {
		t.Errorf("web: mode %s restart %+v health %+v", spec.host.NetworkMode, spec.host.RestartPolicy, spec.config.Healthcheck)
	}
	spec, err = buildCreate(createInput{project: p, service: p.Services["side"], number: 1, apiVersion: "1.41", networkMode: "container:abc"})
	if err != nil {
		t.Fatal(err)
	}
	if spec.name != "sidecar" || spec.host.NetworkMode != "container:abc" || spec.network != nil {
		t.Errorf("side: name %s mode %s network %v", spec.name, spec.host.NetworkMode, spec.network)
	}
	if hc := spec.config.Healthcheck; hc == nil || !slices.Equal(hc.Test, []string{"NONE"}) {
		t.Errorf("disabled healthcheck = %+v", hc)
	}
	spec, err = buildCreate(createInput{project: p, service: p.Services["host"], number: 1, apiVersion: "1.41"})
	if err != nil {
		t.Fatal(err)
	}
	if spec.host.NetworkMode != "host" || spec.host.RestartPolicy.Name != container.RestartPolicyUnlessStopped {
		t.Errorf("host: mode %s restart %+v", spec.host.NetworkMode, spec.host.RestartPolicy)
	}
}

func TestRestartPolicy(t *testing.T) {
	for in, want := range map[string]container.RestartPolicy{
		"no":             {Name: "no"},
		"always":         {Name: "always"},
		"unless-stopped": {Name: "unless-stopped"},
		"on-failure":     {Name: "on-failure"},
		"on-failure:5":   {Name: "on-failure", MaximumRetryCount: 5},
	} {
		got, err := restartPolicy(in)
		if err != nil || got != want {
			t.Errorf("restartPolicy(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	for _, bad := range []string{"sometimes", "always:3", "on-failure:x", "on-failure:-1"} {
		if _, err := restartPolicy(bad); err == nil {
			t.Errorf("restartPolicy(%q): no error", bad)
		}
	}
}

func TestCheckRefusesByName(t *testing.T) {
	p := loadProject(t, `
services:
  web:
    image: app:1
    secrets: [token]
    devices: ["/dev/fuse"]
    scale: 3
    pull_policy: daily
    volumes:
      - type: volume
        source: data
        target: /data
        volume: {subpath: sub}
    security_opt: ["seccomp=profile.json", "no-new-privileges:true"]
  ok:
    image: app:1
    security_opt: ["seccomp=unconfined"]
secrets:
  token: {file: ./token}
volumes:
  data: {}
`)
	err := check(p, p.ServiceNames(), "1.41")
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{
		`service "web": secrets is not supported`,
		`service "web": devices is not supported`,
		`service "web": scale 3 is not supported`,
		`service "web": pull_policy "daily" is not supported`,
		`service "web": volume /data: subpath needs Docker API 1.45`,
		`service "web": security_opt seccomp=profile.json`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	if strings.Contains(err.Error(), `service "ok"`) {
		t.Errorf("service ok refused:\n%v", err)
	}
	if err := check(p, []string{"ok"}, "1.41"); err != nil {
		t.Errorf("check(ok) = %v", err)
	}
}

// start_interval runs from API 1.44 and is refused below it, naming the engine's version.
func TestCheckStartInterval(t *testing.T) {
	p := loadProject(t, `
services:
  web:
    image: app:1
    healthcheck: {test: ["CMD", "true"], interval: 5s, start_interval: 1s}
`)
	err := check(p, p.ServiceNames(), "1.43")
	want := `service "web": healthcheck.start_interval needs Docker API 1.44 (Docker 25), the engine has API 1.43`
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("API 1.43: err = %v, want %q", err, want)
	}
	if err := check(p, p.ServiceNames(), "1.44"); err != nil {
		t.Errorf("API 1.44: %v", err)
	}
}

func TestDependencies(t *testing.T) {
	dep := func(names ...string) types.DependsOnConfig {
		d := types.DependsOnConfig{}
		for _, n := range names {
			d[n] = types.ServiceDependency{Condition: types.ServiceConditionStarted, Required: true}
		}
		return d
	}
	svc := func(name string, deps ...string) types.ServiceConfig {
		s := types.ServiceConfig{Name: name}
		s.DependsOn = dep(deps...)
		return s
	}
	p := &types.Project{Name: "demo", Services: types.Services{
		"web": svc("web", "api"), "api": svc("api", "db"), "db": svc("db"), "cron": svc("cron", "db"),
	}}
	got, err := selectServices(p, []string{"web"})
	if err != nil || !slices.Equal(got, []string{"api", "db", "web"}) {
		t.Errorf("selectServices(web) = %v, %v", got, err)
	}
	if _, err := selectServices(p, []string{"nope"}); err == nil || !strings.Contains(err.Error(), "no such service: nope") {
		t.Errorf("selectServices(nope) = %v", err)
	}
	if err := checkDependencies(p, p.ServiceNames()); err != nil {
		t.Errorf("checkDependencies = %v", err)
	}

	p.Services["db"] = svc("db", "web")
	err = checkDependencies(p, p.ServiceNames())
	if err == nil || !strings.Contains(err.Error(), "dependency cycle: api -> db -> web -> api") {
		t.Errorf("cycle: err = %v", err)
	}

	opt := svc("web")
	opt.DependsOn = types.DependsOnConfig{"gone": {Condition: types.ServiceConditionStarted, Required: false}}
	p = &types.Project{Name: "demo", Services: types.Services{"web": opt}}
	if d := dependencies(p, opt); len(d) != 0 {
		t.Errorf("optional missing dependency kept: %v", d)
	}
}

// frame is one frame of the engine's multiplexed log stream.
func frame(stream byte, s string) []byte {
	hdr := make([]byte, 8)
	hdr[0] = stream
	binary.BigEndian.PutUint32(hdr[4:], uint32(len(s)))
	return append(hdr, s...)
}

func TestReadLines(t *testing.T) {
	var raw bytes.Buffer
	raw.Write(frame(1, "one\ntw"))
	raw.Write(frame(2, "err 1\r\n"))
	raw.Write(frame(1, "o\nthree"))
	var got []string
	err := readLines(&raw, false, func(stream, line string) { got = append(got, stream+":"+line) })
	want := []string{"stdout:one", "stderr:err 1", "stdout:two", "stdout:three"}
	if err != nil || !slices.Equal(got, want) {
		t.Errorf("readLines = %q, %v; want %q", got, err, want)
	}

	got = nil
	err = readLines(strings.NewReader("a\r\nb\nc"), true, func(stream, line string) { got = append(got, stream+":"+line) })
	if err != nil || !slices.Equal(got, []string{"stdout:a", "stdout:b", "stdout:c"}) {
		t.Errorf("readLines tty = %q, %v", got, err)
	}

	raw.Reset()
	raw.Write(frame(1, "partial"))
	raw.Write([]byte{1, 0, 0})
	if err := readLines(&raw, false, func(string, string) {}); err == nil {
		t.Errorf("truncated header: no error")
	}
}

func TestStopOrder(t *testing.T) {
	c := func(service, deps string) container.Summary {
		return container.Summary{ID: service, Labels: map[string]string{labelService: service, labelDependsOn: deps}}
	}
	levels := stopOrder([]container.Summary{
		c("db", ""), c("web", "api:service_started:false"), c("api", "db:service_healthy:false,cache:service_started:true"),
		c("cache", ""),
	})
	var got [][]string
	for _, l := range levels {
		var ids []string
		for _, c := range l {
			ids = append(ids, c.ID)
		}
		got = append(got, ids)
	}
	want := [][]string{{"web"}, {"api"}, {"cache", "db"}}
	if !slices.EqualFunc(got, want, slices.Equal) {
		t.Errorf("stopOrder = %v, want %v", got, want)
	}
	// A cycle in the labels does not hang.
	if levels := stopOrder([]container.Summary{c("a", "b:x:false"), c("b", "a:x:false")}); len(levels) != 1 || len(levels[0]) != 2 {
		t.Errorf("cycle: %v", levels)
	}
}

func TestHealthErrorMessage(t *testing.T) {
	err := error(&HealthError{Service: "web", Container: "demo-web-1", Status: "unhealthy", Logs: []string{"a", "b"}})
	if want := "container demo-web-1: unhealthy; its last log lines:\n    a\n    b"; err.Error() != want {
		t.Errorf("Error() = %q, want %q", err.Error(), want)
	}
	if !errors.Is(err, ErrUnhealthy) {
		t.Errorf("not ErrUnhealthy")
	}
}

// The docker CLI's proxies reach a container's environment as docker compose adds them:
// the engine's own entry, else default, upper and lower case, under the service's own.
func TestProxyEnv(t *testing.T) {
	dir := t.TempDir()
	cfg := `{"proxies": {
  "default": {"httpProxy": "http://proxy:3128", "noProxy": "localhost"},
  "tcp://other:2376": {"httpsProxy": "http://other-proxy:3128"}
}}`
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := ProxyEnv(dir, "unix:///var/run/docker.sock")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"HTTP_PROXY": "http://proxy:3128", "http_proxy": "http://proxy:3128", "NO_PROXY": "localhost", "no_proxy": "localhost"}
	if !maps.Equal(got, want) {
		t.Errorf("default: %v, want %v", got, want)
	}
	if got, _ := ProxyEnv(dir, "tcp://other:2376"); got["HTTPS_PROXY"] != "http://other-proxy:3128" || got["HTTP_PROXY"] != "" {
		t.Errorf("the engine's own entry: %v", got)
	}
	if got, err := ProxyEnv(t.TempDir(), "x"); got != nil || err != nil {
		t.Errorf("no config file: %v, %v", got, err)
	}

	p := loadProject(t, `
services:
  web:
    image: app:1
    environment: {NO_PROXY: "*.internal", A: "1"}
`)
	spec, err := buildCreate(createInput{project: p, service: p.Services["web"], number: 1, apiVersion: "1.44", proxy: want})
	if err != nil {
		t.Fatal(err)
	}
	env := strings.Join(spec.config.Env, " ")
	if env != "A=1 HTTP_PROXY=http://proxy:3128 NO_PROXY=*.internal http_proxy=http://proxy:3128 no_proxy=localhost" {
		t.Errorf("env = %s", env)
	}
}
