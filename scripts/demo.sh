#!/usr/bin/env bash
# The demo: takes examples/ through shipctl on this machine. Run it with `make demo`,
# which builds bin/shipctl, bin/registry and the example app first.
#
# This machine plays the server: the script starts a registry (bin/registry) and an
# OpenSSH sshd on 127.0.0.1, both on free ports and with their own generated keys
# and known_hosts, all in a temporary folder; nothing in ~/.ssh is read or changed
# (shipctl runs with HOME in that folder). Then, with the output a user sees:
#
#   shipctl ship demo --yes     v1: build, test, push, deploy; curl shows v1
#   (VERSION: v2 in docker-compose.yml, committed)
#   shipctl ship demo --yes     v2; curl shows v2
#   shipctl status demo / shipctl history demo
#   shipctl rollback demo --yes back to v1; curl shows v1
#   then shipd, the agent, on the "server" (a plain process here: no systemd):
#   shipctl ship demo --yes     v3 through shipd (agent: true; web served on its listen)
#   shipctl ship demo --yes     v4 swapped blue-green while a load generator sends 100
#                               requests/s through shipd: the failed requests are counted
#                               and must be 0
#   the front door: a second app (blog) and v5 of the first (shop) behind one shipd
#                               listener, routed by host name; shop over HTTPS (HTTP/2)
#                               with its own certificate (ship.yaml's tls), plain HTTP to it
#                               redirected; an unknown host gets 404; shipctl agent status
#
# The app's names are unique per run (example-<random>, and -blog), so two demos can run
# at once on one engine; everything a run started or made goes when it ends, also on
# Ctrl-C or a failure: the containers, networks and images of its projects (and nothing
# else), the registry, sshd and the temporary folder. It exits non-zero when any step
# misbehaves.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
shipctl="$root/bin/shipctl"
registry="$root/bin/registry"
sshd=/usr/sbin/sshd # absolute: sshd re-executes itself
# The app: in ship.yaml, the compose project on the "server"; unique per run.
app="example-$(od -An -N4 -tx4 /dev/urandom | tr -d ' \n')"
blog="$app-blog" # the second app, behind the same shipd listener
start=$SECONDS

say() { printf '\n\033[1m### %s\033[0m\n' "$*"; }
die() {
	echo "demo: $*" >&2
	exit 1
}

shipd="$root/bin/shipd"
loadgen="$root/bin/loadgen"
for bin in "$shipctl" "$registry" "$shipd" "$loadgen"; do
	[ -x "$bin" ] || die "${bin#"$root"/} is missing; run 'make demo'"
done
if [ ! -x "$sshd" ]; then
	echo "demo: no $sshd; installing openssh-server (scripts/install-deps.sh)" >&2
	sh "$root/scripts/install-deps.sh"
fi
for cmd in docker git ssh-keygen timeout openssl curl; do
	command -v "$cmd" >/dev/null || die "$cmd is missing (scripts/install-deps.sh installs what the demo needs)"
done
docker info >/dev/null 2>&1 || die "the Docker engine does not answer (docker info); scripts/install-deps.sh says how to fix it"
if [ -n "$(docker ps -aq --filter "label=com.docker.compose.project=$app")" ]; then
	die "containers of a compose project named $app are already on this engine; the demo would replace them.
Remove them first: docker rm -f \$(docker ps -aq --filter label=com.docker.compose.project=$app)"
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/ship-demo.XXXXXX")"
reg_pid='' sshd_pid='' reg_addr='' shipd_pid='' load_pid=''
cleanup() {
	local code=$?
	set +e
	trap - EXIT INT TERM
	printf '\n\033[1m### Cleaning up\033[0m\n'
	# Each app's compose project on the "server" is <app>-<env> (the environment demo).
	for project in "$app" "$app-demo" "$blog" "$blog-demo"; do
		docker ps -aq --filter "label=com.docker.compose.project=$project" | xargs -r docker rm -f >/dev/null
		docker network ls -q --filter "label=com.docker.compose.project=$project" | xargs -r docker network rm >/dev/null
	done
	if [ -n "$reg_addr" ]; then
		# Every tag of the demo's registry: built by shipctl, or pulled by the "server"
		# (the same engine).
		docker images --format '{{.Repository}}:{{.Tag}}' | grep -F "$reg_addr/" | xargs -r docker rmi -f >/dev/null
	fi
	for pid in $load_pid $shipd_pid $sshd_pid $reg_pid; do
		kill "$pid" 2>/dev/null
		wait "$pid" 2>/dev/null
	done
	rm -rf "$work"
	left=0
	for project in "$app" "$app-demo" "$blog" "$blog-demo"; do
		left=$((left + $(docker ps -aq --filter "label=com.docker.compose.project=$project" | wc -l)))
	done
	echo "containers, networks and images of $app-demo and $blog-demo removed ($left containers left); shipd, registry, sshd and $work gone"
	if [ "$code" -eq 0 ]; then
		echo "demo: done in $((SECONDS - start))s"
	else
		echo "demo: FAILED (exit $code) after $((SECONDS - start))s" >&2
	fi
	exit "$code"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# free_port prints a port of 127.0.0.1 that nothing listens on, below Linux's range of
# ephemeral ports (32768 and up), which outgoing connections take at any moment.
free_port() {
	local p
	for _ in $(seq 100); do
		p=$((20000 + RANDOM % 12000))
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			echo "$p"
			return
		fi
	done
	die "no free port found on 127.0.0.1"
}

# get URL: the body of an HTTP GET, with curl when there is one.
get() {
	if command -v curl >/dev/null; then
		curl -fsS --max-time 5 "$1"
		return
	fi
	local hostport=${1#http://} rest
	rest=/${hostport#*/}
	hostport=${hostport%%/*}
	exec 3<>"/dev/tcp/${hostport%:*}/${hostport#*:}"
	printf 'GET %s HTTP/1.0\r\nHost: %s\r\n\r\n' "$rest" "$hostport" >&3
	sed '1,/^\r$/d' <&3
	exec 3<&-
}

# show_app checks that the app answers with version $1, showing the request.
show_app() {
	local url="http://127.0.0.1:$WEB_PORT/" body
	echo "\$ curl -s $url"
	body=$(get "$url") || die "the app does not answer on $url"
	echo "$body"
	case "$body" in
	*"($1)"*) ;;
	*) die "expected the app to be $1" ;;
	esac
}

# ship runs shipctl as the user would type it, isolated from ~/.ssh, ~/.docker and
# ssh-agent: only the demo's key and known_hosts are used.
ship() {
	printf '$ shipctl %s\n' "$*"
	HOME="$work/home" SSH_AUTH_SOCK='' "$shipctl" "$@"
}

say "A registry on 127.0.0.1 (bin/registry, storage in $work/registry)"
mkdir -p "$work/registry" "$work/home"
"$registry" -dir "$work/registry" -max-life 10m >"$work/registry.out" 2>"$work/registry.log" &
reg_pid=$!
for _ in $(seq 100); do
	read -r ready reg_addr _ <"$work/registry.out" 2>/dev/null || true
	[ "${ready:-}" = ready ] && break
	kill -0 "$reg_pid" 2>/dev/null || die "the registry did not start: $(cat "$work/registry.log")"
	sleep 0.1
done
[ -n "$reg_addr" ] || die "the registry did not say where it listens"
echo "registry: http://$reg_addr"

say "The server: an sshd on 127.0.0.1 with its own host key; a user key for shipctl"
user="$(id -un)"
ssh_dir="$work/sshd"
mkdir -p "$ssh_dir"
ssh-keygen -q -t ed25519 -N '' -C "ship demo host" -f "$ssh_dir/host_key"
ssh-keygen -q -t ed25519 -N '' -C "ship demo user" -f "$ssh_dir/user_key"
cp "$ssh_dir/user_key.pub" "$ssh_dir/authorized_keys"
ssh_port=$(free_port)
cat >"$ssh_dir/sshd_config" <<EOF
ListenAddress 127.0.0.1
Port $ssh_port
HostKey $ssh_dir/host_key
AuthorizedKeysFile $ssh_dir/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
StrictModes no
UsePAM no
PermitRootLogin prohibit-password
PidFile $ssh_dir/sshd.pid
AllowStreamLocalForwarding yes
AllowTcpForwarding local
Subsystem sftp internal-sftp
LogLevel VERBOSE
EOF
# sshd's privilege separation directory, which a fresh machine may lack.
if [ "$(id -u)" -eq 0 ] && [ ! -d /run/sshd ]; then
	install -d -m 0755 /run/sshd
fi
# timeout bounds sshd's life if this script is killed without a chance to clean up.
timeout 10m "$sshd" -D -e -f "$ssh_dir/sshd_config" 2>"$ssh_dir/sshd.log" &
sshd_pid=$!
banner=
for _ in $(seq 50); do
	banner=$( (exec 3<>"/dev/tcp/127.0.0.1/$ssh_port" && read -r -t 2 line <&3 && echo "$line") 2>/dev/null || true)
	case "$banner" in SSH-2.0-*) break ;; esac
	kill -0 "$sshd_pid" 2>/dev/null || die "sshd did not start: $(cat "$ssh_dir/sshd.log")"
	sleep 0.1
done
case "$banner" in SSH-2.0-*) ;; *) die "sshd does not answer on 127.0.0.1:$ssh_port: $(cat "$ssh_dir/sshd.log")" ;; esac
echo "sshd: $user@127.0.0.1:$ssh_port (${banner%$'\r'})"

say "The example app as an application repository of its own: $work/app"
repo="$work/app"
mkdir -p "$repo"
cp -r "$root/examples/." "$repo/"
# The app's binary: built by `make demo` (make example), else here.
if [ ! -x "$repo/app/app" ]; then
	(cd "$root" && CGO_ENABLED=0 go build -trimpath -o "$repo/app/app" ./examples/app)
fi
printf 'app/app\n' >"$repo/.gitignore"
# The demo environment points at the sshd just started; its host key goes into
# deploy/known_hosts, committed with the app as a CI machine would have it.
awk '/^environments:/ { exit } { print }' "$root/examples/ship.yaml" | sed "s/^app: example$/app: $app/" >"$repo/ship.yaml"
grep -q "^app: $app$" "$repo/ship.yaml" || die "could not set app: $app in ship.yaml"
cat >>"$repo/ship.yaml" <<EOF
environments:
  demo:
    # The demo's sshd on this machine, started by scripts/demo.sh.
    hosts: [$user@127.0.0.1:$ssh_port]
    path: $work/srv/$app
    known_hosts: deploy/known_hosts
EOF
mkdir -p "$repo/deploy"
echo "[127.0.0.1]:$ssh_port $(cut -d' ' -f1,2 "$ssh_dir/host_key.pub")" >"$repo/deploy/known_hosts"
git -C "$repo" init -q
git -C "$repo" add .
git -C "$repo" -c user.name=demo -c user.email=demo@example.com commit -q -m "example app v1"
cd "$repo"
sed -n '/^environments:/,$p' ship.yaml

export SHIP_REGISTRY="$reg_addr"
SHIP_SSH_KEY="$(cat "$ssh_dir/user_key")"
export SHIP_SSH_KEY
export SHIP_REGISTRY_USER='' SHIP_REGISTRY_PASSWORD=''
WEB_PORT=$(free_port)
export WEB_PORT # the app's published port on the server (examples/docker-compose.yml)
echo "SHIP_REGISTRY=$SHIP_REGISTRY SHIP_SSH_KEY=(the user key) WEB_PORT=$WEB_PORT"

say "v1: shipctl ship builds, tests, pushes and deploys the checked-out commit"
ship ship demo --yes
show_app v1

say "v2: VERSION v2 in docker-compose.yml, committed, shipped"
# shellcheck disable=SC2016 # the compose file's own ${...}, not the shell's
sed -i 's/VERSION: ${VERSION:-v1}/VERSION: ${VERSION:-v2}/' docker-compose.yml
grep -q 'VERSION:-v2' docker-compose.yml || die "could not set VERSION to v2 in docker-compose.yml"
git -c user.name=demo -c user.email=demo@example.com commit -q -am "example app v2"
git log --oneline
ship ship demo --yes
show_app v2

say "What runs on the server"
ship status demo

say "The releases on the server and its audit log"
ship history demo

say "Back to v1: shipctl rollback goes to the release current before this one"
ship rollback demo --yes
show_app v1

say "On the server, under $work/srv/$app:"
(cd "$work/srv/$app" && ls -l current && ls releases)

say "shipd, the agent: started on the server (by systemd on a real one; a plain process here)"
shipd_dir="$work/shipd"
mkdir -p "$shipd_dir"
printf 'socket: %s\nstate: %s\nhealth:\n  interval: 500ms\n  timeout: 2s\n  deadline: 20s\n' \
	"$shipd_dir/shipd.sock" "$shipd_dir/state.json" >"$shipd_dir/shipd.yaml"
"$shipd" run --config "$shipd_dir/shipd.yaml" >"$shipd_dir/shipd.log" 2>&1 &
shipd_pid=$!
for _ in $(seq 100); do
	[ -S "$shipd_dir/shipd.sock" ] && break
	kill -0 "$shipd_pid" 2>/dev/null || die "shipd did not start: $(cat "$shipd_dir/shipd.log")"
	sleep 0.1
done
[ -S "$shipd_dir/shipd.sock" ] || die "shipd did not open its socket: $(cat "$shipd_dir/shipd.log")"
# shipctl reaches shipd's socket through its SSH connection; not the default path here.
export SHIP_AGENT_SOCKET="$shipd_dir/shipd.sock"
echo "shipd: pid $shipd_pid, API on $SHIP_AGENT_SOCKET (reached through ssh)"

say "v3 through shipd: agent: true; web publishes no port, shipd serves it on its listen address"
LISTEN_PORT=$(free_port)
# shellcheck disable=SC2016 # the compose file's own ${...}
sed -i -e '/# So the demo can curl it on the host./d' -e '/WEB_PORT:-18080/d' -e '/^    ports:$/d' \
	-e "s/listen: \":8080\"/listen: \"127.0.0.1:$LISTEN_PORT\"/" \
	-e 's/VERSION: ${VERSION:-v2}/VERSION: ${VERSION:-v3}/' docker-compose.yml
sed -i 's|^    known_hosts: deploy/known_hosts$|&\n    agent: true|' ship.yaml
grep -q 'agent: true' ship.yaml || die "could not set agent: true in ship.yaml"
grep -q "listen: \"127.0.0.1:$LISTEN_PORT\"" docker-compose.yml || die "could not set web's listen address"
git -c user.name=demo -c user.email=demo@example.com commit -q -am "example app v3, through shipd"
sed -n '/^  web:/,$p' docker-compose.yml
ship ship demo --yes
WEB_PORT=$LISTEN_PORT show_app v3

say "v4, swapped blue-green while a load generator sends 100 requests/s through shipd"
# shellcheck disable=SC2016
sed -i 's/VERSION: ${VERSION:-v3}/VERSION: ${VERSION:-v4}/' docker-compose.yml
git -c user.name=demo -c user.email=demo@example.com commit -q -am "example app v4"
"$loadgen" -url "http://127.0.0.1:$LISTEN_PORT/" -rate 100 -duration 20s -fresh 0.3 -conns 4 -json \
	>"$work/load.json" 2>"$work/load.err" &
load_pid=$!
sleep 1
ship ship demo --yes
wait "$load_pid" || true
load_pid=''
WEB_PORT=$LISTEN_PORT show_app v4
count() { grep -o "\"$1\": *[0-9]*" "$work/load.json" | grep -o '[0-9]*$'; }
requests=$(count requests) non2xx=$(count non_2xx) connerr=$(count conn_errors)
[ -n "$requests" ] || die "the load generator wrote no report: $(cat "$work/load.err")"
echo "load through shipd during the swap: $requests requests, $non2xx non-2xx, $connerr connection errors"
failed=$((non2xx + connerr))
echo "failed requests: $failed"
[ "$failed" -eq 0 ] || die "requests failed during the blue-green swap"

say "The front door: two apps behind one shipd listener, one of them over HTTPS"
HTTP_PORT=$(free_port)
HTTPS_PORT=$(free_port)
# shop's own certificate (ship.yaml's tls: cert and key, uploaded with each release,
# mode 0600); on a real server, tls: true gets one from Let's Encrypt instead.
mkdir -p deploy/tls
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=shop.demo.test" \
	-addext "subjectAltName=DNS:shop.demo.test" -keyout deploy/tls/key.pem -out deploy/tls/cert.pem 2>/dev/null ||
	die "openssl could not make a certificate"
printf 'deploy/tls/\n' >>.gitignore
# The second app, blog: the same example app as a repository of its own, on
# blog.demo.test, plain HTTP on the shared listener.
blog_repo="$work/blog"
mkdir -p "$blog_repo"
git archive HEAD | tar -x -C "$blog_repo"
cp app/app "$blog_repo/app/app"
(
	cd "$blog_repo"
	sed -i -e "s/^app: $app$/app: $blog/" -e "s|path: $work/srv/$app$|path: $work/srv/$blog|" ship.yaml
	# shellcheck disable=SC2016
	sed -i -e "s/listen: \"127.0.0.1:$LISTEN_PORT\".*/host: blog.demo.test\n      listen: \"127.0.0.1:$HTTP_PORT\"/" \
		-e 's/VERSION: ${VERSION:-v4}/VERSION: ${VERSION:-blog-v1}/' docker-compose.yml
	grep -q 'host: blog.demo.test' docker-compose.yml || die "could not set blog's host"
	git init -q && git add . && git -c user.name=demo -c user.email=demo@example.com commit -q -m "blog v1"
	sed -n '/x-ship:/,$p' docker-compose.yml
	ship ship demo --yes
)
# shop v5: host shop.demo.test over HTTPS on the same plain listener (redirect) and
# an HTTPS one.
# shellcheck disable=SC2016
sed -i -e "s/listen: \"127.0.0.1:$LISTEN_PORT\".*/host: shop.demo.test\n      tls: true\n      listen: [\"127.0.0.1:$HTTP_PORT\", \"127.0.0.1:$HTTPS_PORT\"]/" \
	-e 's/VERSION: ${VERSION:-v4}/VERSION: ${VERSION:-v5}/' docker-compose.yml
sed -i 's|^    agent: true$|&\n    tls: {cert: deploy/tls/cert.pem, key: deploy/tls/key.pem}|' ship.yaml
grep -q 'host: shop.demo.test' docker-compose.yml || die "could not set shop's host"
grep -q 'tls: {cert' ship.yaml || die "could not set tls in ship.yaml"
git -c user.name=demo -c user.email=demo@example.com commit -q -am "example app v5, on the front door over HTTPS"
sed -n '/x-ship:/,$p' docker-compose.yml
sed -n '/^environments:/,$p' ship.yaml
ship ship demo --yes

# front runs curl as shown (the command on stderr, its output on stdout).
front() {
	printf '$ curl %s\n' "$*" >&2
	curl -sS --max-time 5 "$@"
}
body=$(front --cacert deploy/tls/cert.pem --resolve "shop.demo.test:$HTTPS_PORT:127.0.0.1" -w ' [%{http_version}]' "https://shop.demo.test:$HTTPS_PORT/")
echo "$body"
case "$body" in *"(v5)"*"[2]") ;; *) die "expected shop v5 over HTTPS with HTTP/2" ;; esac
body=$(front -H "Host: blog.demo.test" "http://127.0.0.1:$HTTP_PORT/")
echo "$body"
case "$body" in *"(blog-v1)"*) ;; *) die "expected blog-v1 on the shared listener" ;; esac
body=$(front -o /dev/null -w '%{http_code} %{redirect_url}' -H "Host: shop.demo.test" "http://127.0.0.1:$HTTP_PORT/")
echo "$body"
[ "$body" = "301 https://shop.demo.test:$HTTPS_PORT/" ] || die "expected plain HTTP to shop to redirect to HTTPS"
body=$(front -o /dev/null -w '%{http_code}' -H "Host: nobody.demo.test" "http://127.0.0.1:$HTTP_PORT/")
echo "$body"
[ "$body" = 404 ] || die "expected 404 for a host no app serves"
ship agent status demo
