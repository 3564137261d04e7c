package cli

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/shipdeploy/ship/pkg/config"
	"github.com/shipdeploy/ship/pkg/deploy"
	"github.com/shipdeploy/ship/pkg/image"
)

// fakeRegistry answers Ping with err and holds no image.
type fakeRegistry struct {
	err   error
	asked []string
}

func (r *fakeRegistry) Ping(_ context.Context, host string) error {
	r.asked = append(r.asked, host)
	return r.err
}
func (r *fakeRegistry) HasManifest(context.Context, string) (bool, error) { return false, nil }

// TestShipPreflightBeforeBuild: ship checks the registry and the hosts before it
// builds: a registry that does not answer, or a host that cannot be reached, stops it
// at the preflight step with nothing built (the engine never asked).
func TestShipPreflightBeforeBuild(t *testing.T) {
	for _, tc := range []struct {
		name      string
		regErr    error
		wantErr   string
		wantDials string
	}{
		{name: "registry", regErr: errors.New("registry does not answer: dial tcp 10.0.0.1:5000: connection refused"),
			wantErr: "preflight: registry r.example.com: registry does not answer", wantDials: ""},
		{name: "host", wantErr: "deploy@web1: dial tcp: connection refused", wantDials: "deploy@web1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := appDir(t, "shop", map[string]string{"ship.yaml": hostsYAML, "docker-compose.yml": "services:\n  web:\n    build: .\n    image: shop/web\n", "Dockerfile": "FROM scratch\n"})
			git(t, dir, "init", "-q")
			git(t, dir, "add", ".")
			git(t, dir, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "first")
			io, out, errOut := testIO("", false)
			io.Getenv = func(k string) string { return map[string]string{"DOCKER_CONFIG": t.TempDir()}[k] }
			u := &unreachable{}
			f := u.factory(io)
			built := false
			f.Engine = func() (*client.Client, error) { built = true; return nil, errors.New("no engine in this test") }
			reg := &fakeRegistry{err: tc.regErr}
			f.Registry = func(*image.Keychain) Registry { return reg }
			code := run([]string{"ship", "prod", "--json"}, f)
			if code != ExitError || !strings.Contains(errOut.String(), tc.wantErr) {
				t.Fatalf("exit %d, want 1 and %q\nstdout:\n%s\nstderr:\n%s", code, tc.wantErr, out, errOut)
			}
			if built {
				t.Error("the engine was asked to build before the preflight passed")
			}
			if strings.Join(reg.asked, ",") != "r.example.com" {
				t.Errorf("registries asked: %v", reg.asked)
			}
			if strings.Join(u.dests, ",") != tc.wantDials {
				t.Errorf("dialled %v, want %q", u.dests, tc.wantDials)
			}
			var last map[string]any
			lines := strings.Split(strings.TrimSpace(out.String()), "\n")
			if err := json.Unmarshal([]byte(lines[len(lines)-1]), &last); err != nil {
				t.Fatal(err)
			}
			if last["event"] != "ship_failed" || last["step"] != "preflight" || last["exit_code"] != float64(ExitError) {
				t.Errorf("last event = %v, want ship_failed at the preflight", last)
			}
		})
	}
}

// TestMessages: what a user sees for a missing environment argument, a SHIP_REGISTRY
// that is not host[:port][/path], and a deploy's last event under --json.
func TestMessages(t *testing.T) {
	twoEnvs := "app: shop\nregistry: r.example.com\nenvironments:\n  staging:\n    hosts: [deploy@web2]\n    path: /srv/shop\n  prod:\n    hosts: [deploy@web1]\n    path: /srv/shop\n"
	compose := "services:\n  web:\n    image: nginx\n"
	tests := []struct {
		name     string
		files    map[string]string
		env      map[string]string
		args     []string
		wantCode int
		wantErr  string
	}{
		{"missing env", map[string]string{"ship.yaml": twoEnvs, "docker-compose.yml": compose}, nil, []string{"ship"}, ExitUsage,
			"error: shipctl ship needs an environment: one of prod, staging (from ship.yaml), e.g. shipctl ship prod\n"},
		{"missing env, no ship.yaml", map[string]string{}, nil, []string{"deploy"}, ExitUsage,
			"shipctl deploy needs an environment of ship.yaml (shipctl deploy ENV), and ship.yaml cannot be read"},
		{"SHIP_REGISTRY with a scheme", map[string]string{"ship.yaml": twoEnvs, "docker-compose.yml": compose},
			map[string]string{"SHIP_REGISTRY": "https://r.example.com"}, []string{"deploy", "prod"}, ExitUsage,
			`SHIP_REGISTRY: "https://r.example.com" has a scheme; write it without one: "SHIP_REGISTRY=r.example.com"`},
		{"SHIP_REGISTRY not a host", map[string]string{"ship.yaml": twoEnvs, "docker-compose.yml": compose},
			map[string]string{"SHIP_REGISTRY": "r.example.com:99999"}, []string{"push"}, ExitUsage,
			"SHIP_REGISTRY: port 99999 is not from 1 to 65535"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			appDir(t, "shop", tt.files)
			io, out, errOut := testIO("", false)
			io.Getenv = func(k string) string { return tt.env[k] }
			if code := Main(tt.args, io); code != tt.wantCode {
				t.Fatalf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tt.wantCode, out, errOut)
			}
			if !strings.Contains(errOut.String(), tt.wantErr) {
				t.Errorf("stderr lacks %q:\n%s", tt.wantErr, errOut)
			}
			if strings.Count(errOut.String(), "error: ") != 1 {
				t.Errorf("the error is not printed once:\n%s", errOut)
			}
		})
	}
}

// TestDeployResultJSON: with --json a deploy always ends with one deploy_result event
// that carries the exit code, each host's duration, and the error.
func TestDeployResultJSON(t *testing.T) {
	io, out, _ := testIO("", false)
	g := &Globals{Factory: NewFactory(io), JSON: true}
	sum := &deploy.Summary{Env: "prod", SHA: strings.Repeat("b", 40), Hosts: []deploy.HostResult{
		{Host: "deploy@web1", Result: deploy.ResultLocked, Err: errors.New("locked")},
	}}
	renderDeployResult(g, newPrinter(g), sum, &deploy.LockedError{Host: "deploy@web1"})
	renderDeployResult(g, newPrinter(g), nil, errors.New("preflight: deploy@web1: connection refused"))
	sum.Hosts[0] = deploy.HostResult{Host: "deploy@web1", Result: deploy.ResultDeployed, Took: 1500 * time.Millisecond}
	renderDeployResult(g, newPrinter(g), sum, nil)
	var evs []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		var ev map[string]any
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		evs = append(evs, ev)
	}
	if len(evs) != 3 {
		t.Fatalf("events: %v", evs)
	}
	for i, want := range []float64{ExitLocked, ExitError, ExitOK} {
		if evs[i]["event"] != "deploy_result" || evs[i]["exit_code"] != want {
			t.Errorf("event %d = %v, want deploy_result with exit_code %v", i, evs[i], want)
		}
	}
	if evs[1]["error"] != "preflight: deploy@web1: connection refused" {
		t.Errorf("no error in %v", evs[1])
	}
	if h := evs[2]["hosts"].([]any)[0].(map[string]any); h["seconds"] != 1.5 {
		t.Errorf("host = %v, want seconds 1.5", h)
	}
}

// TestGraceFlag: --grace and SHIP_GRACE replace the environment's grace period; 0
// skips the countdown and says so.
func TestGraceFlag(t *testing.T) {
	tests := []struct {
		name     string
		flag     *time.Duration
		env      string
		want     time.Duration
		wantSkip string
		wantErr  string
	}{
		{name: "none", want: 30 * time.Second},
		{name: "--grace 0", flag: new(time.Duration), wantSkip: "the grace period of 30s skipped (--grace 0)"},
		{name: "SHIP_GRACE=0", env: "0", wantSkip: "the grace period of 30s skipped (SHIP_GRACE=0)"},
		{name: "SHIP_GRACE=5s", env: "5s", want: 5 * time.Second},
		{name: "the flag wins", flag: new(time.Duration), env: "5s", wantSkip: "(--grace 0)"},
		{name: "SHIP_GRACE=soon", env: "soon", wantErr: `SHIP_GRACE="soon": want a duration`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			io, _, _ := testIO("", false)
			io.Getenv = func(k string) string { return map[string]string{"SHIP_GRACE": tt.env}[k] }
			g := &Globals{Factory: NewFactory(io)}
			f := graceFlag{}
			if tt.flag != nil {
				f.Grace, f.GraceSet = *tt.flag, true
			}
			env := &config.Environment{Name: "prod", Grace: 30 * time.Second}
			skip, err := f.apply(g, env)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || exitCode(err) != ExitUsage {
					t.Fatalf("err = %v, want %q (exit 2)", err, tt.wantErr)
				}
				return
			}
			if err != nil || env.Grace != tt.want || !strings.Contains(skip, tt.wantSkip) || (tt.wantSkip == "") != (skip == "") {
				t.Errorf("grace %s, skip %q, err %v; want %s, %q", env.Grace, skip, err, tt.want, tt.wantSkip)
			}
		})
	}
}

// TestCompletion: the shell completion offers the environments of ship.yaml for ENV
// and the compose file's services for logs ENV SERVICE.
func TestCompletion(t *testing.T) {
	appDir(t, "shop", map[string]string{
		"ship.yaml":          "app: shop\nregistry: r.example.com\nenvironments:\n  staging:\n    hosts: [deploy@web2]\n    path: /srv/shop\n  prod:\n    hosts: [deploy@web1]\n    path: /srv/shop\n",
		"docker-compose.yml": "services:\n  web:\n    image: nginx\n  migrate:\n    image: nginx\n",
	})
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"__complete", "deploy", ""}, "prod\nstaging\n:4\n"},
		{[]string{"__complete", "rollback", "st"}, "prod\nstaging\n:4\n"},
		{[]string{"__complete", "logs", "prod", ""}, "web\nmigrate\n:4\n"},
		{[]string{"__complete", "logs", "prod", "web", ""}, "migrate\n:4\n"},
	} {
		io, out, _ := testIO("", false)
		if code := Main(tc.args, io); code != 0 {
			t.Errorf("%v: exit %d", tc.args, code)
		}
		if !strings.HasPrefix(out.String(), tc.want) {
			t.Errorf("%v: completions %q, want %q", tc.args, out, tc.want)
		}
	}
}

// TestSkippedGraceSaid: a countdown skipped by --grace 0 is said, after the
// confirmation, instead of counted.
func TestSkippedGraceSaid(t *testing.T) {
	io, out, _ := testIO("", false)
	g := &Globals{Factory: NewFactory(io), Yes: true}
	env := &config.Environment{Name: "prod", Confirm: true, Grace: 30 * time.Second}
	f := graceFlag{GraceSet: true}
	skip, err := f.apply(g, env)
	if err != nil {
		t.Fatal(err)
	}
	p := newPrinter(g)
	if err := withSkippedGrace(p, confirmer(g, p, env, "deploy", true), skip)(context.Background(), testPreview()); err != nil {
		t.Fatal(err)
	}
	text := out.String()
	yes, skipped := strings.Index(text, "==> confirmed by --yes"), strings.Index(text, "==> no countdown: the grace period of 30s skipped (--grace 0)")
	if yes < 0 || skipped < yes || strings.Contains(text, "starting in") {
		t.Errorf("stdout:\n%s\nwant the --yes answer, then the skipped countdown, and no countdown", text)
	}
}

// TestLockFailurePrintedOnce: as text, the failure to take a lock is not shown as an
// event too, since it is the command's error; with --json it stays an event.
func TestLockFailurePrintedOnce(t *testing.T) {
	ev := deploy.Event{Host: "deploy@web1", Step: deploy.StepLock, Level: deploy.LevelError, Msg: "deploy@web1 is locked by alice@desk"}
	for _, json := range []bool{false, true} {
		io, out, errOut := testIO("", false)
		g := &Globals{Factory: NewFactory(io), JSON: json}
		renderDeployEvent(g, newPrinter(g), ev)
		shown := strings.Contains(out.String()+errOut.String(), "is locked by")
		if shown != json {
			t.Errorf("json %v: shown %v; stdout %q stderr %q", json, shown, out, errOut)
		}
	}
}

// TestShipCannotAskFailsFirst: an environment with confirm: true and no terminal to
// ask on (CI without --yes) fails ship at once, before the preflight and the build.
func TestShipCannotAskFailsFirst(t *testing.T) {
	dir := appDir(t, "shop", map[string]string{
		"ship.yaml":          "app: shop\nregistry: r.example.com\nenvironments:\n  prod:\n    hosts: [deploy@web1]\n    path: /srv/shop\n    confirm: true\n",
		"docker-compose.yml": "services:\n  web:\n    build: .\n    image: shop/web\n", "Dockerfile": "FROM scratch\n",
	})
	git(t, dir, "init", "-q")
	git(t, dir, "add", ".")
	git(t, dir, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "first")
	io, out, errOut := testIO("", false)
	u := &unreachable{}
	f := u.factory(io)
	built := false
	f.Engine = func() (*client.Client, error) { built = true; return nil, errors.New("no engine in this test") }
	if code := run([]string{"ship", "prod"}, f); code != ExitUsage || !strings.Contains(errOut.String(), "prod asks for a confirmation (confirm: true) and there is no terminal to ask on: run with --yes") {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	if built || len(u.dests) > 0 || out.Len() > 0 {
		t.Errorf("something ran before the refusal: built %v, dialled %v, stdout %q", built, u.dests, out)
	}
}

// TestEachErrorPrintedOnce: as text, a host's failure is printed once, as its FAILED
// event; the last line names the host and points above, with the deploy's exit code.
// A lock held by someone else, which no event shows as text, stays in the last line;
// with --json the error is whole.
func TestEachErrorPrintedOnce(t *testing.T) {
	const hostErr = "wait: web is unhealthy: health check exited 1"
	failed := deploy.HostResult{Host: "deploy@web1", Result: deploy.ResultFailed, Current: "aaaaaaa", Err: errors.New(hostErr)}
	locked := deploy.HostResult{Host: "deploy@web2", Result: deploy.ResultLocked, Current: "aaaaaaa", Err: errors.New("deploy@web2 is locked by alice@desk")}
	events := []deploy.Event{
		{Host: "deploy@web1", Step: deploy.StepApply, Level: deploy.LevelError, Msg: hostErr},
		{Host: "deploy@web1", Step: deploy.StepDone, Level: deploy.LevelError, Msg: "on aaaaaaa (deploy of bbbbbbb failed; previous release restored)"},
		{Host: "deploy@web2", Step: deploy.StepLock, Level: deploy.LevelError, Msg: locked.Err.Error()},
	}
	for _, tc := range []struct {
		name  string
		json  bool
		hosts []deploy.HostResult
		want  string
	}{
		{name: "failed host", hosts: []deploy.HostResult{failed}, want: "error: deploy failed: deploy of bbbbbbb failed on 1 of 2 host(s): deploy@web1 (see above)\n"},
		{name: "failed and locked", hosts: []deploy.HostResult{failed, locked},
			want: "error: deploy failed: deploy of bbbbbbb failed on 2 of 2 host(s):\n  deploy@web1: failed, on aaaaaaa (see above)\n  deploy@web2: locked, on aaaaaaa: deploy@web2 is locked by alice@desk\n"},
		{name: "json", json: true, hosts: []deploy.HostResult{failed}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			io, out, errOut := testIO("", false)
			g := &Globals{Factory: NewFactory(io), JSON: tc.json}
			p := newPrinter(g)
			for _, e := range events {
				renderDeployEvent(g, p, e)
			}
			he := &deploy.HostsError{Sentinel: deploy.ErrDeployFailed, What: "deploy of bbbbbbb", Total: 2, Hosts: tc.hosts}
			err := g.brief(he)
			if code := exitCode(err); code != ExitDeployFailed {
				t.Errorf("exit %d, want %d", code, ExitDeployFailed)
			}
			if tc.json {
				if err.Error() != he.Error() {
					t.Errorf("--json error %q, want the whole %q", err, he)
				}
				return
			}
			last := "error: " + err.Error() + "\n"
			if tc.want != "" && last != tc.want {
				t.Errorf("last line:\n%s\nwant:\n%s", last, tc.want)
			}
			all := out.String() + errOut.String() + last
			if n := strings.Count(all, hostErr); n != 1 {
				t.Errorf("web1's error printed %d times, want once:\n%s", n, all)
			}
			if n := strings.Count(all, "is locked by alice@desk"); len(tc.hosts) == 2 && n != 1 {
				t.Errorf("the lock printed %d times, want once:\n%s", n, all)
			}
		})
	}
}
