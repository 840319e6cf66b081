#!/usr/bin/env bash
# MQTT sync figures (issues 5 and 16): a 100,000-record backlog drained to
# Debian's mosquitto on loopback (records/s, and the agent's CPU per
# record), and a signed erase to its done receipt with 1,000,000 records
# stored. The ratio against raw paho is retired (issue 16): it compared a
# durable, encrypted store against bytes already in memory.
#   LEADPORT_BENCH_RECORDS   backlog for the drain (default 100000)
#   LEADPORT_BENCH_STORED    records stored for the erase (default 1000000)
#   RUNS                     drain runs (default 3)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
export LEADPORT_E2E=1
runs=${RUNS:-3}
go test ./sync -run '^$' -bench 'DrainMosquitto' -benchtime 1x -count "$runs" 2>&1 | grep -E '^drain of|^Benchmark|FAIL|^ok' || true
go test ./sync -run '^$' -bench 'EraseLarge' -benchtime 1x -timeout 30m 2>&1 | grep -E '^erase of|^Benchmark|FAIL|^ok' || true
