#!/usr/bin/env bash
# The whole test suite, as `make test` and CI run it. LONG=1 lengthens the
# crash loops (make test-long).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"

scripts/lint.sh

# Every package, every test: crash tests SIGKILL real processes, erase tests
# scan the data directory's bytes.
# LEADPORT_E2E=1: the SIPp end-to-end test fails rather than skips when
# sipp is missing (scripts/setup.sh installs it).
export LEADPORT_E2E=1
go test -count=1 -timeout 15m ./...
if [ "${LONG:-}" = 1 ]; then
  go test -count=1 -timeout 60m ./store -run SIGKILL -v -args -crash.appends=500 -crash.erases=200
fi
# Data races, on a short run (crash loops shortened by -short).
go test -count=1 -race -short -timeout 15m ./...
