package engine

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// ProxyEnv reads the proxy settings of the docker CLI's config.json (in dir; "" is
// $DOCKER_CONFIG, else ~/.docker) as docker compose applies them to the containers it
// creates: the "proxies" entry of host (the engine's address, as DOCKER_HOST writes it)
// or else "default", as HTTP_PROXY, HTTPS_PROXY, NO_PROXY, FTP_PROXY and ALL_PROXY in
// upper and lower case. No file, or no proxies in it, is no settings.
//
// Set the result as Engine.Proxy only where the engine runs on the machine the config
// file describes: shipctl's local runs (`shipctl test`). A deploy does not take the
// laptop's proxies to a server's containers: put them in the compose file's environment.
func ProxyEnv(dir, host string) (map[string]string, error) {
	if dir == "" {
		dir = os.Getenv("DOCKER_CONFIG")
	}
	if dir == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return nil, nil
		}
		dir = filepath.Join(home, ".docker")
	}
	file := filepath.Join(dir, "config.json")
	data, err := os.ReadFile(file)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var cfg struct {
		Proxies map[string]struct {
			HTTPProxy  string `json:"httpProxy"`
			HTTPSProxy string `json:"httpsProxy"`
			NoProxy    string `json:"noProxy"`
			FTPProxy   string `json:"ftpProxy"`
			AllProxy   string `json:"allProxy"`
		} `json:"proxies"`
	}
	if err := json.Unmarshal(data, &cfg); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	p, ok := cfg.Proxies[host]
	if !ok {
		p = cfg.Proxies["default"]
	}
	out := map[string]string{}
	for k, v := range map[string]string{
		"HTTP_PROXY": p.HTTPProxy, "HTTPS_PROXY": p.HTTPSProxy, "NO_PROXY": p.NoProxy,
		"FTP_PROXY": p.FTPProxy, "ALL_PROXY": p.AllProxy,
	} {
		if v != "" {
			out[k], out[strings.ToLower(k)] = v, v
		}
	}
	if len(out) == 0 {
		return nil, nil
	}
	return out, nil
}
