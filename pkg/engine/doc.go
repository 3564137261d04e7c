// Package engine applies a compose project to a Docker engine through the Engine API:
// networks, volumes and containers named and labelled as docker compose v2 names and
// labels them (so `docker compose ps`, `logs` and `down` see them), started in
// dependency order, waited on until healthy. The test runner (`shipctl test`), the
// agentless deploy and shipd all use it.
//
// The input is a compose-go project that is already loaded, interpolated and
// normalized, with its images built or pinned: a service's image is the image to run,
// pulled when it is not on the engine unless its pull_policy is never or build.
// Building is not done here.
//
// # What Up does
//
//   - Refuses, all at once and by name, what it does not support (secrets, configs,
//     devices, volumes_from, links, hooks, scale above 1, ...) before touching
//     anything.
//   - Pulls missing images (pull_policy missing, the default) or every image
//     (always); the Engine's RegistryAuth, when set, supplies credentials.
//   - Creates the networks and named volumes the services use, labelled
//     com.docker.compose.project/network/volume; external ones must exist.
//   - Walks the depends_on graph: each service starts once its dependencies meet
//     their condition (service_started, service_healthy,
//     service_completed_successfully); independent services go in parallel.
//   - Per service, compares the container's com.docker.compose.config-hash label with
//     ConfigHash and its com.docker.compose.image label with the image's ID: equal and
//     running is left alone, equal and stopped is started, different is recreated
//     under the same name and number: the new container is created beside the old
//     one, started the moment the old one has stopped (while that one is removed),
//     then renamed. The
//     anonymous volumes of a recreated container (declared by the service or by the
//     image's VOLUME) are mounted again in the new one.
//   - With UpOptions.Wait, waits until each container is healthy, or running when it
//     has no health check; a failure is a *HealthError with the container's last log
//     lines.
//
// # Engine API versions
//
// The engine needs API 1.41 (Docker 20.10). Before API 1.44 a container is created on
// its primary network and connected to the others before it starts, and a health
// check's start_interval is refused, naming the engine's API version. A named
// volume's subpath needs API 1.45 and is refused below it.
//
// # Known limits
//
// Only one container per service. Networks and volumes carry docker compose's config
// hash (NetworkHash, VolumeHash): a network whose definition changed is removed, after
// its containers are stopped, and made again; a changed volume is refused
// (VolumeChangedError) unless its definition says `x-ship-recreate: true`, which
// consents to losing its data. That is on an Up of the whole project (an agentless
// deploy); an Up of some services (shipd's swap, a job) and a replica use a changed
// network or volume as it is, since the other containers on it would not be made again.
// One without the label is used as it is. A service that
// depends on another with restart: true is stopped before that one is recreated and
// started again after, as docker compose does; a service sharing another's network
// namespace (network_mode: service:x) is recreated with it. Swarm-only deploy keys (placement, update_config,
// labels, ...) are ignored, as docker compose ignores them.
package engine
