package proxy

import (
	"context"
	"errors"
	"net"
	"net/http"
	"testing"
)

func TestServer(t *testing.T) {
	s := NewServer(nil)
	blue := newBackend(t, "blue")
	var routes []*Route
	for _, name := range []string{"web", "api"} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		r := NewRoute(name, ln, RouteOptions{})
		if err := s.Add(r); err != nil {
			t.Fatal(err)
		}
		routes = append(routes, r)
	}
	deploy(t, routes[0], blue.addr())
	if code, body := get(t, routeURL(routes[0])+"/"); code != 200 || body != "blue" {
		t.Errorf("web: %d %q", code, body)
	}

	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	t.Cleanup(func() { ln.Close() })
	if err := s.Add(NewRoute("web", ln, RouteOptions{})); err == nil {
		t.Error("a second route named web was added")
	}

	st := s.Status()
	if len(st) != 2 || st[0].Name != "api" || st[1].Name != "web" {
		t.Fatalf("status not sorted by name: %+v", st)
	}
	if st[1].Target != blue.addr() || st[1].Requests != 1 || st[1].Served != 1 || st[1].Since.IsZero() || st[1].Listen != routes[0].Listener().Addr().String() {
		t.Errorf("web status %+v", st[1])
	}
	if st[0].Target != "" || !st[0].Since.IsZero() {
		t.Errorf("api status %+v, want no target", st[0])
	}

	if r, err := s.Route("web"); err != nil || r != routes[0] {
		t.Errorf("Route(web) = %v, %v", r, err)
	}
	if _, err := s.Route("nope"); !errors.Is(err, ErrNoRoute) {
		t.Errorf("Route(nope): %v", err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	if err := s.Remove(ctx, "api"); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove(ctx, "api"); !errors.Is(err, ErrNoRoute) {
		t.Errorf("second remove: %v", err)
	}
	if _, err := http.Get(routeURL(routes[1])); err == nil {
		t.Error("a removed route still accepts connections")
	}

	if err := s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if len(s.Status()) != 0 {
		t.Errorf("routes after shutdown: %+v", s.Status())
	}
	if err := s.Add(NewRoute("late", ln, RouteOptions{})); !errors.Is(err, ErrClosed) {
		t.Errorf("add after shutdown: %v", err)
	}
	if _, err := http.Get(routeURL(routes[0])); err == nil {
		t.Error("a route still accepts connections after shutdown")
	}
}
