package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestRun(t *testing.T) {
	ok := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	t.Cleanup(ok.Close)
	failing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusBadGateway) }))
	t.Cleanup(failing.Close)

	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantOut  string
	}{
		{"text", []string{"-url", ok.URL, "-rate", "100", "-duration", "100ms"}, 0, "2xx 10, non-2xx 0"},
		{"json", []string{"-url", ok.URL, "-rate", "100", "-duration", "100ms", "-json"}, 0, `"ok": 10`},
		{"saturate", []string{"-url", ok.URL, "-saturate", "2", "-n", "20", "-duration", "5s"}, 0, "saturate"},
		{"strict with failures", []string{"-url", failing.URL, "-rate", "100", "-duration", "100ms", "-strict"}, 1, "non-2xx 10"},
		{"not loopback", []string{"-url", "http://192.0.2.1/", "-duration", "1s"}, 2, ""},
		{"no url", []string{"-rate", "10"}, 2, ""},
		{"bad flag", []string{"-nope"}, 2, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(tt.args, &stdout, &stderr)
			if code != tt.wantCode {
				t.Errorf("exit %d, want %d; stderr %s", code, tt.wantCode, stderr.String())
			}
			if !strings.Contains(stdout.String(), tt.wantOut) {
				t.Errorf("stdout lacks %q:\n%s", tt.wantOut, stdout.String())
			}
			if strings.Contains(tt.name, "json") && !json.Valid(stdout.Bytes()) {
				t.Errorf("not JSON: %s", stdout.String())
			}
		})
	}
}
