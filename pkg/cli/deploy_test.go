package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/shipdeploy/ship/pkg/config"
	"github.com/shipdeploy/ship/pkg/deploy"
	"github.com/shipdeploy/ship/pkg/plan"
)

func TestDeployExitCodes(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want int
	}{
		{"deploy failed", fmt.Errorf("%w: on 1 of 2 hosts", deploy.ErrDeployFailed), ExitDeployFailed},
		{"restore failed", fmt.Errorf("%w: on 1 of 2 hosts", deploy.ErrRestoreFailed), ExitRestoreFailed},
		{"locked", &deploy.LockedError{Host: "web1"}, ExitLocked},
		{"cancelled mid-deploy", errors.Join(context.Canceled, fmt.Errorf("%w: x", deploy.ErrDeployFailed)), ExitCancelled},
		{"cancelled, and the restore failed", errors.Join(context.Canceled, fmt.Errorf("%w: x", deploy.ErrRestoreFailed)), ExitRestoreFailed},
		{"outcome not seen: shipd did not answer again", fmt.Errorf("%w: on 1 of 1 hosts", deploy.ErrOutcomeUnknown), ExitRestoreFailed},
		{"cancelled while shipd carries the deploy on", errors.Join(context.Canceled, fmt.Errorf("%w: x", deploy.ErrOutcomeUnknown)), ExitCancelled},
		{"preflight: config", fmt.Errorf("preflight: %w", config.ErrInvalid), ExitUsage},
		{"not pushed", fmt.Errorf("preflight: %w", deploy.ErrNotInRegistry), ExitError},
		{"no release to roll back to", fmt.Errorf("web1: %w", deploy.ErrNoRelease), ExitError},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := exitCode(tt.err); got != tt.want {
				t.Errorf("exitCode(%v) = %d, want %d", tt.err, got, tt.want)
			}
		})
	}
}

func TestRenderDeployEvent(t *testing.T) {
	events := []deploy.Event{
		{Step: deploy.StepPreflight, Msg: "connecting to 2 host(s)"},
		{Host: "deploy@web1", Step: deploy.StepApply, Service: "web", Msg: "recreating: image changed"},
		{Host: "deploy@web1", Step: deploy.StepLock, Level: deploy.LevelWarn, Msg: "taking over the lock"},
		{Host: "deploy@web2", Step: deploy.StepApply, Level: deploy.LevelError, Msg: "container x: unhealthy"},
		{Host: "deploy@web2", Step: deploy.StepDone, Level: deploy.LevelError, Msg: "on aaa (deploy of bbb failed; previous release restored)"},
	}
	t.Run("text", func(t *testing.T) {
		io, out, errOut := testIO("", false)
		g := &Globals{Factory: NewFactory(io)}
		p := newPrinter(g)
		for _, e := range events {
			renderDeployEvent(g, p, e)
		}
		want := strings.Join([]string{
			"==> connecting to 2 host(s)",
			"--> deploy@web1: web: recreating: image changed",
			"--> FAILED deploy@web2: container x: unhealthy",
			"--> deploy@web2: on aaa (deploy of bbb failed; previous release restored)",
		}, "\n") + "\n"
		if out.String() != want {
			t.Errorf("stdout =\n%s\nwant\n%s", out, want)
		}
		if errOut.String() != "warning: deploy@web1: taking over the lock\n" {
			t.Errorf("stderr = %q", errOut)
		}
	})
	t.Run("json", func(t *testing.T) {
		io, out, _ := testIO("", false)
		g := &Globals{Factory: NewFactory(io), JSON: true}
		p := newPrinter(g)
		for _, e := range events {
			renderDeployEvent(g, p, e)
		}
		lines := strings.Split(strings.TrimSpace(out.String()), "\n")
		if len(lines) != len(events) {
			t.Fatalf("%d lines for %d events:\n%s", len(lines), len(events), out)
		}
		var ev map[string]any
		if err := json.Unmarshal([]byte(lines[1]), &ev); err != nil {
			t.Fatal(err)
		}
		if ev["event"] != "apply" || ev["host"] != "deploy@web1" || ev["service"] != "web" || ev["level"] != "info" || ev["time"] == nil {
			t.Errorf("event = %v", ev)
		}
	})
}

func testPreview() deploy.Preview {
	return deploy.Preview{
		App: "shop", Env: "prod", SHA: strings.Repeat("b", 40), Subject: "Fix checkout",
		Hosts: []deploy.HostPreview{{
			Host: "deploy@web1", Current: strings.Repeat("a", 40),
			Plan: plan.Plan{Host: "deploy@web1", Steps: []plan.Step{
				{Service: "redis", Action: plan.Unchanged, To: "redis:7"},
				{Service: "web", Action: plan.Recreate, From: "r/web:aaa", To: "r/web:bbb", Why: "new image"},
			}},
		}},
	}
}

func TestConfirmer(t *testing.T) {
	tests := []struct {
		name     string
		confirm  bool
		grace    time.Duration
		tty, yes bool
		json     bool
		in       string
		wantCode int // of the error; 0: none
		wantOut  []string
		wantErr  []string
	}{
		{name: "no confirmation asked", wantOut: []string{
			`==> deploy bbbbbbbbbbbb "Fix checkout" to prod (1 host(s)):`,
			"deploy@web1 (current aaaaaaaaaaaa)",
			"  recreate  web    r/web:aaa -> r/web:bbb  (new image)",
		}},
		{name: "yes on a terminal", confirm: true, tty: true, in: "y\n", wantErr: []string{"? Deploy bbbbbbbbbbbb to prod? [y/N] "}},
		{name: "no on a terminal", confirm: true, tty: true, in: "\n", wantCode: ExitCancelled},
		{name: "no terminal", confirm: true, wantCode: ExitUsage},
		{name: "json never asks", confirm: true, tty: true, json: true, wantCode: ExitUsage},
		{name: "--yes", confirm: true, yes: true, wantOut: []string{"==> confirmed by --yes"}},
		{name: "grace", grace: 30 * time.Millisecond, yes: true, wantOut: []string{"==> starting in 30ms; Ctrl-C cancels with nothing touched"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			io, out, errOut := testIO(tt.in, tt.tty)
			g := &Globals{Factory: NewFactory(io), Yes: tt.yes, JSON: tt.json}
			env := &config.Environment{Name: "prod", Confirm: tt.confirm, Grace: tt.grace}
			err := confirmer(g, newPrinter(g), env, "deploy", true)(context.Background(), testPreview())
			if got := exitCode(err); got != tt.wantCode {
				t.Fatalf("error %v: exit %d, want %d", err, got, tt.wantCode)
			}
			for _, w := range tt.wantOut {
				if !strings.Contains(out.String(), w) {
					t.Errorf("stdout lacks %q:\n%s", w, out)
				}
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(errOut.String(), w) {
					t.Errorf("stderr lacks %q:\n%s", w, errOut)
				}
			}
		})
	}
	t.Run("Ctrl-C during the grace period", func(t *testing.T) {
		io, _, _ := testIO("", false)
		g := &Globals{Factory: NewFactory(io)}
		env := &config.Environment{Name: "prod", Grace: time.Hour}
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(20*time.Millisecond, cancel)
		err := confirmer(g, newPrinter(g), env, "deploy", true)(ctx, testPreview())
		if !errors.Is(err, context.Canceled) || exitCode(err) != ExitCancelled {
			t.Errorf("err = %v", err)
		}
	})
	t.Run("json plan", func(t *testing.T) {
		io, out, _ := testIO("", false)
		g := &Globals{Factory: NewFactory(io), JSON: true}
		if err := confirmer(g, newPrinter(g), &config.Environment{Name: "prod"}, "deploy", true)(context.Background(), testPreview()); err != nil {
			t.Fatal(err)
		}
		var ev struct {
			Event, Host, Current string
			Steps                []map[string]string
		}
		if err := json.Unmarshal(out.Bytes(), &ev); err != nil {
			t.Fatalf("%v:\n%s", err, out)
		}
		if ev.Event != "plan" || ev.Host != "deploy@web1" || len(ev.Steps) != 2 || ev.Steps[1]["action"] != "recreate" || ev.Steps[1]["from"] != "r/web:aaa" {
			t.Errorf("plan event = %+v", ev)
		}
	})
}

func TestRenderSummary(t *testing.T) {
	io, out, _ := testIO("", false)
	g := &Globals{Factory: NewFactory(io)}
	renderSummary(newPrinter(g), "deploy", &deploy.Summary{Env: "prod", SHA: strings.Repeat("b", 40), Hosts: []deploy.HostResult{
		{Host: "deploy@web1", Result: deploy.ResultDeployed, Current: strings.Repeat("b", 40), Took: 12345 * time.Millisecond},
		{Host: "deploy@web22", Result: deploy.ResultFailed, Current: strings.Repeat("a", 40), Err: errors.New("unhealthy")},
	}})
	want := "==> deploy of bbbbbbbbbbbb to prod: 1 deployed, 1 failed\n" +
		"  deploy@web1   on bbbbbbbbbbbb  deployed (12.3s)\n" +
		"  deploy@web22  on aaaaaaaaaaaa  failed: runs its previous release\n"
	if out.String() != want {
		t.Errorf("summary =\n%s\nwant\n%s", out, want)
	}
}

func TestHostCommandsUsage(t *testing.T) {
	files := map[string]string{
		"ship.yaml":          "app: shop\nregistry: r.example.com\nenvironments:\n  prod:\n    hosts: [deploy@web1]\n    path: /srv/shop\n",
		"docker-compose.yml": "services:\n  web:\n    image: nginx\n",
	}
	tests := []struct {
		args     []string
		wantCode int
		wantErr  string
	}{
		{[]string{"deploy"}, ExitUsage, "shipctl deploy needs an environment: one of prod (from ship.yaml), e.g. shipctl deploy prod"},
		{[]string{"deploy", "prd"}, ExitUsage, `did you mean "prod"?`},
		{[]string{"deploy", "prod", "--parallel", "-1"}, ExitUsage, "--parallel -1"},
		{[]string{"deploy", "prod", "--lock-wait", "soon"}, ExitUsage, "invalid argument"},
		{[]string{"rollback", "prod", "a", "b"}, ExitUsage, "accepts between 1 and 2 arg"},
		{[]string{"status"}, ExitUsage, "shipctl status needs an environment: one of prod"},
		{[]string{"history", "prod", "-n", "-3"}, ExitUsage, "--lines -3"},
		{[]string{"logs"}, ExitUsage, "shipctl logs needs an environment: one of prod"},
		{[]string{"lock", "qa"}, ExitUsage, `no environment "qa"`},
		{[]string{"unlock", "prod", "extra"}, ExitUsage, "accepts 1 arg"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			appDir(t, "shop", files)
			io, out, errOut := testIO("", false)
			if code := Main(tt.args, io); code != tt.wantCode {
				t.Fatalf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tt.wantCode, out, errOut)
			}
			if !strings.Contains(errOut.String(), tt.wantErr) {
				t.Errorf("stderr lacks %q:\n%s", tt.wantErr, errOut)
			}
		})
	}
}
