#!/usr/bin/env bash
# The whole test suite, as `make test` and CI run it: first scripts/setup.sh
# (installs what the tests need; quick when all is there), then lint, every
# test, and the race detector on a short run.
#
#   LONG=1           lengthens the crash loops (make test-long)
#   TEST_PKGS=...    packages to test instead of ./... (a subset, for quick
#                    checks such as scripts/test-newcomer.sh)
#   TEST_RUN=regexp  only the tests that match (go test -run)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"

scripts/setup.sh
scripts/lint.sh

pkgs=(${TEST_PKGS:-./...})
run=()
[ -z "${TEST_RUN:-}" ] || run=(-run "$TEST_RUN")

# Every package, every test: crash tests SIGKILL real processes, erase tests
# scan the data directory's bytes.
# LEADPORT_E2E=1: tests that need a tool (sipp, mosquitto, chromium...) fail
# rather than skip when it is missing; setup.sh installed them.
export LEADPORT_E2E=1
go test -count=1 -timeout 15m "${run[@]}" "${pkgs[@]}"
if [ "${LONG:-}" = 1 ]; then
  go test -count=1 -timeout 60m ./store -run SIGKILL -v -args -crash.appends=500 -crash.erases=200
  scripts/test-newcomer.sh
fi
# Data races, on a short run (crash loops shortened by -short).
go test -count=1 -race -short -timeout 15m "${run[@]}" "${pkgs[@]}"
