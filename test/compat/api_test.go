package compat

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"

	"github.com/shipdeploy/ship/test/testenv"
)

// dockerAPI reads the Engine API's raw JSON, as `docker inspect` prints it: the
// comparison sees every field the engine returns, not only those an SDK type decodes.
type dockerAPI struct {
	http *http.Client
}

func newDockerAPI(t *testing.T) *dockerAPI {
	t.Helper()
	sock := "/var/run/docker.sock"
	if h := os.Getenv("DOCKER_HOST"); h != "" {
		if !strings.HasPrefix(h, "unix://") {
			testenv.Missing(t, "a Docker engine on a unix socket", "DOCKER_HOST is "+h)
		}
		sock = strings.TrimPrefix(h, "unix://")
	}
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}
	t.Cleanup(tr.CloseIdleConnections)
	return &dockerAPI{http: &http.Client{Transport: tr}}
}

// do sends a request to the engine and decodes its JSON answer into out (when not nil).
func (a *dockerAPI) do(ctx context.Context, method, path string, query url.Values, out any) error {
	u := "http://docker" + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		return err
	}
	resp, err := a.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode == http.StatusNotFound && method == http.MethodDelete {
		return nil
	}
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, strings.TrimSpace(string(body)))
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(body, out)
}

// byProject is the filters query of the objects labelled with project.
func byProject(project string, all bool) url.Values {
	f, _ := json.Marshal(map[string][]string{"label": {"com.docker.compose.project=" + project}})
	q := url.Values{"filters": {string(f)}}
	if all {
		q.Set("all", "1")
	}
	return q
}

// object is one engine object of a project, its inspect JSON decoded.
type object struct {
	ID, Name string
	Labels   map[string]string
	Inspect  map[string]any
}

// containers inspects the project's containers.
func (a *dockerAPI) containers(ctx context.Context, project string) ([]object, error) {
	var list []struct{ ID string }
	if err := a.do(ctx, http.MethodGet, "/containers/json", byProject(project, true), &list); err != nil {
		return nil, err
	}
	out := make([]object, 0, len(list))
	for _, c := range list {
		var in map[string]any
		if err := a.do(ctx, http.MethodGet, "/containers/"+c.ID+"/json", nil, &in); err != nil {
			return nil, err
		}
		cfg, _ := in["Config"].(map[string]any)
		out = append(out, object{ID: c.ID, Name: strings.TrimPrefix(str(in["Name"]), "/"), Labels: labels(cfg["Labels"]), Inspect: in})
	}
	return out, nil
}

// networks inspects the project's networks.
func (a *dockerAPI) networks(ctx context.Context, project string) ([]object, error) {
	var list []map[string]any
	if err := a.do(ctx, http.MethodGet, "/networks", byProject(project, false), &list); err != nil {
		return nil, err
	}
	out := make([]object, 0, len(list))
	for _, n := range list {
		var in map[string]any
		if err := a.do(ctx, http.MethodGet, "/networks/"+str(n["Id"]), nil, &in); err != nil {
			return nil, err
		}
		out = append(out, object{ID: str(in["Id"]), Name: str(in["Name"]), Labels: labels(in["Labels"]), Inspect: in})
	}
	return out, nil
}

// volumes inspects the project's volumes.
func (a *dockerAPI) volumes(ctx context.Context, project string) ([]object, error) {
	var list struct{ Volumes []map[string]any }
	if err := a.do(ctx, http.MethodGet, "/volumes", byProject(project, false), &list); err != nil {
		return nil, err
	}
	out := make([]object, 0, len(list.Volumes))
	for _, v := range list.Volumes {
		out = append(out, object{ID: str(v["Name"]), Name: str(v["Name"]), Labels: labels(v["Labels"]), Inspect: v})
	}
	return out, nil
}

// removeProject removes whatever is left of project on the engine: containers (with
// their anonymous volumes), networks and volumes labelled with it.
func (a *dockerAPI) removeProject(ctx context.Context, project string) error {
	cs, err := a.containers(ctx, project)
	if err != nil {
		return err
	}
	for _, c := range cs {
		if err := a.do(ctx, http.MethodDelete, "/containers/"+c.ID, url.Values{"force": {"1"}, "v": {"1"}}, nil); err != nil {
			return err
		}
	}
	ns, err := a.networks(ctx, project)
	if err != nil {
		return err
	}
	for _, n := range ns {
		if err := a.do(ctx, http.MethodDelete, "/networks/"+n.ID, nil, nil); err != nil {
			return err
		}
	}
	vs, err := a.volumes(ctx, project)
	if err != nil {
		return err
	}
	for _, v := range vs {
		if err := a.do(ctx, http.MethodDelete, "/volumes/"+url.PathEscape(v.Name), nil, nil); err != nil {
			return err
		}
	}
	return nil
}

func str(v any) string {
	s, _ := v.(string)
	return s
}

func labels(v any) map[string]string {
	m, _ := v.(map[string]any)
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = str(v)
	}
	return out
}
