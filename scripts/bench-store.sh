#!/usr/bin/env bash
# Store benchmarks with the figures the foundation issue asks for:
#   append throughput (1 appender: a commit per record; 8 and 64 concurrent
#   appenders: group commit) against raw bbolt transactions of the same
#   sizes, in the same run, with the ratio;
#   erase of one subject among ERASE_RECORDS records, compaction included;
#   reading and acknowledging 100,000 pending records.
# BENCH_DIR=/dev/shm takes the disk out to show the CPU cost alone.
# Sizes: BENCH_N (appends per case, default 100000, enough for index merges
# to run inside the measurement), ERASE_RECORDS (1000000).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
n=${BENCH_N:-100000}
erase=${ERASE_RECORDS:-1000000}
out=$(mktemp)
trap 'rm -f "$out"' EXIT
export LEADPORT_BENCH_DIR=${BENCH_DIR:-}

echo "== append vs raw bbolt ($n records per case, dir ${BENCH_DIR:-TMPDIR})"
go test ./store -run '^$' -bench '^(BenchmarkAppend|BenchmarkRawBolt)$' -benchtime "${n}x" | tee "$out"
awk '
  /BenchmarkAppend\/appenders=/ { split($1, a, "[=-]"); for (i = 1; i <= NF; i++) if ($i == "records/s") ours[a[2]] = $(i-1) }
  /BenchmarkRawBolt\/batch=/    { split($1, a, "[=-]"); for (i = 1; i <= NF; i++) if ($i == "records/s") raw[a[2]] = $(i-1) }
  END {
    printf "\n%-10s %14s %14s %8s\n", "per-commit", "agent rec/s", "raw rec/s", "ratio"
    for (k = 1; k <= 64; k++) if (k in ours && k in raw) printf "%-10s %14.0f %14.0f %8.2f\n", k, ours[k], raw[k], ours[k] / raw[k]
  }' "$out"

echo
echo "== read and acknowledge 100,000 pending records"
go test ./store -run '^$' -bench '^BenchmarkPendingAck$' -benchtime 1x | grep -E '^Benchmark'

echo
echo "== erase one subject among $erase records, compaction included"
go test ./store -run '^$' -bench '^BenchmarkEraseSubject$' -benchtime 1x -timeout 60m -args -erase.records="$erase" | grep -E '^Benchmark'
