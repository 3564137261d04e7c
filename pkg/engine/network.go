package engine

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sort"
	"sync"

	"github.com/compose-spec/compose-go/v2/types"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"
)

// endpointSettings attaches the container to one network under the names docker
// compose registers: the container's name, the service's name and its aliases.
func endpointSettings(s types.ServiceConfig, name string, cfg *types.ServiceNetworkConfig) (*network.EndpointSettings, error) {
	aliases := []string{name}
	if cfg.ServiceNameAliasEnabled() {
		aliases = append(aliases, s.Name)
	}
	ep := &network.EndpointSettings{}
	if cfg != nil {
		// As docker compose: an IPAM config where the service configures the network,
		// empty without fixed addresses.
		ep.IPAMConfig = &network.EndpointIPAMConfig{}
		aliases = append(aliases, cfg.Aliases...)
		if cfg.Ipv4Address != "" || cfg.Ipv6Address != "" || len(cfg.LinkLocalIPs) > 0 {
			ipam, err := endpointIPAM(cfg)
			if err != nil {
				return nil, err
			}
			ep.IPAMConfig = ipam
		}
	}
	ep.Aliases = aliases
	return ep, nil
}

// endpointIPAM maps a network's fixed addresses: ipv4_address, ipv6_address and
// link_local_ips.
func endpointIPAM(cfg *types.ServiceNetworkConfig) (*network.EndpointIPAMConfig, error) {
	v4, err := parseAddr(cfg.Ipv4Address)
	if err != nil {
		return nil, fmt.Errorf("ipv4_address: %w", err)
	}
	v6, err := parseAddr(cfg.Ipv6Address)
	if err != nil {
		return nil, fmt.Errorf("ipv6_address: %w", err)
	}
	local, err := parseAddrs(cfg.LinkLocalIPs)
	if err != nil {
		return nil, fmt.Errorf("link_local_ips: %w", err)
	}
	return &network.EndpointIPAMConfig{IPv4Address: v4, IPv6Address: v6, LinkLocalIPs: local}, nil
}

// parseAddr parses an IP address; "" is the zero address, which the API leaves out.
func parseAddr(s string) (netip.Addr, error) {
	if s == "" {
		return netip.Addr{}, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("%q is not an IP address", s)
	}
	return a, nil
}

// addrString is an address as the engine's API wrote it before it was typed: ""
// when there is none.
func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

// parseAddrs parses a list of IP addresses; an empty list stays nil.
func parseAddrs(in []string) ([]netip.Addr, error) {
	var out []netip.Addr
	for _, s := range in {
		a, err := parseAddr(s)
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, nil
}

// extraHosts are the service's extra_hosts as host:ip, sorted; none is an empty list,
// as docker compose writes it.
func extraHosts(h types.HostsList) []string {
	l := h.AsList(":")
	if l == nil {
		l = []string{}
	}
	sort.Strings(l)
	return l
}

// exposedPorts expands an expose entry: 3000, 3000/udp or a range 3000-3005/tcp.
func exposedPorts(e string) ([]network.Port, error) {
	rng, err := network.ParsePortRange(e)
	if err != nil {
		return nil, err
	}
	return slices.Collect(rng.All()), nil
}

// ipamConfig maps a network's ipam section; nil when it has none.
func ipamConfig(c types.IPAMConfig) (*network.IPAM, error) {
	if c.Driver == "" && len(c.Config) == 0 {
		return nil, nil
	}
	ipam := &network.IPAM{Driver: c.Driver, Options: c.Options}
	for _, pool := range c.Config {
		if pool == nil {
			continue
		}
		cfg := network.IPAMConfig{}
		var err error
		if cfg.Subnet, err = parsePrefix(pool.Subnet); err != nil {
			return nil, fmt.Errorf("ipam subnet: %w", err)
		}
		if cfg.IPRange, err = parsePrefix(pool.IPRange); err != nil {
			return nil, fmt.Errorf("ipam ip_range: %w", err)
		}
		if cfg.Gateway, err = parseAddr(pool.Gateway); err != nil {
			return nil, fmt.Errorf("ipam gateway: %w", err)
		}
		for host, addr := range pool.AuxiliaryAddresses {
			a, err := parseAddr(addr)
			if err != nil {
				return nil, fmt.Errorf("ipam aux_addresses %s: %w", host, err)
			}
			if cfg.AuxAddress == nil {
				cfg.AuxAddress = map[string]netip.Addr{}
			}
			cfg.AuxAddress[host] = a
		}
		ipam.Config = append(ipam.Config, cfg)
	}
	return ipam, nil
}

// parsePrefix parses a subnet in CIDR form; "" is the zero prefix, which the API
// leaves out.
func parsePrefix(s string) (netip.Prefix, error) {
	if s == "" {
		return netip.Prefix{}, nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not a subnet in CIDR form", s)
	}
	return p, nil
}

// publish adds the service's exposed and published ports to exposed and returns the
// published ones' host bindings.
func publish(s types.ServiceConfig, exposed network.PortSet) (network.PortMap, error) {
	bindings := network.PortMap{}
	for _, e := range s.Expose {
		ports, err := exposedPorts(e)
		if err != nil {
			return nil, fmt.Errorf("service %s: expose %q: %w", s.Name, e, err)
		}
		for _, port := range ports {
			exposed[port] = struct{}{}
		}
	}
	for _, pc := range s.Ports {
		proto := pc.Protocol
		if proto == "" {
			proto = "tcp"
		}
		port, ok := network.PortFrom(uint16(pc.Target), network.IPProtocol(proto))
		if !ok || pc.Target > 65535 {
			return nil, fmt.Errorf("service %s: port %d/%s is not a port", s.Name, pc.Target, proto)
		}
		hostIP, err := parseAddr(pc.HostIP)
		if err != nil {
			return nil, fmt.Errorf("service %s: port %d: host_ip: %w", s.Name, pc.Target, err)
		}
		exposed[port] = struct{}{}
		bindings[port] = append(bindings[port], network.PortBinding{HostIP: hostIP, HostPort: pc.Published})
	}
	return bindings, nil
}

// ensureNetworks creates the networks the services join that do not exist yet, and
// checks that the external ones do. With whole (an Up of the whole project), a network
// made from another definition is made again; otherwise (some services: shipd's swap,
// a job) it is used as it is, since its other containers would not be made again.
//
// reads are the networks' lookups made beforehand (findNetworks); nil: they are made
// here, all at once. removed says a network made from another definition was removed
// with the containers on it.
func (e *Engine) ensureNetworks(ctx context.Context, p *types.Project, services []string, whole bool, rep *reporter, reads map[string]networkRead) (removed bool, err error) {
	sorted := networkKeys(p, services)
	if reads == nil {
		reads = e.findNetworks(ctx, p, sorted)
	}
	for _, key := range sorted {
		n := p.Networks[key] // the zero value for an undeclared default network
		name := networkName(p, key)
		existing, err := reads[key].n, reads[key].err
		if err != nil {
			return removed, err
		}
		if n.External {
			if existing == nil {
				return removed, fmt.Errorf("network %s is declared external but does not exist", name)
			}
			continue
		}
		hash, err := NetworkHash(n)
		if err != nil {
			return removed, err
		}
		if existing != nil {
			// As docker compose: a network without the label (made by an older
			// version) is kept; one made from another definition is made again.
			if h, ok := existing.Labels[labelConfigHash]; !ok || h == hash || !whole {
				continue
			}
			if err := e.removeDivergedNetwork(ctx, p, *existing, rep); err != nil {
				return removed, err
			}
			removed = true
		}
		labels := objectLabels(p.Name, labelNetwork, key, hash, n.Labels, n.CustomLabels)
		opts := client.NetworkCreateOptions{
			Driver:     n.Driver,
			Options:    n.DriverOpts,
			Internal:   n.Internal,
			Attachable: n.Attachable,
			EnableIPv6: n.EnableIPv6,
			Labels:     labels,
		}
		ipam, err := ipamConfig(n.Ipam)
		if err != nil {
			return removed, fmt.Errorf("network %s: %w", name, err)
		}
		opts.IPAM = ipam
		if _, err := e.api.NetworkCreate(ctx, name, opts); err != nil {
			// Another Up of the same project may have just created it.
			if found, ferr := e.findNetwork(ctx, name); ferr == nil && found != nil {
				continue
			}
			return removed, fmt.Errorf("create network %s: %w", name, err)
		}
		rep.event("", "", "network", "created "+name)
	}
	return removed, nil
}

// findNetwork returns the network of exactly this name, nil when there is none (the
// engine's name filter matches substrings, and inspecting by name also matches ID
// prefixes).
func (e *Engine) findNetwork(ctx context.Context, name string) (*network.Summary, error) {
	res, err := e.api.NetworkList(ctx, client.NetworkListOptions{Filters: make(client.Filters).Add("name", name)})
	if err != nil {
		return nil, fmt.Errorf("list networks: %w", err)
	}
	for _, n := range res.Items {
		if n.Name == name {
			return &n, nil
		}
	}
	return nil, nil
}

// networkRead is one network's lookup (findNetwork): the network, nil when there is
// none, or the error.
type networkRead struct {
	n   *network.Summary
	err error
}

// networkKeys are the project's networks (keys of p.Networks) that services join, sorted.
func networkKeys(p *types.Project, services []string) []string {
	keys := map[string]bool{}
	for _, name := range services {
		for _, key := range serviceNetworks(p.Services[name]) {
			keys[key] = true
		}
	}
	return slices.Sorted(maps.Keys(keys))
}

// findNetworks looks the networks of keys up all at once: one round trip to a far
// engine, not one each.
func (e *Engine) findNetworks(ctx context.Context, p *types.Project, keys []string) map[string]networkRead {
	reads := make([]networkRead, len(keys))
	var wg sync.WaitGroup
	for i, key := range keys {
		wg.Go(func() {
			n, err := e.findNetwork(ctx, networkName(p, key))
			reads[i] = networkRead{n, err}
		})
	}
	wg.Wait()
	out := make(map[string]networkRead, len(keys))
	for i, key := range keys {
		out[key] = reads[i]
	}
	return out
}
