# ship: shipctl and shipd.
GO       ?= go
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -s -w -X github.com/shipdeploy/ship/pkg/version.Version=$(VERSION)
PKGS     := ./...

.PHONY: all build build-cross example registry loadgen test vet fmt-check vuln unit fuzz bench demo deps clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/shipctl ./cmd/shipctl
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/shipd ./cmd/shipd

# shipd for the hosts' architectures, next to shipctl: `shipctl agent install` picks the
# one of its own version for each host (bin/shipd-linux-<arch>).
build-cross: build
	for arch in amd64 arm64; do \
		CGO_ENABLED=0 GOOS=linux GOARCH=$$arch $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/shipd-linux-$$arch ./cmd/shipd || exit 1; \
	done

# shipctl, with the shipd binaries `shipctl agent install` looks for beside it, in
# $(BINDIR): ~/.local/bin by default; `sudo make install BINDIR=/usr/local/bin` for all.
PREFIX ?= $(HOME)/.local
BINDIR ?= $(PREFIX)/bin
.PHONY: install
install: build-cross
	install -d '$(BINDIR)'
	install -m 0755 bin/shipctl bin/shipd bin/shipd-linux-amd64 bin/shipd-linux-arm64 '$(BINDIR)/'
	@case ":$$PATH:" in *":$(BINDIR):"*) ;; *) echo "$(BINDIR) is not on your PATH: add it, e.g. export PATH=\"$(BINDIR):\$$PATH\" in ~/.profile";; esac

# The example app is a static binary copied into a FROM scratch image.
example:
	CGO_ENABLED=0 $(GO) build -trimpath -o examples/app/app ./examples/app

deps:
	bash scripts/install-deps.sh

vet:
	$(GO) vet $(PKGS)

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

# govulncheck ./... through the Go module proxy (its database from vuln.go.dev, else
# built from golang.org/x/vulndb); a finding fails unless scripts/vuln-accepted.txt
# lists it (README.md says why). No database at all: a loud skip, a failure in CI.
vuln:
	bash scripts/vuln.sh

# Unit and integration tests against the real Docker engine, sshd and registry.
# They run through test/cmd/testsum, which runs `go test -json` itself and prints what
# plain go test would (failing tests' output, panics and timeouts included, and each
# package's ok/FAIL line), then one line per skipped test with the part it lacks and
# how to get it, then "N passed, N failed, N skipped". Outside CI a missing engine,
# sshd or registry is a skip, and a bare `ok` would hide it. testsum starts go test
# rather than reading a pipe so that go test's exit code is its own without pipefail
# (make's sh has none); it is built first so that `go run` adds no line of its own.
unit:
	$(GO) build -o bin/testsum ./test/cmd/testsum
	bin/testsum -race -count=1 -timeout 20m $(PKGS)

test: deps vet fmt-check vuln unit

# shipctl and shipd on real servers: containers with systemd as PID 1, sshd and a
# Docker engine of their own (scripts/testhost; the image is built with mmdebstrap the
# first time, 3-15 minutes, and cached). agent install as root, deploys and every kind
# of shipd restart under load, a reboot, and a test for each defect issue 14 found.
# Needs root (mmdebstrap) and a Docker engine; not part of `make test`, run after it
# by .ci/run.
# SHIP_TEST_HOSTS_KEEP=1 leaves the hosts running for a look.
.PHONY: test-hosts
test-hosts:
	SHIP_TEST_HOSTS=1 $(GO) test -count=1 -v -timeout 60m ./test/hosts

# shipctl deploy through shipd to 1 host and to 3, on the test hosts of test-hosts, each
# with its own engine: median wall times, their ratio, this machine's load. Not part of
# `make bench` yet. BENCH_RUNS=n deploys per row (default 5).
.PHONY: bench-hosts
bench-hosts:
	SHIP_TEST_HOSTS=1 $(GO) test -run '^$$' -bench '^BenchmarkFanOut$$' -benchtime 1x -count 1 -v -timeout 30m ./test/hosts

# A short run of every fuzzer.
fuzz:
	$(GO) test -run '^$$' -fuzz=FuzzParse -fuzztime=30s ./pkg/config
	$(GO) test -run '^$$' -fuzz=FuzzShip -fuzztime=30s ./pkg/compose
	$(GO) test -run '^$$' -fuzz=FuzzLoad -fuzztime=60s -fuzzminimizetime=5s ./pkg/compose

# A benchmark waits for any other one on this machine to end (a lock file), so that two
# checkouts never time each other or share the benchmarks' fixed engine names.
BENCHLOCK ?= flock /tmp/ship-bench.lock

# The benchmarks, one after the other (never in parallel: each one times this machine):
# build, proxy, deploy, WAN, zero downtime and the soak run. Each prints its table; the
# run fails if one of them does.
bench:
	@status=0; for b in bench-build bench-proxy bench-deploy bench-wan bench-zerodowntime bench-soak; do \
		$(MAKE) --no-print-directory $$b || status=1; \
	done; exit $$status

# shipctl build and push of an unchanged project next to docker build and docker push
# of the same, on this machine's engine and a local registry; prints the ratios.
BENCHTIME  ?= 10x
BENCHCOUNT ?= 1
.PHONY: bench-build
bench-build:
	$(BENCHLOCK) $(GO) test -run '^$$' -bench '^BenchmarkUnchanged$$' -benchtime $(BENCHTIME) -count $(BENCHCOUNT) -timeout 30m ./test/bench

# Only the push part of bench-build: shipctl push and docker push of the same unchanged
# image in rounds that alternate which goes first; prints each one's min and median,
# their ratios and the load. BENCHTIME=20x for more rounds.
.PHONY: bench-push
bench-push:
	$(BENCHLOCK) $(GO) test -run '^$$' -bench '^BenchmarkPush$$' -benchtime $(BENCHTIME) -count $(BENCHCOUNT) -timeout 30m ./test/bench

# pkg/proxy through test/bench/proxyd next to the same backend direct: throughput,
# p50/p99 at half load, idle RSS, restart gap (plain and with the socket handed over);
# then the front door's Router over HTTP and HTTPS (keep-alive and new connections)
# with 1 and 100 host names, interleaved with the backend direct.
.PHONY: bench-proxy
bench-proxy:
	$(BENCHLOCK) $(GO) test -run '^$$' -bench '^BenchmarkProxy$$' -benchtime 1x -count 1 -timeout 15m ./test/bench

# shipctl deploy to 1 and to 4 hosts (sshds on 127.0.0.2-5, a registry process, this
# machine's engine), its no-op redeploy, and the plain script it replaces (scp, then
# docker-compose pull && up -d over ssh): wall time, shipctl's own overhead, SSH
# connections and round trips per host. Needs root (the hosts' mount namespaces);
# installs sshd and Debian's docker-compose (the script's) when missing.
# BENCH_RUNS=n deploys per row (default 5). BASE=rev also deploys with the shipctl of
# that git revision in the same rounds and prints this tree's time over it.
.PHONY: bench-deploy
bench-deploy: deps
	@command -v docker-compose >/dev/null 2>&1 || { \
		echo "bench-deploy: installing Debian's docker-compose, for the plain-script baseline"; \
		sudo=; [ "$$(id -u)" -eq 0 ] || sudo=sudo; \
		$$sudo apt-get update -qq && $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker-compose >/dev/null; }
	@base=; if [ -n "$(BASE)" ]; then \
		tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
		git archive "$(BASE)" | tar -x -C "$$tmp" && \
		(cd "$$tmp" && CGO_ENABLED=0 $(GO) build -trimpath -ldflags '-s -w' -o "$$tmp/shipctl-base" ./cmd/shipctl) && \
		base="$$tmp/shipctl-base"; \
	fi; \
	BENCH_BASE_SHIPCTL="$$base" $(BENCHLOCK) $(GO) test -run '^$$' -bench '^BenchmarkDeploy$$' -benchtime 1x -count 1 -timeout 30m ./test/bench

# shipctl deploy to one host behind test/cmd/latency, a relay that delays each way (0,
# 25 and 75 ms), changed and unchanged releases, next to the plain script through the
# same relays, in one run: wall time, round trips (the relay's count, and as implied by
# the wall times), SFTP and Docker API requests per deploy. Needs root, as bench-deploy.
# BENCH_RUNS=n deploys per row (default 3); BENCH_WAN_DELAYS=0,25ms,75ms.
.PHONY: bench-wan
bench-wan: deps
	@command -v docker-compose >/dev/null 2>&1 || { \
		echo "bench-wan: installing Debian's docker-compose, for the plain-script baseline"; \
		sudo=; [ "$$(id -u)" -eq 0 ] || sudo=sudo; \
		$$sudo apt-get update -qq && $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker-compose >/dev/null; }
	$(BENCHLOCK) $(GO) test -run '^$$' -bench '^BenchmarkWAN$$' -benchtime 1x -count 1 -timeout 30m ./test/bench

# The highest fixed rate at which deploys through shipd keep zero failed requests, on
# this machine, next to the agentless path (a recreate behind a published port); and
# shipd's idle RSS; then the agentless gap (the longest time without an answer during
# a deploy, BENCH_GAP_RATE requests a second). BENCH_DEPLOYS=n deploys per rate, BENCH_MAX_RATE caps the search.
.PHONY: bench-zerodowntime
bench-zerodowntime:
	$(BENCHLOCK) $(GO) test -run '^$$' -bench '^Benchmark(ZeroDowntime|AgentlessGap|ShipdDeployTime)$$' -benchtime 1x -count 1 -timeout 20m ./test/bench

# The soak run: for SOAK (default 10m; SOAK=2m) deploys, rollbacks, failing deploys,
# Ctrl-C at random moments (agentless and through shipd), shipd SIGKILLs and sshd
# restarts in a random order under a constant load through shipd; then the invariants
# (current healthy, no stray containers, lock free, one audit.log line per run, no
# failed request but while shipd was down) and the counts. SOAK_SEED=n repeats an order.
SOAK ?= 10m
.PHONY: bench-soak
bench-soak:
	SOAK=$(SOAK) $(BENCHLOCK) $(GO) test -run '^$$' -bench '^BenchmarkSoak$$' -benchtime 1x -count 1 -v -timeout 90m ./test/bench

# The demo's registry process (test/cmd/registry); the deploy benchmark builds its own.
registry:
	CGO_ENABLED=0 $(GO) build -trimpath -o bin/registry ./test/cmd/registry

# The load generator (test/loadgen), for the demo's live swap through shipd.
loadgen:
	CGO_ENABLED=0 $(GO) build -trimpath -o bin/loadgen ./test/loadgen/cmd/loadgen

# examples/ through shipctl against a registry and an sshd on 127.0.0.1: ship v1, ship
# v2, status, history, rollback; then through shipd, v3 and v4 swapped under load;
# everything it starts is removed when it ends.
demo: build example registry loadgen
	bash scripts/demo.sh

clean:
	rm -rf bin examples/app/app
