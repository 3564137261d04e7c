package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// named is a handler that answers its name, standing in for a route.
type named string

func (n named) ServeHTTP(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, string(n)) }

func mustSet(t *testing.T, rt *Router, b Binding, h http.Handler) {
	t.Helper()
	if err := rt.Set(b, h); err != nil {
		t.Fatal(err)
	}
}

func TestRouterPicksHostAndLongestPath(t *testing.T) {
	rt := NewRouter(RouterOptions{})
	mustSet(t, rt, Binding{Owner: "shop/web", Hosts: []string{"Example.com", "www.example.com"}}, named("shop"))
	mustSet(t, rt, Binding{Owner: "shop/api", Hosts: []string{"example.com"}, Paths: []string{"/api/"}}, named("api"))
	mustSet(t, rt, Binding{Owner: "shop/v2", Hosts: []string{"example.com"}, Paths: []string{"/api/v2"}}, named("v2"))
	mustSet(t, rt, Binding{Owner: "tenants/web", Hosts: []string{"*.example.com"}}, named("tenant"))
	mustSet(t, rt, Binding{Owner: "blog/web", Hosts: []string{"blog.example.org"}, Paths: []string{"/blog"}}, named("blog"))

	for _, tc := range []struct{ host, path, want string }{
		{"example.com", "/", "shop"},
		{"EXAMPLE.COM:8080", "/x", "shop"},
		{"example.com.", "/", "shop"},
		{"www.example.com", "/api", "shop"}, // the api binding is example.com's only
		{"example.com", "/api", "api"},
		{"example.com", "/api/x", "api"},
		{"example.com", "/apix", "shop"}, // prefixes match whole segments
		{"example.com", "/api/v2/users", "v2"},
		{"example.com", "/api/v20", "api"},
		{"a.example.com", "/", "tenant"},
		{"www.example.com", "/", "shop"}, // exact beats wildcard
		{"a.b.example.com", "/", "404"},  // a wildcard is one label
		{"blog.example.org", "/blog/post", "blog"},
		{"blog.example.org", "/", "404"},
		{"unknown.test", "/", "404"},
		{"", "/", "404"},
	} {
		t.Run(tc.host+tc.path, func(t *testing.T) {
			req := httptest.NewRequest("GET", "http://x"+tc.path, nil)
			req.Host = tc.host
			w := httptest.NewRecorder()
			rt.ServeHTTP(w, req)
			got := w.Body.String()
			if w.Code == http.StatusNotFound {
				got = "404"
			}
			if got != tc.want {
				t.Errorf("%s%s went to %q (%d), want %q", tc.host, tc.path, got, w.Code, tc.want)
			}
		})
	}
}

func TestRouterDefaultRoute(t *testing.T) {
	rt := NewRouter(RouterOptions{})
	mustSet(t, rt, Binding{Owner: "a/web", Hosts: []string{"a.test"}}, named("a"))
	mustSet(t, rt, Binding{Owner: "fallback/web"}, named("default"))
	for host, want := range map[string]string{"a.test": "a", "other.test": "default", "127.0.0.1:80": "default"} {
		req := httptest.NewRequest("GET", "/", nil)
		req.Host = host
		w := httptest.NewRecorder()
		rt.ServeHTTP(w, req)
		if w.Body.String() != want {
			t.Errorf("%s went to %q, want %q", host, w.Body.String(), want)
		}
	}
}

func TestRouterConflicts(t *testing.T) {
	rt := NewRouter(RouterOptions{})
	mustSet(t, rt, Binding{Owner: "shop/web", Hosts: []string{"example.com"}, Paths: []string{"/", "/api"}}, named("shop"))
	for _, b := range []Binding{
		{Owner: "blog/web", Hosts: []string{"EXAMPLE.com"}},
		{Owner: "blog/web", Hosts: []string{"other.test", "example.com"}, Paths: []string{"/api/"}},
	} {
		err := rt.Check(b)
		if !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "shop/web") || !strings.Contains(err.Error(), "blog/web") {
			t.Errorf("Check(%+v) = %v, want a conflict naming shop/web", b, err)
		}
		if err := rt.Set(b, named("blog")); !errors.Is(err, ErrConflict) {
			t.Errorf("Set(%+v) = %v, want a conflict", b, err)
		}
	}
	// Nothing changed: the conflicting owner is not bound.
	if got := len(rt.Bindings()); got != 1 {
		t.Errorf("%d bindings after refused sets, want 1", got)
	}
	// The same owner moving its own paths is no conflict; other paths of the host are.
	mustSet(t, rt, Binding{Owner: "shop/web", Hosts: []string{"example.com"}, Paths: []string{"/"}}, named("shop"))
	mustSet(t, rt, Binding{Owner: "blog/web", Hosts: []string{"example.com"}, Paths: []string{"/api"}}, named("blog"))
	if !rt.Remove("blog/web") || rt.Remove("blog/web") {
		t.Error("Remove: want true once, then false")
	}
	for _, b := range []Binding{
		{Owner: "x", Hosts: []string{"http://example.com"}},
		{Owner: "x", Hosts: []string{"example.com:80"}},
		{Owner: "x", Hosts: []string{"a..b"}},
		{Owner: "x", Paths: []string{"api"}},
		{Owner: "x", Paths: []string{"/a/../b"}},
		{Hosts: []string{"example.org"}},
	} {
		if err := rt.Set(b, named("x")); err == nil || errors.Is(err, ErrConflict) {
			t.Errorf("Set(%+v) = %v, want a malformed binding", b, err)
		}
	}
}

func TestRouterRedirectsTLSHostsButChallenges(t *testing.T) {
	challenge := named("challenge")
	rt := NewRouter(RouterOptions{Challenge: challenge, HTTPSPort: 8443})
	mustSet(t, rt, Binding{Owner: "a/web", Hosts: []string{"secure.test"}, TLS: true}, named("a"))
	mustSet(t, rt, Binding{Owner: "b/web", Hosts: []string{"plain.test"}}, named("b"))
	mustSet(t, rt, Binding{Owner: "c/web", Hosts: []string{"own.test"}, TLS: true, HTTPSPort: 9443}, named("c"))
	mustSet(t, rt, Binding{Owner: "d/web", Hosts: []string{"std.test"}, TLS: true, HTTPSPort: 443}, named("d"))
	for _, tc := range []struct {
		method, host, target string
		tls                  bool
		code                 int
		body, location       string
	}{
		{"GET", "secure.test", "/x?y=1", false, 301, "", "https://secure.test:8443/x?y=1"},
		{"POST", "secure.test:8080", "/form", false, 308, "", "https://secure.test:8443/form"},
		{"GET", "secure.test", ChallengePrefix + "token", false, 200, "challenge", ""},
		{"GET", "secure.test", "/x", true, 200, "a", ""},
		{"GET", "plain.test", ChallengePrefix + "token", false, 200, "b", ""},
		{"GET", "plain.test", "/", false, 200, "b", ""},
		{"GET", "own.test", "/x", false, 301, "", "https://own.test:9443/x"}, // the binding's port
		{"GET", "std.test", "/x", false, 301, "", "https://std.test/x"},
	} {
		req := httptest.NewRequest(tc.method, "http://x"+tc.target, nil)
		req.Host = tc.host
		if tc.tls {
			req.TLS = &tls.ConnectionState{}
		}
		w := httptest.NewRecorder()
		rt.ServeHTTP(w, req)
		if w.Code != tc.code || tc.body != "" && w.Body.String() != tc.body || w.Header().Get("Location") != tc.location {
			t.Errorf("%s %s%s (tls %v): %d %q to %q, want %d %q to %q", tc.method, tc.host, tc.target, tc.tls,
				w.Code, w.Body.String(), w.Header().Get("Location"), tc.code, tc.body, tc.location)
		}
	}
	if !rt.TLSHost("SECURE.test") || rt.TLSHost("plain.test") || rt.TLSHost("other.test") {
		t.Error("TLSHost: want only secure.test")
	}
}

// Routing does not grow with the number of hosts: both tables answer in about the same
// time (the benchmark measures; this checks the lookup stays a map read).
func BenchmarkRouterLookup(b *testing.B) {
	for _, n := range []int{1, 100, 10000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			rt := NewRouter(RouterOptions{})
			for i := range n {
				if err := rt.Set(Binding{Owner: fmt.Sprint(i), Hosts: []string{fmt.Sprintf("h%d.example.com", i)}}, named("x")); err != nil {
					b.Fatal(err)
				}
			}
			t := rt.table.Load()
			host := fmt.Sprintf("h%d.example.com", n-1)
			b.ResetTimer()
			for b.Loop() {
				if t.lookup(host, "/") == nil {
					b.Fatal("no route")
				}
			}
		})
	}
}

// startRouter serves rt on a new listener of 127.0.0.1 and shuts it down at the end.
func startRouter(t *testing.T, rt *Router) *Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := NewListener(ln, rt, ListenerOptions{})
	serve(t, l)
	return l
}

// sharedRoute makes a listener-less route bound on rt, shut down at the end.
func sharedRoute(t *testing.T, rt *Router, b Binding) *Route {
	t.Helper()
	r := NewRoute(b.Owner, nil, RouteOptions{})
	mustSet(t, rt, b, r)
	t.Cleanup(func() {
		rt.Remove(b.Owner)
		ctx, cancel := context.WithTimeout(context.Background(), patience)
		defer cancel()
		if err := r.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return r
}

// Two apps on one listener, routed by host: one swaps twice under load while the other
// serves, and neither sees a failed request; meanwhile a third app is added and removed.
func TestRouterSwapUnderLoadOnSharedListener(t *testing.T) {
	rt := NewRouter(RouterOptions{})
	l := startRouter(t, rt)
	a := sharedRoute(t, rt, Binding{Owner: "a/web", Hosts: []string{"a.test"}})
	b := sharedRoute(t, rt, Binding{Owner: "b/web", Hosts: []string{"b.test"}})
	if err := a.Serve(); err == nil {
		t.Error("Serve of a route without a listener: no error")
	}
	blue, other := newBackend(t, "blue"), newBackend(t, "other")
	deploy(t, a, blue.addr())
	deploy(t, b, other.addr())

	url := "http://" + l.Addr().String() + "/"
	la := startHostLoad(t, url, "a.test")
	lb := startHostLoad(t, url, "b.test")
	waitServed(t, blue, 50)
	waitServed(t, other, 50)

	green := newBackend(t, "green")
	deploy(t, a, green.addr())
	blue.srv.Close()
	c := sharedRoute(t, rt, Binding{Owner: "c/web", Hosts: []string{"c.test"}})
	third := newBackend(t, "third")
	deploy(t, c, third.addr())
	waitServed(t, green, 50)
	rt.Remove("c/web")
	blue2 := newBackend(t, "blue2")
	deploy(t, a, blue2.addr())
	green.srv.Close()
	waitServed(t, blue2, 50)
	waitServed(t, other, 50)
	stopLoad(t, la)
	stopLoad(t, lb)

	for host, want := range map[string]string{"a.test": "blue2", "b.test": "other"} {
		if code, body := getHost(t, url, host); code != 200 || body != want {
			t.Errorf("%s: %d %q, want %q", host, code, body, want)
		}
	}
	if code, _ := getHost(t, url, "c.test"); code != http.StatusNotFound {
		t.Errorf("removed c.test: %d, want 404", code)
	}
}
