package main

import "testing"

func TestLoopback(t *testing.T) {
	tests := []struct {
		addr string
		ok   bool
	}{
		{"127.0.0.1:0", true},
		{"127.0.0.2:5000", true},
		{"[::1]:5000", true},
		{"0.0.0.0:5000", false},
		{":5000", false},
		{"localhost:5000", false},
		{"127.0.0.1", false},
	}
	for _, tt := range tests {
		if err := loopback(tt.addr); (err == nil) != tt.ok {
			t.Errorf("loopback(%q) = %v, want ok %v", tt.addr, err, tt.ok)
		}
	}
}
