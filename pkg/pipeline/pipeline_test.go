package pipeline

import (
	"context"
	"errors"
	"strings"
	"testing"
)

// recorder is Stages that note what ran; fail names the stage that fails.
func recorder(refs []string, fail string, ran *[]string) Stages {
	step := func(name string) error {
		*ran = append(*ran, name)
		if name == fail {
			return errors.New(name + " broke")
		}
		return nil
	}
	return Stages{
		Preflight: func(context.Context) error { return step("preflight") },
		Build: func(context.Context) ([]string, error) {
			if err := step("build"); err != nil {
				return nil, err
			}
			return refs, nil
		},
		Test:   func(context.Context) error { return step("test") },
		Tested: func(context.Context) error { return step("tested") },
		Push: func(_ context.Context, got []string) error {
			if strings.Join(got, ",") != strings.Join(refs, ",") {
				return errors.New("pushed other images")
			}
			return step("push")
		},
		Deploy: func(context.Context) error { return step("deploy") },
	}
}

func TestRun(t *testing.T) {
	tests := []struct {
		name     string
		refs     []string
		fail     string
		wantRan  string
		wantStep string
	}{
		{name: "preflight fails: nothing built", refs: []string{"r/web:1"}, fail: "preflight", wantRan: "preflight", wantStep: StepPreflight},
		{name: "all", refs: []string{"r/web:1"}, wantRan: "preflight,build,test,tested,push,deploy"},
		{name: "nothing built: no push", wantRan: "preflight,build,test,tested,deploy"},
		{name: "build fails", refs: []string{"r/web:1"}, fail: "build", wantRan: "preflight,build", wantStep: StepBuild},
		{name: "tests fail", refs: []string{"r/web:1"}, fail: "test", wantRan: "preflight,build,test", wantStep: StepTest},
		{name: "tree changed since the tests", refs: []string{"r/web:1"}, fail: "tested", wantRan: "preflight,build,test,tested", wantStep: StepPush},
		{name: "push fails", refs: []string{"r/web:1"}, fail: "push", wantRan: "preflight,build,test,tested,push", wantStep: StepPush},
		{name: "deploy fails", refs: []string{"r/web:1"}, fail: "deploy", wantRan: "preflight,build,test,tested,push,deploy", wantStep: StepDeploy},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var ran []string
			refs, err := Run(context.Background(), recorder(tt.refs, tt.fail, &ran))
			if got := strings.Join(ran, ","); got != tt.wantRan {
				t.Errorf("ran %s, want %s", got, tt.wantRan)
			}
			if tt.wantStep == "" {
				if err != nil || strings.Join(refs, ",") != strings.Join(tt.refs, ",") {
					t.Errorf("Run = %v, %v", refs, err)
				}
				return
			}
			var se *StepError
			if !errors.As(err, &se) || se.Step != tt.wantStep || err.Error() != tt.fail+" broke" {
				t.Errorf("err = %v (%#v), want step %s", err, se, tt.wantStep)
			}
		})
	}
	if _, err := Run(context.Background(), Stages{}); err == nil {
		t.Error("Run without stages")
	}
}
