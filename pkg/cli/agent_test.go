package cli

import (
	"errors"
	"testing"
	"time"

	"github.com/shipdeploy/ship/pkg/agentapi"
	"github.com/shipdeploy/ship/pkg/deploy"
)

func TestRenderAgentStatus(t *testing.T) {
	since := time.Date(2025, 3, 1, 12, 0, 0, 0, time.Local)
	st := &agentapi.Status{
		Version: "shipd v1.2.3 (abc) go1.26 linux/amd64", PID: 42, Started: since, Uptime: agentapi.Duration(90 * time.Second),
		Routes: []agentapi.Route{{App: "shop", Service: "web", Listen: ":80", Target: "172.18.0.3:8080", Container: "shop-web-3",
			Release: "aaaaaaaaaaaaaaaa", Since: since, Requests: 12}},
		Apps: []agentapi.App{{App: "shop", Path: "/srv/shop", Release: "aaaaaaaaaaaaaaaa", Previous: "bbbbbbbbbbbbbbbb", Since: since,
			LastResult: "failed", LastError: "deploy of cccccccccccc was cut off by a shipd restart\nmore", LastTime: since}},
	}
	io, out, _ := testIO("", false)
	g := &Globals{Factory: NewFactory(io)}
	renderAgentStatus(g, newPrinter(g), deploy.HostAgent{Host: "deploy@web1", Status: st})
	renderAgentStatus(g, newPrinter(g), deploy.HostAgent{Host: "deploy@web2", Err: errors.New("shipd does not answer")})
	want := `deploy@web1: shipd v1.2.3 (abc) go1.26 linux/amd64, pid 42, up 1m30s (since 2025-03-01 12:00:00)
  routes:
    shop/web  :80 -> 172.18.0.3:8080  (shop-web-3, release aaaaaaaaaaaa, since 2025-03-01 12:00:00, 12 requests)
  apps:
    shop  live aaaaaaaaaaaa since 2025-03-01 12:00:00, previous bbbbbbbbbbbb; last: failed at 2025-03-01 12:00:00 (deploy of cccccccccccc was cut off by a shipd restart)
      /srv/shop
deploy@web2: shipd does not answer
`
	if out.String() != want {
		t.Errorf("got:\n%s\nwant:\n%s", out.String(), want)
	}
}
