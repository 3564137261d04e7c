#!/usr/bin/env bash
# The demo: takes examples/ through shipctl on this machine. Run it with `make demo`.
# For now it runs the example's test suite (a passing run, then a failing one) and shows
# that nothing is left behind; it grows with the deploy work.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
shipctl="$root/bin/shipctl"
[ -x "$shipctl" ] || { echo "demo: bin/shipctl is missing; run 'make demo'" >&2; exit 1; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
say() { printf '\n\033[1m### %s\033[0m\n' "$*"; }

say "The example app as an application repository of its own: $work"
cp -r "$root/examples/." "$work/"
rm -f "$work/app/app"
(cd "$root" && CGO_ENABLED=0 go build -trimpath -o "$work/app/app" ./examples/app)
printf 'app/app\n' > "$work/.gitignore"
git -C "$work" init -q
git -C "$work" add .
git -C "$work" -c user.name=demo -c user.email=demo@example.com commit -q -m "example app v1"
cd "$work"

say "shipctl test: builds the test stack, runs it, the test service decides"
"$shipctl" test

say "shipctl test with a suite that fails (EXPECT_VERSION=nope): exit code 3"
set +e
EXPECT_VERSION=nope CHECK_TIMEOUT=3s "$shipctl" test
code=$?
set -e
echo "exit code: $code"
[ "$code" -eq 3 ] || { echo "demo: expected exit code 3" >&2; exit 1; }

say "What the two runs left on the Docker engine (nothing):"
left=$(docker ps -a --filter label=com.docker.compose.project --format '{{.Label "com.docker.compose.project"}}' | grep -c '^example-test-' || true)
echo "containers of example-test-* projects: $left"
[ "$left" -eq 0 ] || exit 1
