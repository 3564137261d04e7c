// Package sample is testsum's fixture: run by its tests with SAMPLE set, it passes,
// fails, skips, panics or hangs as SAMPLE asks.
package sample

import (
	"os"
	"strings"
	"testing"
)

func want(t *testing.T, what string) {
	if !strings.Contains(os.Getenv("SAMPLE"), what) {
		t.SkipNow()
	}
}

func TestPass(t *testing.T) {
	t.Run("sub", func(t *testing.T) {})
}

func TestFail(t *testing.T) {
	want(t, "fail")
	t.Run("ok", func(t *testing.T) {})
	t.Run("bad", func(t *testing.T) { t.Error("the value was wrong") })
}

func TestMissing(t *testing.T) {
	want(t, "skip")
	t.Skipf("skipped: a Docker engine (start dockerd, or set DOCKER_HOST)")
}

func TestPanic(t *testing.T) {
	want(t, "panic")
	var m map[string]int
	m["x"] = 1
}

func TestHang(t *testing.T) {
	want(t, "hang")
	select {}
}
