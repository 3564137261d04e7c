# ship: shipctl and shipd.
GO       ?= go
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -s -w -X github.com/shipdeploy/ship/pkg/version.Version=$(VERSION)
PKGS     := ./...

.PHONY: all build example test vet fmt-check unit fuzz bench demo deps clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/shipctl ./cmd/shipctl
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/shipd ./cmd/shipd

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

# Unit and integration tests against the real Docker engine, sshd and registry.
unit:
	$(GO) test -race -count=1 -timeout 20m $(PKGS)

test: deps vet fmt-check unit

# A short run of every fuzzer.
fuzz:
	$(GO) test -run '^$$' -fuzz=FuzzParse -fuzztime=30s ./pkg/config
	$(GO) test -run '^$$' -fuzz=FuzzShip -fuzztime=30s ./pkg/compose
	$(GO) test -run '^$$' -fuzz=FuzzLoad -fuzztime=60s -fuzzminimizetime=5s ./pkg/compose

# shipctl build and push of an unchanged project next to docker build and docker push
# of the same, on this machine's engine and a local registry; prints the ratios.
BENCHTIME  ?= 10x
BENCHCOUNT ?= 1
bench:
	$(GO) test -run '^$$' -bench '^BenchmarkUnchanged$$' -benchtime $(BENCHTIME) -count $(BENCHCOUNT) -timeout 30m ./test/bench

# pkg/proxy through test/bench/proxyd next to the same backend direct: throughput,
# p50/p99 at half load, idle RSS, restart gap (plain and with the socket handed over).
.PHONY: bench-proxy
bench-proxy:
	$(GO) test -run '^$$' -bench '^BenchmarkProxy$$' -benchtime 1x -count 1 -timeout 10m ./test/bench

demo: build example
	bash scripts/demo.sh

clean:
	rm -rf bin examples/app/app
