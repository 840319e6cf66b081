#!/usr/bin/env bash
# SIP proxy benchmark (issue 3), on loopback only, in one run:
#
#  1. highest sustained call rate with under 0.1% failed calls, over UDP, for
#       direct    SIPp UAC -> SIPp UAS
#       kamailio  SIPp UAC -> kamailio (tm, record_route; scripts/kamailio) -> SIPp UAS,
#                 with its documented fast allocator, tlsf, for shared and
#                 private memory (-x tlsf -X tlsf): the tuned peer the
#                 agent/kamailio ratio is taken against
#       kamailio-qm  the same with Debian's default allocator (qm, with
#                 memory debugging), for comparison
#       agent     SIPp UAC -> leadport-agent (sip.upstream = the UAS) -> SIPp UAS,
#                 every INVITE signed (RFC 8224 Identity, sip.identity: sign)
#     and the agent/kamailio ratio;
#  2. INVITE -> 200 latency p50/p99 at BENCH_LAT_RATE calls/s for each, and
#     what the proxies add to the direct figure, and BYE -> 200 (the agent
#     answers a BYE once the call's usage record is stored); with agent, also for
#     agent-unsigned (sip.identity: off), and the agent's own mean time to
#     sign a call (from its status);
#  3. the agent's RSS (VmRSS, highest sample every 0.5 s) with
#     BENCH_RSS_CALLS concurrent calls: BENCH_RSS_RATE calls/s of
#     BENCH_RSS_CALLS/BENCH_RSS_RATE seconds each, run half as long again
#     past the ramp so the plateau is sampled;
#  CPU time per call of each proxy (utime+stime from /proc/PID/stat, all of
#  kamailio's processes) at its highest passing rate and at BENCH_LAT_RATE.
#
# A step runs BENCH_STEP_SECONDS of calls at one rate (-m = rate * seconds,
# calls of BENCH_CALL_MS) against freshly started processes. It passes when
# every call completed, fewer than 0.1% failed, and SIPp kept the rate (it
# placed the calls in no more than 105% of the planned time; a UAC that falls
# behind means the path is saturated). The rate doubles from
# BENCH_START_RATE until a step fails (or BENCH_MAX_RATE), then a binary
# search narrows it to BENCH_PRECISION percent.
#
# Both SIPp instances and the proxy share this machine's cores, so "direct"
# is the SIPp pair's own ceiling, and the proxies' figures are what is left
# for them beside it.
#
# Latency uses SIPp's -trace_shortmsg (microsecond timestamps of every
# message) rather than -trace_rtt, whose response times are whole
# milliseconds: too coarse for loopback, where INVITE -> 200 takes ~1 ms.
#
# Environment (defaults in brackets; the defaults take 6-7 minutes on 2 cores):
#   BENCH_TARGETS       which paths to search ["direct kamailio kamailio-qm agent"]
#   BENCH_STEP_SECONDS  seconds of calls per step [8]
#   BENCH_STEP_CALLS    calls per step; overrides rate * BENCH_STEP_SECONDS
#   BENCH_CALL_MS       call length in a step, ms [500]
#   BENCH_START_RATE    first rate tried, calls/s [200]
#   BENCH_MAX_RATE      highest rate tried, calls/s [25600]
#   BENCH_PRECISION     stop the search when the bounds are this close, % [10]
#   BENCH_LAT_RATE      rate of the latency runs [100]
#   BENCH_LAT_SECONDS   length of the latency runs [10]
#   BENCH_LAT_CALL_MS   call length in the latency runs [1000]
#   BENCH_RSS_CALLS     concurrent calls for the RSS figure [1000] (0: skip)
#   BENCH_RSS_RATE      rate that builds them up [100]
#   BENCH_BASE_PORT     first port tried; four free ones are picked [15060]
#   BENCH_KAMAILIO_CHILDREN  kamailio UDP worker processes [2]
#   BENCH_KAMAILIO_SHM_MB    kamailio shared memory [512]; its default 64 MB
#                       runs out near 800 calls/s (transactions linger 5 s)
#   BENCH_KEEP=1        keep the work directory (logs, SIPp traces)
#   AGENT_BIN           use this binary instead of building one
#
# Needs sipp (Debian: sip-tester) and kamailio: scripts/setup.sh installs
# them. CI can run it small, e.g.
#   BENCH_STEP_SECONDS=2 BENCH_MAX_RATE=400 BENCH_LAT_SECONDS=3 BENCH_RSS_CALLS=100 scripts/bench-proxy.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
root=$PWD

targets=${BENCH_TARGETS:-direct kamailio kamailio-qm agent}
step_s=${BENCH_STEP_SECONDS:-8}
step_calls=${BENCH_STEP_CALLS:-}
call_ms=${BENCH_CALL_MS:-500}
start_rate=${BENCH_START_RATE:-200}
max_rate=${BENCH_MAX_RATE:-25600}
precision=${BENCH_PRECISION:-10}
lat_rate=${BENCH_LAT_RATE:-100}
lat_s=${BENCH_LAT_SECONDS:-10}
lat_call_ms=${BENCH_LAT_CALL_MS:-1000}
rss_calls=${BENCH_RSS_CALLS:-1000}
rss_rate=${BENCH_RSS_RATE:-100}
base_port=${BENCH_BASE_PORT:-15060}
kam_children=${BENCH_KAMAILIO_CHILDREN:-2}
kam_shm=${BENCH_KAMAILIO_SHM_MB:-512}

for tool in sipp kamailio ss awk; do
  if ! command -v "$tool" >/dev/null && ! [ -x "/usr/sbin/$tool" ]; then
    echo "bench-proxy: $tool is missing; run scripts/setup.sh" >&2
    exit 1
  fi
done
kamailio_bin=$(command -v kamailio || echo /usr/sbin/kamailio)

tmp=$(mktemp -d "${TMPDIR:-/tmp}/bench-proxy.XXXXXX")
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do
    [ -n "$p" ] && stop "$p"
  done
  if [ "${BENCH_KEEP:-}" = 1 ]; then
    echo "bench-proxy: work directory kept: $tmp" >&2
  else
    rm -rf "$tmp"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "bench-proxy: $*" >&2; }

# --- ports -----------------------------------------------------------------
port_busy() { # port: bound on udp or tcp?
  [ -n "$(ss -Hlnu "sport = :$1" 2>/dev/null)$(ss -Hlnt "sport = :$1" 2>/dev/null)" ]
}
ports=()
p=$base_port
while [ ${#ports[@]} -lt 4 ]; do
  if [ "$p" -gt $((base_port + 1000)) ]; then
    log "no four free ports from $base_port"
    exit 1
  fi
  port_busy "$p" || ports+=("$p")
  p=$((p + 1))
done
agent_port=${ports[0]} uas_port=${ports[1]} kam_port=${ports[2]} uac_port=${ports[3]}
log "ports: agent $agent_port, uas $uas_port, kamailio $kam_port, uac $uac_port; work dir $tmp"

# wait_bound PORT PID NAME: poll until something listens on udp PORT, or
# fail when PID died or 20 s passed.
wait_bound() {
  local deadline=$((SECONDS + 20))
  until [ -n "$(ss -Hlnu "sport = :$1" 2>/dev/null)" ]; do
    if ! alive "$2"; then
      log "$3 exited before binding udp port $1"
      return 1
    fi
    if [ $SECONDS -ge $deadline ]; then
      log "$3 did not bind udp port $1 within 20 s"
      return 1
    fi
    sleep 0.05
  done
}

# forget PID: no longer ours to kill on exit.
forget() {
  local keep=() q
  for q in "${pids[@]}"; do
    [ "$q" = "$1" ] || keep+=("$q")
  done
  pids=("${keep[@]}")
}

# alive PID: running and not a zombie
alive() {
  [ -e "/proc/$1" ] && [ "$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)" != Z ]
}

# stop PID: SIGTERM, at most 10 s for it to exit (then SIGKILL), wait for
# it, forget it. Its children too (kamailio's workers, should its main
# process not take them down).
stop() {
  local kids deadline=$((SECONDS + 10)) k
  kids=$(pgrep -P "$1" 2>/dev/null || true)
  kill "$1" 2>/dev/null || true
  while alive "$1" && [ $SECONDS -lt $deadline ]; do
    sleep 0.05
  done
  if alive "$1"; then
    log "pid $1 ignored SIGTERM for 10 s: SIGKILL"
    kill -KILL "$1" 2>/dev/null || true
  fi
  wait "$1" 2>/dev/null || true
  forget "$1"
  for k in $kids; do
    alive "$k" && kill -KILL "$k" 2>/dev/null || true
  done
}

# --- the agent ---------------------------------------------------------------
agent_bin=${AGENT_BIN:-}
if [[ " $targets " == *" agent"* ]] && [ -z "$agent_bin" ]; then
  log "building leadport-agent"
  CGO_ENABLED=0 go build -trimpath -o "$tmp/leadport-agent" ./agent/cmd/leadport-agent
  agent_bin=$tmp/leadport-agent
fi

# --- processes -----------------------------------------------------------------
# Each step starts its own UAS and proxy, so that one overloaded step
# leaves nothing behind for the next.
uas_pid= proxy_pid=
start_uas() { # dir
  (cd "$1" && exec sipp -sf "$root/scripts/sipp/uas.xml" -i 127.0.0.1 -p "$uas_port" -t u1 \
    -nostdin -buff_size 1048576 -trace_err -error_file "$1/uas_errors.log" >"$1/uas.out" 2>&1) &
  uas_pid=$!
  pids+=("$uas_pid")
  wait_bound "$uas_port" "$uas_pid" "SIPp UAS"
}

start_proxy() { # target dir
  proxy_pid=
  case $1 in
  direct) ;;
  kamailio | kamailio-qm)
    local alloc=(-x tlsf -X tlsf)
    [ "$1" = kamailio-qm ] && alloc=()
    "$kamailio_bin" -DD -E -f "$root/scripts/kamailio/kamailio.cfg" -P "$2/kamailio.pid" -Y "$2" \
      -A "SIP_PORT=$kam_port" -n "$kam_children" -m "$kam_shm" "${alloc[@]}" \
      -A "UAS=\"sip:127.0.0.1:$uas_port\"" >"$2/kamailio.log" 2>&1 &
    proxy_pid=$!
    pids+=("$proxy_pid")
    wait_bound "$kam_port" "$proxy_pid" kamailio
    ;;
  agent | agent-unsigned)
    local identity=sign
    [ "$1" = agent-unsigned ] && identity=off
    cat >"$2/agent.yaml" <<EOF
data_dir: $2/data
lines: ["+15551230001"]
default_country: "1"
log: {level: warn}
api: {socket: "$2/api.sock"}
sip:
  listen: ["udp://127.0.0.1:$agent_port", "tcp://127.0.0.1:$agent_port"]
  upstream: "udp://127.0.0.1:$uas_port"
  identity: $identity
# One line placing hundreds of calls a second is machine-paced dialing and
# trunking by definition: those rules are off so every call is relayed (the
# decision hook and the dialog tracking still run).
policy:
  forwarding: {action: "off"}
  pacing: {action: "off"}
  trunking: {action: "off"}
EOF
    "$agent_bin" run --config "$2/agent.yaml" >"$2/agent.log" 2>&1 &
    proxy_pid=$!
    pids+=("$proxy_pid")
    wait_bound "$agent_port" "$proxy_pid" leadport-agent
    ;;
  esac
}

target_port() {
  case $1 in
  direct) echo "$uas_port" ;;
  kamailio | kamailio-qm) echo "$kam_port" ;;
  agent | agent-unsigned) echo "$agent_port" ;;
  esac
}

# cpu_ticks PID: utime+stime of PID and, for kamailio, of its children.
cpu_ticks() {
  local t=0 p
  for p in "$1" $(pgrep -P "$1" 2>/dev/null || true); do
    # fields after the ")" of comm: state is 1, utime 12, stime 13
    t=$((t + $(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | awk '{ n = $12 + $13 } END { print n + 0 }')))
  done
  echo "$t"
}
clk_tck=$(getconf CLK_TCK)
per_call() { # ticks0 ticks1 calls: CPU microseconds per call
  awk -v a="$1" -v b="$2" -v hz="$clk_tck" -v n="$3" 'BEGIN { if (n == 0) print "-"; else printf "%.0f", (b - a) / hz / n * 1e6 }'
}

# start_uac DIR RATE CALLS CALL_MS PORT [sipp options]: starts a UAC
# against PORT, its files in DIR; sets uac_pid.
start_uac() {
  local dir=$1 rate=$2 calls=$3 dur=$4 port=$5
  shift 5
  local limit=$((calls / rate * 3 + dur / 1000 * 2 + 30))
  uac_dir=$dir uac_calls=$calls uac_dur=$dur
  uac_t0=$(date +%s.%N)
  (cd "$dir" && exec sipp -sf "$root/scripts/sipp/uac.xml" -s +15557654321 -i 127.0.0.1 -p "$uac_port" \
    -t u1 -nostdin -buff_size 1048576 -r "$rate" -m "$calls" -d "$dur" -recv_timeout 5000 \
    -timeout "${limit}s" -timeout_error -trace_stat -stf "$dir/uac_stat.csv" -fd 1 \
    -trace_err -error_file "$dir/uac_errors.log" "$@" "127.0.0.1:$port" >"$dir/uac.out" 2>&1) &
  uac_pid=$!
  pids+=("$uac_pid")
}

# finish_uac: waits for the UAC; sets rc (its exit code), ok, failed,
# created, elapsed (s) and eff_rate (calls placed per second).
finish_uac() {
  rc=0
  wait "$uac_pid" || rc=$?
  local t1
  t1=$(date +%s.%N)
  forget "$uac_pid"
  read -r ok failed created < <(awk -F';' '
    NR == 1 { for (i = 1; i <= NF; i++) h[$i] = i; next }
    { last = $0 }
    END {
      if (!("SuccessfulCall(C)" in h) || last == "") { print 0, 0, 0; exit }
      split(last, f, ";")
      print f[h["SuccessfulCall(C)"]] + 0, f[h["FailedCall(C)"]] + 0, f[h["TotalCallCreated"]] + 0
    }' "$uac_dir/uac_stat.csv" 2>/dev/null || echo 0 0 0)
  elapsed=$(awk -v a="$uac_t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
  # the run minus the last call's length
  eff_rate=$(awk -v c="$uac_calls" -v e="$elapsed" -v d="$uac_dur" 'BEGIN { s = e - d / 1000; if (s < 0.001) s = 0.001; printf "%.0f", c / s }')
}

run_uac() { # as start_uac, then finish_uac
  start_uac "$@"
  finish_uac
}

# step TARGET RATE: one search step; returns 0 when it passed.
step_no=0
step() {
  local target=$1 rate=$2 calls dir verdict=pass
  step_no=$((step_no + 1))
  calls=${step_calls:-$((rate * step_s))}
  dir=$tmp/step$step_no-$target-$rate
  mkdir -p "$dir"
  start_uas "$dir"
  start_proxy "$target" "$dir"
  local ticks0=0 ticks1=0
  [ -n "$proxy_pid" ] && ticks0=$(cpu_ticks "$proxy_pid")
  run_uac "$dir" "$rate" "$calls" "$call_ms" "$(target_port "$target")"
  step_cpu=- step_queue=-
  if [ -n "$proxy_pid" ]; then
    ticks1=$(cpu_ticks "$proxy_pid")
    step_cpu=$(per_call "$ticks0" "$ticks1" "$((ok + failed))")
    if [[ "$target" == agent* ]]; then
      # How far the record writer fell behind the calls: the proxy never
      # waits on the store while this stays below the queue's bound.
      step_queue=$("$agent_bin" status --json --socket "$dir/api.sock" 2>/dev/null |
        sed -n 's/.*"queue_high_water": *\([0-9]*\).*/\1/p' | head -n 1)
    fi
    stop "$proxy_pid"
  fi
  stop "$uas_pid"
  local planned
  planned=$(awk -v c="$calls" -v r="$rate" -v d="$call_ms" 'BEGIN { printf "%.2f", c / r + d / 1000 }')
  if [ "$rc" -gt 1 ]; then
    verdict="fail (sipp exit $rc)"
  elif [ $((ok + failed)) -ne "$calls" ]; then
    verdict="fail (only $((ok + failed)) of $calls calls completed)"
  elif [ $((failed * 1000)) -ge "$calls" ] && [ "$failed" -gt 0 ]; then
    verdict="fail ($failed failed)"
  elif awk -v e="$elapsed" -v p="$planned" 'BEGIN { exit !(e > p * 1.05 + 0.3) }'; then
    verdict="fail (rate not kept: ${elapsed}s for ${planned}s planned)"
  fi
  local q=""
  [ "$step_queue" != - ] && q="  writer queue peak ${step_queue:-?}"
  log "$(printf '%-8s %5d calls/s  %6d calls  ok %6d  failed %5d  %6.2fs  -> %s%s' "$target" "$rate" "$calls" "$ok" "$failed" "$elapsed" "$verdict" "$q")"
  [ "$verdict" = pass ]
}

# search TARGET: sets found to the highest passing rate (">=N" when
# BENCH_MAX_RATE passed). Not in a subshell: the pids must stay known.
search() {
  local target=$1 lo=0 hi=0 r=$start_rate mid
  found_cpu=- found_queue=-
  while [ "$r" -le "$max_rate" ]; do
    if step "$target" "$r"; then
      lo=$r found_cpu=$step_cpu found_queue=$step_queue
      r=$((r * 2))
    else
      hi=$r
      break
    fi
  done
  if [ "$hi" = 0 ]; then
    found=">=$lo"
    return
  fi
  # bisect between lo (passed; 0 if nothing did) and hi (failed)
  while [ $(((hi - lo) * 100)) -gt $((precision * (lo > 0 ? lo : 1))) ] && [ $((hi - lo)) -gt 10 ]; do
    mid=$(((lo + hi) / 2))
    if step "$target" "$mid"; then lo=$mid found_cpu=$step_cpu found_queue=$step_queue; else hi=$mid; fi
  done
  found=$lo
}

# --- 1. highest sustained call rate ------------------------------------------------
declare -A best best_cpu best_queue
for t in $targets; do
  log "== $t: searching the highest rate with < 0.1% failed calls"
  search "$t"
  best[$t]=$found best_cpu[$t]=$found_cpu best_queue[$t]=$found_queue
done

# --- 2. latency and CPU per call at a fixed rate --------------------------------
# latency DIR METHOD: METHOD -> 200 per call in microseconds, from the
# short message trace; prints "p50 p99 n". INVITE is call set-up; BYE is
# answered by the agent only once the call's usage record is stored.
latency() {
  awk -F'\t' -v m="$2" '
    $6 ~ m && $4 == "S" && index($7, m) == 1 { if (!($5 in sent)) sent[$5] = $3 }
    $6 ~ m && $4 == "R" && $7 ~ /^SIP\/2.0 200/ { if (($5 in sent) && !($5 in got)) { got[$5] = 1; printf "%.0f\n", ($3 - sent[$5]) * 1e6 } }
  ' "$1"/uac_*_shortmessages.log | sort -n | awk '
    { v[NR] = $1 }
    END {
      if (NR == 0) { print "- - 0"; exit }
      i50 = int(NR * 0.50 + 0.5); if (i50 < 1) i50 = 1
      i99 = int(NR * 0.99 + 0.5); if (i99 < 1) i99 = 1; if (i99 > NR) i99 = NR
      print v[i50], v[i99], NR
    }'
}

declare -A p50 p99 cpu bye50 bye99
lat_calls=$((lat_rate * lat_s))
lat_targets="direct $targets"
[[ " $targets " == *" agent "* ]] && [[ " $targets " != *" agent-unsigned "* ]] && lat_targets+=" agent-unsigned"
sign_us=-
for t in $lat_targets; do
  [ -n "${p50[$t]:-}" ] && continue
  log "== $t: latency at $lat_rate calls/s ($lat_calls calls of ${lat_call_ms} ms)"
  dir=$tmp/latency-$t
  mkdir -p "$dir"
  start_uas "$dir"
  start_proxy "$t" "$dir"
  ticks0=0
  [ -n "$proxy_pid" ] && ticks0=$(cpu_ticks "$proxy_pid")
  run_uac "$dir" "$lat_rate" "$lat_calls" "$lat_call_ms" "$(target_port "$t")" -trace_shortmsg
  if [ -n "$proxy_pid" ]; then
    ticks1=$(cpu_ticks "$proxy_pid")
    cpu[$t]=$(per_call "$ticks0" "$ticks1" "$((ok + failed))")
    if [ "$t" = agent ]; then
      sign_us=$("$agent_bin" status --json --socket "$dir/api.sock" 2>/dev/null |
        sed -n 's/.*"sign_us_mean": *\([0-9.]*\).*/\1/p' | head -n 1)
    fi
    stop "$proxy_pid"
  fi
  stop "$uas_pid"
  read -r a b n < <(latency "$dir" INVITE)
  p50[$t]=$a p99[$t]=$b
  read -r c d _ < <(latency "$dir" BYE)
  bye50[$t]=$c bye99[$t]=$d
  log "$t: $ok ok, $failed failed; INVITE->200 p50 ${a} us, p99 ${b} us over $n calls"
done

# --- 3. agent RSS with many concurrent calls ------------------------------------
rss_peak= rss_idle= rss_conc=
if [[ " $targets " == *" agent "* ]] && [ "$rss_calls" -gt 0 ]; then
  hold_s=$((rss_calls / rss_rate))            # call length that gives rss_calls concurrent
  [ "$hold_s" -lt 1 ] && hold_s=1
  total=$((rss_rate * (hold_s + hold_s / 2 + 2))) # ramp up, then a plateau of half as long
  log "== agent: RSS with $rss_calls concurrent calls ($rss_rate calls/s of ${hold_s}s, $total calls)"
  dir=$tmp/rss
  mkdir -p "$dir"
  start_uas "$dir"
  start_proxy agent "$dir"
  rss_idle=$(awk '/^VmRSS/ { print $2 }' "/proc/$proxy_pid/status")
  rss_peak=$rss_idle rss_conc=0
  start_uac "$dir" "$rss_rate" "$total" "$((hold_s * 1000))" "$agent_port"
  # sample while the UAC runs; its stats file (every second) says how many
  # calls are up
  while alive "$uac_pid"; do
    r=$(awk '/^VmRSS/ { print $2 }' "/proc/$proxy_pid/status" 2>/dev/null || echo 0)
    c=$(awk -F';' 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == "CurrentCall") k = i; next } k { v = $k } END { print v + 0 }' "$dir/uac_stat.csv" 2>/dev/null || echo 0)
    [ "${r:-0}" -gt "$rss_peak" ] && rss_peak=$r
    [ "${c:-0}" -gt "$rss_conc" ] && rss_conc=$c
    sleep 0.5
  done
  finish_uac
  log "agent RSS run: $ok ok, $failed failed"
  stop "$proxy_pid"
  stop "$uas_pid"
  log "agent RSS: idle $((rss_idle / 1024)) MiB, peak $((rss_peak / 1024)) MiB with up to $rss_conc concurrent calls"
fi

# --- report -------------------------------------------------------------------------
echo
echo "== highest sustained call rate, < 0.1% failed (UDP, ${step_calls:-rate x $step_s s} calls per step, ${call_ms} ms calls)"
echo "   (CPU per call: the proxy's user+system time at that rate, over all its processes)"
printf '%-36s %12s %14s\n' path "calls/s" "CPU us/call"
for t in $targets; do
  case $t in
  direct) name="SIPp -> SIPp" ;;
  kamailio) name="SIPp -> kamailio (tm, rr, tlsf) -> SIPp" ;;
  kamailio-qm) name="... kamailio, Debian's default (qm) ..." ;;
  agent) name="SIPp -> leadport-agent -> SIPp" ;;
  agent-unsigned) name="... -> leadport-agent, unsigned -> ..." ;;
  esac
  printf '%-36s %12s %14s\n' "$name" "${best[$t]}" "${best_cpu[$t]}"
done
for t in agent agent-unsigned; do
  [ -n "${best[$t]:-}" ] && [ "${best_queue[$t]:--}" != - ] &&
    echo "$t: the record writer's queue peaked at ${best_queue[$t]} records at ${best[$t]} calls/s (bound 10,000: the proxy never waits on the store below it)"
done
if [ -n "${best[agent]:-}" ] && [ -n "${best[kamailio]:-}" ]; then
  note="(target >= 1.0)"
  [[ "${best[agent]}${best[kamailio]}" == *">="* ]] && note="(a rate reached BENCH_MAX_RATE: raise it for a real ratio)"
  awk -v a="${best[agent]#>=}" -v k="${best[kamailio]#>=}" -v note="$note" 'BEGIN { if (k > 0) printf "%-36s %12.2f   %s\n", "agent / kamailio", a / k, note }'
fi

echo
echo "== INVITE -> 200 at $lat_rate calls/s ($lat_calls calls), microseconds; CPU per call of the proxy"
printf '%-14s %8s %8s %10s %10s %12s %9s %9s\n' path p50 p99 "+p50" "+p99" "CPU us/call" "BYE p50" "BYE p99"
for t in $lat_targets; do
  [ "$t" = direct ] && [ -n "${shown_direct:-}" ] && continue
  [ "$t" = direct ] && shown_direct=1
  add50=- add99=-
  if [ "$t" != direct ] && [ "${p50[$t]}" != - ] && [ "${p50[direct]}" != - ]; then
    add50=$((p50[$t] - p50[direct]))
    add99=$((p99[$t] - p99[direct]))
  fi
  printf '%-14s %8s %8s %10s %10s %12s %9s %9s\n' "$t" "${p50[$t]}" "${p99[$t]}" "$add50" "$add99" "${cpu[$t]:--}" "${bye50[$t]:--}" "${bye99[$t]:--}"
done
if [ -n "${p50[agent]:-}" ] && [ -n "${p50[agent-unsigned]:-}" ] && [ "${p50[agent]}" != - ] && [ "${p50[agent-unsigned]}" != - ]; then
  echo "signing adds p50 $((p50[agent] - p50[agent-unsigned])) us, p99 $((p99[agent] - p99[agent-unsigned])) us; the agent's mean time to sign a call: ${sign_us:--} us"
fi

if [ -n "$rss_peak" ]; then
  echo
  echo "== leadport-agent memory"
  printf 'RSS idle %d KiB; peak %d KiB (%.1f MiB) with up to %d concurrent calls (target <= 40 MB)\n' \
    "$rss_idle" "$rss_peak" "$(awk -v k="$rss_peak" 'BEGIN { print k / 1024 }')" "$rss_conc"
fi
