package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
)

// A service's other routes are kept under "more"; a state without them (validState,
// as shipd wrote it with one route per service) loads as before, and a bad entry of
// more leaves the app out like a bad route.
func TestStateMoreRoutes(t *testing.T) {
	old, dropped, err := decodeState([]byte(validState))
	if err != nil || len(dropped) != 0 {
		t.Fatalf("a state with one route: %v %+v", err, dropped)
	}
	if rs := old.Apps["shop"].Routes["web"]; len(rs.all()) != 1 || rs.all()[0] != rs {
		t.Errorf("routes of a one-route state: %+v", rs.all())
	}
	more := func(entry map[string]any) []byte {
		var s map[string]any
		if err := json.Unmarshal([]byte(validState), &s); err != nil {
			t.Fatal(err)
		}
		web := s["apps"].(map[string]any)["shop"].(map[string]any)["routes"].(map[string]any)["web"].(map[string]any)
		web["more"] = []any{entry}
		data, _ := json.Marshal(s)
		return data
	}
	admin := map[string]any{
		"service": "web", "listen": ":9090", "port": 9090, "network": "shop_default",
		"container": "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", "target": "172.18.0.3:9090",
	}
	got, dropped, err := decodeState(more(admin))
	if err != nil || len(dropped) != 0 {
		t.Fatalf("a state with two routes: %v %+v", err, dropped)
	}
	all := got.Apps["shop"].Routes["web"].all()
	if len(all) != 2 || all[1].Port != 9090 || all[1].Target != "172.18.0.3:9090" || all[1].Listen != ":9090" {
		t.Errorf("routes: %+v", all)
	}
	admin["port"] = 0
	_, dropped, err = decodeState(more(admin))
	if err != nil || len(dropped) != 1 || !strings.Contains(dropped[0].reason, `route "web" (more[0]): port 0`) {
		t.Errorf("a bad entry of more: %v %+v", err, dropped)
	}
}

// A service's other routes (RouteState.More) follow the container reconcile chooses:
// both listeners serve it and the state names it for both.
func TestReconcileMoreRoutes(t *testing.T) {
	reps, port := boxes(t, "shop", []box{{name: "web-1", release: "v1", state: "exited"}, {name: "web-2", release: "v1"}})
	eng := &fakeEngine{reps: reps}
	app, admin := freeAddr(t), freeAddr(t)
	gone := fmt.Sprintf("127.0.0.99:%d", port)
	route := &RouteState{
		Service: "web", Listen: app, Port: port, Network: testNetwork, Health: "/up",
		Container: "id-web-1", Name: "web-1", Release: "v1", Target: gone,
		More: []*RouteState{{
			Service: "web", Listen: admin, Port: port, Network: testNetwork,
			Container: "id-web-1", Name: "web-1", Release: "v1", Target: gone,
		}},
	}
	a := newTestAgent(t, eng, &AppState{App: "shop", Path: t.TempDir(), Release: "v1", Routes: map[string]*RouteState{"web": route}})
	ctx := context.Background()
	if cleanup := a.startRoutes(ctx, nil); cleanup != nil {
		defer cleanup(ctx)
	}
	for what, listen := range map[string]string{"first route": app, "other route": admin} {
		if status, body := get(t, listen); status != http.StatusOK || body != "web-2" {
			t.Errorf("%s answers %d %q, want web-2", what, status, body)
		}
	}
	got := a.store.snapshot().Apps["shop"].Routes["web"]
	want, _ := reps[1].Addr(testNetwork, port)
	if len(got.More) != 1 || got.More[0].Name != "web-2" || got.More[0].Container != "id-web-2" || got.More[0].Target != want {
		t.Errorf("the state's other route: %+v, want web-2 at %s", got.More, want)
	}
}
