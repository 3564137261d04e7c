package engine

import (
	"context"
	"testing"

	"github.com/compose-spec/compose-go/v2/types"
	"github.com/moby/moby/client"
)

// pingCounter is an engine client that answers pings and counts them; the rest of
// the API is not there (a call panics).
type pingCounter struct {
	client.APIClient
	pings int
}

func (c *pingCounter) Ping(context.Context, client.PingOptions) (client.PingResult, error) {
	c.pings++
	return client.PingResult{}, nil
}

func (c *pingCounter) ClientVersion() string { return "1.41" }

// Check and Up ping the engine once per Engine (a round trip to a far host each), and
// not at all over a client that negotiated already (pkg/sshx's).
func TestEnginePingsOnce(t *testing.T) {
	ctx := context.Background()
	web := types.ServiceConfig{Name: "web"}
	web.Image = "nginx"
	p := &types.Project{Name: "demo", Services: types.Services{"web": web}}
	api := &pingCounter{}
	e := New(api)
	for range 3 {
		if err := e.Check(ctx, p, nil); err != nil {
			t.Fatal(err)
		}
	}
	if api.pings != 1 {
		t.Errorf("three checks pinged %d times, want 1", api.pings)
	}
	negotiated := &pingCounter{}
	if err := Negotiated(negotiated).Check(ctx, p, nil); err != nil {
		t.Fatal(err)
	}
	if negotiated.pings != 0 {
		t.Errorf("a check over a negotiated client pinged %d times, want 0", negotiated.pings)
	}
}
