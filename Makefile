# leadport-agent. `make help` lists the targets.
SHELL := /bin/bash
export PATH := $(PATH):/usr/local/go/bin:$(shell go env GOPATH 2>/dev/null)/bin

PKG      := github.com/leadport/leadport-agent
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT   ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
LDFLAGS  := -s -w -X $(PKG)/agent.version=$(VERSION) -X $(PKG)/agent.commit=$(COMMIT)
BIN      := bin/leadport-agent
CONFIG   ?=
FUZZTIME ?= 30s
DAYS      ?= 10000
SESSIONS  ?= 1000
SCENARIOS ?= 500
SEED      ?= 1
DEMOFLAGS ?=

.PHONY: help build run test test-long lint bench bench-proxy bench-sync eval screenshot demo footprint cross fuzz clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

build: ## build bin/leadport-agent for this machine
	CGO_ENABLED=0 go build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./agent/cmd/leadport-agent

run: build ## run the agent in the foreground (CONFIG=file, else built-in defaults)
	$(BIN) run $(if $(CONFIG),--config $(CONFIG))

test: ## the whole test suite; installs what it needs first (scripts/setup.sh). TEST_PKGS, TEST_RUN: a subset
	scripts/test.sh

test-long: ## the suite with long crash loops (500 SIGKILLs) and the newcomer check (scripts/test-newcomer.sh)
	LONG=1 scripts/test.sh

lint: ## gofmt and go vet (also for 32-bit targets)
	scripts/lint.sh

bench: ## benchmarks: the store (ratios against raw bbolt), a rules decision, analyze over 10,000 agent-days
	scripts/bench-store.sh
	go test ./detect/rules -run '^$$' -bench . -benchmem -benchtime 2s
	go test ./agent/cmd/leadport-agent -run '^$$' -bench Analyze -benchtime 1x -analyze-days 100

bench-proxy: ## SIP proxy call rate, latency, memory, overload, idle cost against SIPp direct and kamailio
	scripts/bench-proxy.sh

bench-sync: ## MQTT drain to mosquitto (records/s, CPU per record); erase with 1,000,000 records stored
	scripts/bench-sync.sh

.PHONY: bench-fleet
bench-fleet: ## DEVICES (default 1,000) simulated devices against a three-node NATS cluster: connect storm, records/s, CPU, RSS, a node killed
	scripts/bench-fleet.sh

eval: ## detection quality of the rules over labelled traces (DAYS, SESSIONS, SCENARIOS, SEED)
	go run ./detect/replay/cmd/leadport-eval -days $(DAYS) -sessions $(SESSIONS) -scenarios $(SCENARIOS) -seed $(SEED)

demo: build ## half a minute of the agent between a simulated PBX and edge, with an MQTT broker (Ctrl-C stops; DEMOFLAGS=-exit)
	go run ./scripts/demo -agent $(BIN) $(DEMOFLAGS)

footprint: ## stripped arm64 binary size, start to SIP listening, RSS when idle
	scripts/footprint.sh

screenshot: ## a PNG of the status page of a running agent, as a phone shows it (dist/status-page.png)
	mkdir -p dist
	LEADPORT_E2E=1 LEADPORT_SCREENSHOT=$(CURDIR)/dist/status-page.png go test -count=1 -run 'TestStatusPage$$' ./agent/cmd/leadport-agent

cross: ## static stripped binaries for every target into dist/
	VERSION=$(VERSION) COMMIT=$(COMMIT) scripts/cross.sh

.PHONY: packages test-packages
packages: ## deb, rpm, apk and ipk for amd64, arm64, armv7 into dist/ (nfpm)
	VERSION=$(VERSION) COMMIT=$(COMMIT) scripts/build-packages.sh

test-packages: ## install the amd64 .deb with dpkg, check it, remove and purge it (root)
	scripts/test-packages.sh

fuzz: ## run every fuzz target for FUZZTIME each
	scripts/fuzz.sh $(FUZZTIME)

clean: ## remove build outputs
	rm -rf bin dist
