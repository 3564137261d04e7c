package agent

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func TestStoreSavesEveryChangeAtomically(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lib", "state.json")
	st, warning, err := openStore(path)
	if err != nil || warning != nil {
		t.Fatalf("open a missing state: %v %v", warning, err)
	}
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			err := st.update(func(s *State) {
				a := s.app("web", "/srv/web")
				a.Routes["web"] = &RouteState{Service: "web", Listen: ":80", Port: 8080, Network: "web_default", Target: "10.0.0.1:8080", Release: strings.Repeat("x", i)}
			})
			if err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("state file: %v %v", fi, err)
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("temporary files left: %v", entries)
	}
	data, _ := os.ReadFile(path)
	var s State
	if err := json.Unmarshal(data, &s); err != nil || s.Version != stateVersion || s.Apps["web"].Routes["web"].Target != "10.0.0.1:8080" {
		t.Fatalf("saved state %s: %v", data, err)
	}

	again, warning, err := openStore(path)
	if err != nil || warning != nil {
		t.Fatal(warning, err)
	}
	if got := again.snapshot(); got.Apps["web"].Path != "/srv/web" || got.Apps["web"].Routes["web"].Listen != ":80" {
		t.Errorf("read back: %+v", got.Apps["web"])
	}
	// A snapshot is a copy.
	snap := again.snapshot()
	snap.Apps["web"].Release = "changed"
	if again.snapshot().Apps["web"].Release == "changed" {
		t.Error("a snapshot shares the store's state")
	}
}

func TestUnreadableStateIsMovedAside(t *testing.T) {
	for name, content := range map[string]string{
		"not json":       "{half",
		"future version": `{"version": 99, "apps": {}}`,
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "state.json")
			os.WriteFile(path, []byte(content), 0o600)
			st, warning, err := openStore(path)
			if err != nil || warning == nil || len(st.snapshot().Apps) != 0 {
				t.Fatalf("warning %v, err %v", warning, err)
			}
			matches, _ := filepath.Glob(path + ".bad-*")
			if len(matches) != 1 || !strings.Contains(warning.Error(), matches[0]) {
				t.Errorf("moved aside: %v; warning %v", matches, warning)
			}
		})
	}
}

func TestWriteFileAtomicReplaces(t *testing.T) {
	name := filepath.Join(t.TempDir(), "f.json")
	for _, content := range []string{"one", "two"} {
		if err := writeFileAtomic(name, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		if data, _ := os.ReadFile(name); string(data) != content {
			t.Errorf("content %q, want %q", data, content)
		}
	}
	// A folder where the file should be: the error names it, and nothing is left.
	dir := filepath.Join(t.TempDir(), "d")
	os.MkdirAll(filepath.Join(dir, "f"), 0o755)
	if err := writeFileAtomic(filepath.Join(dir, "f"), []byte("x"), 0o644); err == nil {
		t.Error("replacing a folder worked")
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("left behind: %v", entries)
	}
}

// validState is a state file as shipd writes it, one app with a route and a deploy
// under way.
const validState = `{
  "version": 1,
  "saved": "2026-01-02T03:04:05Z",
  "apps": {
    "shop": {
      "app": "shop", "path": "/srv/shop", "release": "v2", "previous": "v1", "since": "2026-01-02T03:04:05Z",
      "routes": {
        "web": {
          "service": "web", "listen": ":8080", "port": 8080, "network": "shop_default", "health": "/up", "drain": "2s",
          "container": "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", "name": "shop-web-2",
          "target": "172.18.0.3:8080", "release": "v2", "since": "2026-01-02T03:04:05Z"
        }
      },
      "deploying": {"kind": "deploy", "release": "v3", "from": "v2", "started": "2026-01-02T03:04:05Z", "service": "web",
        "created": ["fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210"]},
      "last_result": "deployed", "last_time": "2026-01-02T03:04:05Z"
    }
  }
}`

// An invalid app is left out with its reason; the valid ones stay as they were.
func TestDecodeStateDropsInvalidApps(t *testing.T) {
	var s map[string]any
	if err := json.Unmarshal([]byte(validState), &s); err != nil {
		t.Fatal(err)
	}
	s["apps"].(map[string]any)["bad"] = map[string]any{"app": "bad", "path": "/srv/bad/../etc", "routes": map[string]any{"web": nil}}
	data, _ := json.Marshal(s)
	got, dropped, err := decodeState(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(dropped) != 1 || dropped[0].app != "bad" ||
		!strings.Contains(dropped[0].reason, `path "/srv/bad/../etc" is not a clean absolute folder`) ||
		!strings.Contains(dropped[0].reason, `route "web": no entry`) {
		t.Errorf("dropped: %+v", dropped)
	}
	want, _, err := decodeState([]byte(validState))
	if err != nil {
		t.Fatal(err)
	}
	if a, b := mustJSON(t, got), mustJSON(t, want); a != b || len(got.Apps) != 1 {
		t.Errorf("kept:\n%s\nwant:\n%s", a, b)
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// Whatever the file holds, reading it does not panic; what is accepted is safe to act
// on (every entry there, paths clean and absolute) and reads back the same once saved.
func FuzzDecodeState(f *testing.F) {
	for _, seed := range []string{
		validState, `{"version":1,"apps":{"a":null}}`, `{"version":1,"apps":null}`,
		`{"version":1,"apps":{"a":{"app":"a","path":"/srv/a","routes":{"web":null}}}}`,
		`{"version":1,"apps":{"a":{"app":"a","path":"rel/../x","deploying":{"kind":"deploy","release":"../y"}}}}`,
		`{"version":1,"apps":{"a":{"app":"a","path":"/srv/a","routes":{"web":{"service":"web","listen":"[::1]:80","port":80,"network":"n"}}}}}`,
		`{"version":2}`, `{half`, ``, `null`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s, _, err := decodeState(data)
		if err != nil {
			return
		}
		_ = s.clone()
		for key, app := range s.Apps {
			if app == nil || app.App != key || !isCleanPath(app.Path) || app.Routes == nil {
				t.Fatalf("accepted app %q: %+v", key, app)
			}
			for service, r := range app.Routes {
				if r == nil || r.Service != service || checkListen(r.Listen) != nil {
					t.Fatalf("accepted route %q of %q: %+v", service, key, r)
				}
			}
		}
		saved, err := json.Marshal(s)
		if err != nil {
			t.Fatalf("save an accepted state: %v", err)
		}
		again, dropped, err := decodeState(saved)
		if err != nil || len(dropped) > 0 {
			t.Fatalf("the saved state reads back with %v, dropped %+v:\n%s", err, dropped, saved)
		}
		if resaved, _ := json.Marshal(again); string(resaved) != string(saved) {
			t.Fatalf("round trip:\n%s\n%s", saved, resaved)
		}
	})
}

func TestCheckRouteFrontDoor(t *testing.T) {
	good := func() *RouteState {
		return &RouteState{Service: "web", Listen: ":80", ListenTLS: ":443", Hosts: []string{"shop.example.com", "*.shop.example.com"},
			Paths: []string{"/", "/api"}, TLS: true, Port: 8080, Network: "n", Cert: "/srv/a/releases/v1/c.pem", Key: "/srv/a/releases/v1/k.pem"}
	}
	if p := checkRoute("web", good()); len(p) != 0 {
		t.Fatalf("a valid front-door route: %v", p)
	}
	httpsOnly := good()
	httpsOnly.Listen = ""
	if p := checkRoute("web", httpsOnly); len(p) != 0 {
		t.Errorf("an HTTPS-only route: %v", p)
	}
	for name, tc := range map[string]struct {
		change func(r *RouteState)
		want   string
	}{
		"bad tls listen":         {func(r *RouteState) { r.ListenTLS = ":99999" }, "listen_tls"},
		"tls listen without tls": {func(r *RouteState) { r.TLS = false }, "listen_tls without tls"},
		"bad host":               {func(r *RouteState) { r.Hosts = []string{"a b"} }, "a b"},
		"bad path":               {func(r *RouteState) { r.Paths = []string{"api"} }, "api"},
		"relative cert":          {func(r *RouteState) { r.Cert = "c.pem" }, "cert"},
		"cert without key":       {func(r *RouteState) { r.Key = "" }, "cert and key go together"},
		"no address":             {func(r *RouteState) { r.Listen, r.ListenTLS, r.TLS = "", "", false }, "listen"},
	} {
		r := good()
		tc.change(r)
		p := checkRoute("web", r)
		if !strings.Contains(strings.Join(p, "; "), tc.want) {
			t.Errorf("%s: problems %v, want one about %q", name, p, tc.want)
		}
	}
}
