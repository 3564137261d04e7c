#!/usr/bin/env bash
# vuln.sh: govulncheck over the whole module; `make vuln`, part of `make test`.
#
# Everything comes through the Go module proxy, so a machine with only Go can run it:
#   govulncheck      golang.org/x/vuln/cmd/govulncheck at GOVULNCHECK_VERSION
#   its database     https://vuln.go.dev when this machine reaches it; else built from
#                    golang.org/x/vulndb (the database's source, served by the module
#                    proxy like any module: its OSV files, indexed by its cmd/indexdb)
# SHIP_VULNDB names another database (an https:// URL or a file:// folder) instead.
#
# A finding fails the run unless scripts/vuln-accepted.txt lists its ID; README.md
# ("Known vulnerabilities") says why each listed one is there. When neither database can
# be had: outside CI a loud skip, in CI (CI=true) a failure.
set -euo pipefail
cd "$(dirname "$0")/.."

GOVULNCHECK_VERSION=v1.9.0
say() { printf 'vuln: %s\n' "$*" >&2; }

cache="${SHIP_VULN_CACHE:-$(go env GOCACHE)/ship-vuln}"
mkdir -p "$cache/bin"
# Module downloads happen outside this module, so go.mod and go.sum stay as they are.
outside() { (cd "$cache" && GOFLAGS= GOTOOLCHAIN=local "$@"); }

unavailable() {
	if [ "${CI:-}" = "true" ]; then
		say "FAIL: $*"
		exit 1
	fi
	say "=================================================================="
	say "SKIPPED: govulncheck did not run: $*"
	say "In CI (CI=true) this is a failure."
	say "=================================================================="
	exit 0
}

if ! outside env GOBIN="$cache/bin" go install "golang.org/x/vuln/cmd/govulncheck@$GOVULNCHECK_VERSION" >"$cache/install.log" 2>&1; then
	cat "$cache/install.log" >&2
	unavailable "could not install govulncheck through the Go module proxy ($(go env GOPROXY))"
fi

reachable() {
	if command -v curl >/dev/null 2>&1; then
		curl -fsS -m 10 -o /dev/null "$1/index/db.json" 2>/dev/null
	else
		timeout 10 bash -c 'exec 3<>/dev/tcp/vuln.go.dev/443' 2>/dev/null
	fi
}

# proxydb builds (once per version) the database from golang.org/x/vulndb@latest and
# prints its file:// URL.
proxydb() {
	local version dir out
	version=$(outside go list -m -f '{{.Version}}' golang.org/x/vulndb@latest) || return 1
	out="$cache/db/$version"
	if [ ! -f "$out/index/db.json" ]; then
		dir=$(outside go mod download -json "golang.org/x/vulndb@$version" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p') || return 1
		[ -d "$dir/data/osv" ] || return 1
		say "building the vulnerability database from golang.org/x/vulndb@$version"
		outside env GOBIN="$cache/bin" go install "golang.org/x/vulndb/cmd/indexdb@$version" >"$cache/install.log" 2>&1 ||
			{ cat "$cache/install.log" >&2; return 1; }
		rm -rf "$out.tmp"
		"$cache/bin/indexdb" -vulns "$dir/data/osv" -out "$out.tmp" || return 1
		mv "$out.tmp" "$out"
	fi
	printf 'file://%s\n' "$out"
}

if [ -n "${SHIP_VULNDB:-}" ]; then
	db=$SHIP_VULNDB
elif reachable https://vuln.go.dev; then
	db=https://vuln.go.dev
elif db=$(proxydb); then
	say "vuln.go.dev is not reachable; using golang.org/x/vulndb from the module proxy"
else
	unavailable "neither vuln.go.dev nor golang.org/x/vulndb (module proxy) could be reached"
fi

say "govulncheck $GOVULNCHECK_VERSION, $(go env GOVERSION), database $db"
report="$cache/report.txt"
set +e
"$cache/bin/govulncheck" -db "$db" ./... >"$report" 2>&1
rc=$?
set -e
cat "$report"
case $rc in
0) exit 0 ;;
3) ;; # findings: checked against the accepted list below
*) say "FAIL: govulncheck exited $rc"; exit 1 ;;
esac

accepted=$(sed -n 's/^\(GO-[0-9]*-[0-9]*\).*/\1/p' scripts/vuln-accepted.txt)
unaccepted=
for id in $(sed -n 's/^Vulnerability #[0-9]*: \(GO-[0-9]*-[0-9]*\)$/\1/p' "$report"); do
	if printf '%s\n' "$accepted" | grep -qx "$id"; then
		say "accepted (README.md, Known vulnerabilities): $id"
	else
		unaccepted="$unaccepted $id"
	fi
done
if [ -n "$unaccepted" ]; then
	say "FAIL: vulnerabilities in code ship calls:$unaccepted"
	say "upgrade the module (go get module@fixed-version), or list the ID in scripts/vuln-accepted.txt and say why in README.md"
	exit 1
fi
say "ok: every finding is an accepted one"
