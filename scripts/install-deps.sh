#!/bin/sh
# install-deps.sh: install what ship's tests need on a Debian/Ubuntu machine.
#
# Idempotent and quiet when everything is already there. Installs with apt-get:
#   openssh-server   the tests start their own sshd (/usr/sbin/sshd) on 127.0.0.1;
#                    the system service is neither enabled nor started here
#   ca-certificates, git
# Then checks that a Docker engine answers, and says how to fix it when it does not.
#
# Run as root, or as a user that may sudo.
set -eu

say() { printf 'install-deps: %s\n' "$*" >&2; }

if [ "$(id -u)" -eq 0 ]; then
	SUDO=
elif command -v sudo >/dev/null 2>&1; then
	SUDO=sudo
else
	say "not root and no sudo: run this script as root"
	exit 1
fi

missing=
[ -x /usr/sbin/sshd ] || missing="$missing openssh-server"
[ -f /etc/ssl/certs/ca-certificates.crt ] || missing="$missing ca-certificates"
command -v git >/dev/null 2>&1 || missing="$missing git"

if [ -n "$missing" ]; then
	if ! command -v apt-get >/dev/null 2>&1; then
		say "missing:$missing; no apt-get here, install them with your package manager"
		exit 1
	fi
	say "installing:$missing"
	export DEBIAN_FRONTEND=noninteractive
	# policy-rc.d exit 101 keeps the package from starting the system sshd: the tests
	# run their own on a free port. Only placed when there is none already.
	policy=/usr/sbin/policy-rc.d
	placed=
	if [ ! -e "$policy" ]; then
		printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
		$SUDO chmod 0755 "$policy"
		placed=1
	fi
	cleanup() { if [ -n "$placed" ]; then $SUDO rm -f "$policy"; fi; }
	trap cleanup EXIT
	log=$(mktemp)
	# shellcheck disable=SC2086 # word splitting of the package list is wanted
	if ! { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends $missing; } >"$log" 2>&1; then
		cat "$log" >&2
		rm -f "$log"
		say "apt-get failed (output above)"
		exit 1
	fi
	rm -f "$log"
	cleanup
	trap - EXIT
	# The package enables the service; the tests don't want it.
	if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
		$SUDO systemctl disable --now ssh.service >/dev/null 2>&1 || true
	fi
fi

# sshd's privilege separation directory; a fresh container often lacks it.
[ -d /run/sshd ] || $SUDO install -d -m 0755 /run/sshd

if ! command -v docker >/dev/null 2>&1; then
	say "the docker CLI is not installed; the tests talk to the engine's API, but this check uses it."
	say "install Docker Engine (https://docs.docker.com/engine/install/debian/) and start it"
	exit 1
fi
if ! out=$(docker info --format '{{.ServerVersion}}' 2>&1); then
	say "the Docker engine does not answer: $(printf '%s\n' "$out" | sed '/^[[:space:]]*$/d')"
	if [ -n "${DOCKER_HOST:-}" ]; then
		say "DOCKER_HOST=$DOCKER_HOST: check that the engine listens there"
	elif [ ! -S /var/run/docker.sock ]; then
		say "no /var/run/docker.sock: start the engine (systemctl start docker, or dockerd &)"
	else
		say "/var/run/docker.sock exists but refuses you: add yourself to the docker group"
		say "(sudo usermod -aG docker \"\$USER\", then log in again) or run the tests as root"
	fi
	exit 1
fi
