package compose

import "fmt"

// x-ship.health is an HTTP path that answers 2xx once the service is ready. shipd
// checks it on the routed port (x-ship.port) before a switch; an agentless deploy
// checks it too, before it reports success: on the routed port when there is one,
// else on the container port of the service's first published port (ports:).

// HealthPort is the container port x-ship.health of service is checked on: the
// routed port, or the target of the service's first published port; 0 when the
// service has no health path or no such port.
func (p *Project) HealthPort(service string) int {
	ship := p.Ship[service]
	if ship.Health == "" {
		return 0
	}
	if ship.Port != 0 {
		return ship.Port
	}
	s, ok := p.Services[service]
	if !ok || len(s.Ports) == 0 {
		return 0
	}
	return int(s.Ports[0].Target)
}

// checkHealth lists the services whose x-ship.health has no port to be checked on.
func checkHealth(p *Project) []shipConflict {
	var problems []shipConflict
	for _, name := range p.ServicesInOrder() {
		if p.Ship[name].Health != "" && p.HealthPort(name) == 0 {
			problems = append(problems, shipConflict{name, fmt.Sprintf(
				"service %q: %s.health %q has no port to be checked on: add port (the container port; with listen when shipd routes it) or publish one (ports:)",
				name, ShipKey, p.Ship[name].Health)})
		}
	}
	return problems
}
