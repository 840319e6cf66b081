#!/usr/bin/env bash
# Store benchmarks with the figures the foundation issue asks for:
#   append throughput (1 appender: a commit per record; 8 and 64 concurrent
#   appenders: group commit) against raw bbolt transactions of the same
#   sizes, in the same run, with the ratio;
#   erase of one subject among ERASE_RECORDS records, compaction included;
#   reading and acknowledging 100,000 pending records.
# BENCH_DIR=/dev/shm takes the disk out to show the CPU cost alone.
# Sizes: BENCH_N (appends per case, default 100000, enough for index merges
# to run inside the measurement), BENCH_COUNT (runs, the median is shown;
# default 3), ERASE_RECORDS (1000000).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
n=${BENCH_N:-100000}
count=${BENCH_COUNT:-3}
erase=${ERASE_RECORDS:-1000000}
out=$(mktemp)
trap 'rm -f "$out"' EXIT
export LEADPORT_BENCH_DIR=${BENCH_DIR:-}

echo "== append vs raw bbolt ($n records per case, median of $count runs, dir ${BENCH_DIR:-TMPDIR})"
# Runs interleave the store and raw bbolt, so a slow spell of the disk
# (fsync times here vary by half from minute to minute) hits both.
for _ in $(seq "$count"); do
  go test ./store -run '^$' -bench '^(BenchmarkAppend|BenchmarkRawBolt|BenchmarkRawBoltGroup)$' -benchtime "${n}x" | grep -E '^Benchmark'
done | tee "$out"
awk '
  function metric(name,   i) { for (i = 1; i <= NF; i++) if ($i == name) return $(i-1); return "" }
  function median(list,   a, n, i, j, t) {
    n = split(list, a, " ")
    for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j-1] + 0 > a[j] + 0; j--) { t = a[j]; a[j] = a[j-1]; a[j-1] = t }
    return n % 2 ? a[(n+1)/2] : (a[n/2] + a[n/2+1]) / 2
  }
  { split($1, a, "[=-]") }
  /^BenchmarkAppend\/appenders=/       { ours[a[2]] = ours[a[2]] " " metric("records/s"); per[a[2]] = per[a[2]] " " metric("records/commit"); cpu[a[2]] = cpu[a[2]] " " metric("cpu-us/record") }
  /^BenchmarkRawBolt\/batch=/          { raw[a[2]] = raw[a[2]] " " metric("records/s") }
  /^BenchmarkRawBoltGroup\/appenders=/ { grp[a[2]] = grp[a[2]] " " metric("records/s") }
  END {
    printf "\n%-10s %12s %8s %12s %7s %14s %7s\n", "appenders", "agent rec/s", "rec/tx", "raw rec/s", "ratio", "Batch() rec/s", "ratio"
    for (k = 1; k <= 64; k++) if (k in ours && k in raw) {
      o = median(ours[k]); r = median(raw[k])
      g = (k in grp) ? median(grp[k]) : 0
      printf "%-10s %12.0f %8.1f %12.0f %7.2f %14s %7s\n", k, o, median(per[k]), r, o / r, g ? sprintf("%.0f", g) : "-", g ? sprintf("%.2f", o / g) : "-"
    }
    print "raw: one goroutine, transactions of that many puts (the issue'"'"'s ratio); Batch(): bbolt'"'"'s own group commit, that many goroutines"
    printf "CPU per stored record (the process'"'"'s user+system time / records):"
    for (k = 1; k <= 64; k++) if (k in cpu) printf " %s appenders %.1f us;", k, median(cpu[k])
    print ""
  }' "$out"

echo
echo "== read and acknowledge 100,000 pending records"
go test ./store -run '^$' -bench '^BenchmarkPendingAck$' -benchtime 1x | grep -E '^Benchmark'

echo
echo "== erase one subject among $erase records, compaction included"
go test ./store -run '^$' -bench '^BenchmarkEraseSubject$' -benchtime 1x -timeout 60m -args -erase.records="$erase" | grep -E '^Benchmark'
