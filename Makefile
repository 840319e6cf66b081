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

.PHONY: help build run test test-long lint bench bench-proxy bench-sync eval cross fuzz clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

build: ## build bin/leadport-agent for this machine
	CGO_ENABLED=0 go build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./agent/cmd/leadport-agent

run: build ## run the agent in the foreground (CONFIG=file, else built-in defaults)
	$(BIN) run $(if $(CONFIG),--config $(CONFIG))

test: ## the whole test suite: lint, 32-bit build, tests, race tests
	scripts/test.sh

test-long: ## the suite with long crash loops (500 SIGKILLs)
	LONG=1 scripts/test.sh

lint: ## gofmt and go vet (also for 32-bit targets)
	scripts/lint.sh

bench: ## benchmarks: the store (ratios against raw bbolt) and a rules decision
	scripts/bench-store.sh
	go test ./detect/rules -run '^$$' -bench . -benchmem -benchtime 2s

bench-proxy: ## SIP proxy call rate, latency, RSS against SIPp direct and kamailio
	scripts/bench-proxy.sh

bench-sync: ## MQTT drain to mosquitto against raw paho; erase with 1,000,000 records stored
	scripts/bench-sync.sh

eval: ## detection quality of the rules over labelled traces (DAYS, SESSIONS, SCENARIOS, SEED)
	go run ./detect/replay/cmd/leadport-eval -days $(DAYS) -sessions $(SESSIONS) -scenarios $(SCENARIOS) -seed $(SEED)

cross: ## static stripped binaries for every target into dist/
	VERSION=$(VERSION) COMMIT=$(COMMIT) scripts/cross.sh

fuzz: ## run every fuzz target for FUZZTIME each
	scripts/fuzz.sh $(FUZZTIME)

clean: ## remove build outputs
	rm -rf bin dist
