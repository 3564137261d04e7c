package image

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

var (
	// ErrRegistryDown means the registry did not answer (or not as a registry).
	ErrRegistryDown = errors.New("registry does not answer")
	// ErrRegistryAuth means the registry refused the credentials, or wants some and
	// none were found.
	ErrRegistryAuth = errors.New("registry login failed")
)

// manifestTypes are what a manifest check accepts: OCI and Docker, images and indexes.
var manifestTypes = []string{
	"application/vnd.oci.image.manifest.v1+json",
	"application/vnd.oci.image.index.v1+json",
	"application/vnd.docker.distribution.manifest.v2+json",
	"application/vnd.docker.distribution.manifest.list.v2+json",
}

// registryClient talks to one registry's HTTP API (distribution spec), logging in the
// way the engine does: basic auth, or a bearer token from the realm the registry names.
type registryClient struct {
	host  string
	creds Credentials
	// insecure says whether the engine reaches the registry over plain HTTP, or HTTPS
	// without checking its certificate; asked only when checked HTTPS fails. May be nil.
	insecure func() bool
	http     *http.Client
	base     string // "https://host" or "http://host", settled by the first request
}

// defaultHTTP fetches tokens for the builder.
var defaultHTTP = &http.Client{Timeout: 30 * time.Second}

func newRegistryClient(host string, creds Credentials, insecure func() bool) *registryClient {
	if host == "docker.io" {
		host = "registry-1.docker.io" // Docker Hub's API
	}
	return &registryClient{host: host, creds: creds, insecure: insecure, http: &http.Client{Timeout: 30 * time.Second}}
}

// ping checks that the registry answers and accepts the credentials (GET /v2/, the
// way docker login checks).
func (c *registryClient) ping(ctx context.Context) error {
	resp, err := c.get(ctx, http.MethodGet, "/v2/", nil, "")
	if err != nil {
		return err
	}
	resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
		return nil
	case http.StatusUnauthorized:
	default:
		return fmt.Errorf("%w as a Docker registry: %s answered GET /v2/ with %s", ErrRegistryDown, c.host, resp.Status)
	}
	if c.creds.Empty() {
		return fmt.Errorf("%w: %s wants credentials and none were found", ErrRegistryAuth, c.host)
	}
	auth, err := c.authorize(ctx, resp, nil)
	if err != nil {
		return err
	}
	resp, err = c.get(ctx, http.MethodGet, "/v2/", nil, auth)
	if err != nil {
		return err
	}
	resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
		return nil
	case http.StatusUnauthorized, http.StatusForbidden:
		return c.refused()
	}
	return fmt.Errorf("%w as a Docker registry: %s answered GET /v2/ with %s after logging in", ErrRegistryDown, c.host, resp.Status)
}

func (c *registryClient) refused() error {
	who := "the credentials"
	if c.creds.Username != "" {
		who = fmt.Sprintf("the credentials of user %q", c.creds.Username)
	}
	if c.creds.From != "" {
		who += " from " + c.creds.From
	}
	return fmt.Errorf("%w: %s refused %s", ErrRegistryAuth, c.host, who)
}

// manifest returns the digest of repo:tag in the registry, and whether it is there.
func (c *registryClient) manifest(ctx context.Context, repo, tag string) (string, bool, error) {
	path := "/v2/" + repo + "/manifests/" + tag
	accept := map[string]string{"Accept": strings.Join(manifestTypes, ", ")}
	resp, err := c.get(ctx, http.MethodHead, path, accept, "")
	if err != nil {
		return "", false, err
	}
	resp.Body.Close()
	if resp.StatusCode == http.StatusUnauthorized {
		auth, err := c.authorize(ctx, resp, []string{"repository:" + repo + ":pull"})
		if err != nil {
			return "", false, err
		}
		if resp, err = c.get(ctx, http.MethodHead, path, accept, auth); err != nil {
			return "", false, err
		}
		resp.Body.Close()
	}
	switch resp.StatusCode {
	case http.StatusOK:
		return resp.Header.Get("Docker-Content-Digest"), true, nil
	case http.StatusNotFound:
		return "", false, nil
	case http.StatusUnauthorized, http.StatusForbidden:
		return "", false, c.refused()
	}
	return "", false, fmt.Errorf("HEAD %s on %s: %s", path, c.host, resp.Status)
}

// get sends one request. The first one settles how: HTTPS, and for a registry the
// engine treats as insecure, HTTPS without checking the certificate, then plain HTTP
// (what the engine does).
func (c *registryClient) get(ctx context.Context, method, path string, header map[string]string, auth string) (*http.Response, error) {
	type attempt struct {
		base   string
		client *http.Client
	}
	attempts := []attempt{{c.base, c.http}}
	if c.base == "" {
		attempts[0].base = "https://" + c.host
	}
	var errs []error
	for i := 0; i < len(attempts); i++ {
		a := attempts[i]
		req, err := http.NewRequestWithContext(ctx, method, a.base+path, nil)
		if err != nil {
			return nil, err
		}
		for k, v := range header {
			req.Header.Set(k, v)
		}
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := a.client.Do(req)
		if err == nil {
			c.base, c.http = a.base, a.client
			return resp, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		errs = append(errs, err)
		if c.base == "" && i == 0 && c.insecure != nil && c.insecure() {
			tr := http.DefaultTransport.(*http.Transport).Clone()
			tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // the engine is configured to trust it so
			lax := &http.Client{Transport: tr, Timeout: c.http.Timeout}
			attempts = append(attempts, attempt{"https://" + c.host, lax}, attempt{"http://" + c.host, c.http})
		}
	}
	return nil, fmt.Errorf("%w: %s: %v", ErrRegistryDown, c.host, netReason(errs))
}

// netReason is the most telling of the errors from trying each scheme.
func netReason(errs []error) error {
	for _, err := range errs {
		var op *net.OpError
		if errors.As(err, &op) {
			return op
		}
	}
	if len(errs) > 0 {
		var ue *url.Error
		if errors.As(errs[0], &ue) {
			return ue.Err
		}
		return errs[0]
	}
	return errors.New("no answer")
}

// authorize answers a 401's challenge: basic auth, or a bearer token fetched from the
// realm with the credentials, for scopes.
func (c *registryClient) authorize(ctx context.Context, resp *http.Response, scopes []string) (string, error) {
	scheme, params := parseChallenge(resp.Header.Get("WWW-Authenticate"))
	switch strings.ToLower(scheme) {
	case "basic":
		if c.creds.Password == "" {
			return "", fmt.Errorf("%w: %s wants a user name and password and none were found", ErrRegistryAuth, c.host)
		}
		req, _ := http.NewRequest(http.MethodGet, "/", nil)
		req.SetBasicAuth(c.creds.Username, c.creds.Password)
		return req.Header.Get("Authorization"), nil
	case "bearer":
		tok, err := fetchToken(ctx, c.http, tokenRequest{
			Realm: params["realm"], Service: params["service"], Scopes: scopes, Creds: c.creds,
		})
		if err != nil {
			if errors.Is(err, ErrRegistryAuth) {
				return "", c.refused()
			}
			return "", fmt.Errorf("%s: log in: %w", c.host, err)
		}
		return "Bearer " + tok.Token, nil
	}
	return "", fmt.Errorf("%w: %s asks for %q authentication, which ship does not speak", ErrRegistryAuth, c.host, scheme)
}

// parseChallenge splits a WWW-Authenticate value: `Bearer realm="x",service="y"`.
func parseChallenge(h string) (string, map[string]string) {
	scheme, rest, _ := strings.Cut(strings.TrimSpace(h), " ")
	params := map[string]string{}
	for rest = strings.TrimSpace(rest); rest != ""; rest = strings.TrimSpace(rest) {
		key, after, ok := strings.Cut(rest, "=")
		if !ok {
			break
		}
		key = strings.ToLower(strings.TrimSpace(key))
		var val string
		if strings.HasPrefix(after, `"`) {
			end := 1
			for end < len(after) && after[end] != '"' {
				if after[end] == '\\' {
					end++
				}
				end++
			}
			val = strings.ReplaceAll(after[1:min(end, len(after))], `\"`, `"`)
			rest = after[min(end+1, len(after)):]
		} else {
			val, rest, _ = strings.Cut(after, ",")
		}
		params[key] = val
		rest = strings.TrimPrefix(strings.TrimSpace(rest), ",")
	}
	return scheme, params
}

type tokenRequest struct {
	Realm, Service string
	Scopes         []string
	Creds          Credentials
}

type tokenResponse struct {
	Token     string
	ExpiresIn int64
	IssuedAt  time.Time
}

// fetchToken gets a bearer token from a token server: with a refresh token by the OAuth
// POST, else with basic auth by GET (the docker registry token protocol).
func fetchToken(ctx context.Context, hc *http.Client, r tokenRequest) (tokenResponse, error) {
	if r.Realm == "" {
		return tokenResponse{}, errors.New("the registry's bearer challenge names no realm")
	}
	u, err := url.Parse(r.Realm)
	if err != nil {
		return tokenResponse{}, fmt.Errorf("token realm: %w", err)
	}
	var req *http.Request
	if r.Creds.IdentityToken != "" {
		form := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {r.Creds.IdentityToken}, "client_id": {"shipctl"}}
		if r.Service != "" {
			form.Set("service", r.Service)
		}
		if len(r.Scopes) > 0 {
			form.Set("scope", strings.Join(r.Scopes, " "))
		}
		req, err = http.NewRequestWithContext(ctx, http.MethodPost, u.String(), strings.NewReader(form.Encode()))
		if err != nil {
			return tokenResponse{}, err
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	} else {
		q := u.Query()
		if r.Service != "" {
			q.Set("service", r.Service)
		}
		for _, s := range r.Scopes {
			q.Add("scope", s)
		}
		if r.Creds.Username != "" {
			q.Set("account", r.Creds.Username)
		}
		u.RawQuery = q.Encode()
		req, err = http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
		if err != nil {
			return tokenResponse{}, err
		}
		if r.Creds.Password != "" {
			req.SetBasicAuth(r.Creds.Username, r.Creds.Password)
		}
	}
	resp, err := hc.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // the URL could carry a refresh token's form; the host is enough
		}
		return tokenResponse{}, fmt.Errorf("%w: token server %s: %v", ErrRegistryDown, u.Host, err)
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		return tokenResponse{}, fmt.Errorf("%w: token server %s answered %s", ErrRegistryAuth, u.Host, resp.Status)
	case resp.StatusCode != http.StatusOK:
		return tokenResponse{}, fmt.Errorf("token server %s answered %s", u.Host, resp.Status)
	}
	var body struct {
		Token       string    `json:"token"`
		AccessToken string    `json:"access_token"`
		ExpiresIn   int64     `json:"expires_in"`
		IssuedAt    time.Time `json:"issued_at"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&body); err != nil {
		return tokenResponse{}, fmt.Errorf("token server %s: the answer is not JSON", u.Host)
	}
	tok := tokenResponse{Token: body.Token, ExpiresIn: body.ExpiresIn, IssuedAt: body.IssuedAt}
	if tok.Token == "" {
		tok.Token = body.AccessToken
	}
	if tok.Token == "" {
		return tokenResponse{}, fmt.Errorf("token server %s answered without a token", u.Host)
	}
	return tok, nil
}
