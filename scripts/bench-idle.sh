#!/usr/bin/env bash
# CPU per call at a low call rate, and the cost of doing nothing, for
# leadport-agent and kamailio side by side (issue 14: "CPU per call at 100
# calls/s <= kamailio's in the same run; idle CPU of an agent with no calls
# (wake-ups per second) reported").
#
# For each target, against freshly started processes (a SIPp UAS behind the
# proxy):
#   idle   the proxy up, no calls: after IDLE_SETTLE_S, IDLE_S seconds of
#          CPU (ms/s) and wake-ups (context switches/s);
#   calls  RATE calls/s of CALL_MS for CALLS_S seconds (SIPp uac.xml): CPU
#          per call (us) and context switches per call, counted from the
#          first INVITE to the last BYE's answer;
#          and BYE -> 200 p50/p99 (the agent holds the answer until the
#          call's usage record is stored);
#   after  idle again, AFTER_SETTLE_S after the last call, IDLE_S seconds:
#          what the calls left running (GC, timers, lingering transactions).
#
# CPU is utime+stime (/proc/PID/stat, 10 ms ticks; for idle, where ticks
# are too coarse, also the nanosecond run time of every thread from
# /proc/PID/task/*/schedstat). Wake-ups are voluntary + nonvoluntary
# context switches summed over /proc/PID/task/*/status. kamailio counts all
# its processes.
#
# The agent runs as in bench-proxy (UDP, every INVITE signed), with LINES
# lines configured (the bench's one among them) and every rule group
# observing (ACTION), so each call is tracked, evaluated and recorded.
#
# Environment (defaults in brackets):
#   TARGETS          ["agent kamailio"]; also agent-unsigned, agent-min
#                    (one line, rules as bench-proxy has them)
#   RATE [100]  CALLS_S [15]  CALL_MS [1000]
#   IDLE_S [10]  IDLE_SETTLE_S [3]  AFTER_SETTLE_S [3]
#   LINES [10000]  ACTION [observe]
#   REPEAT [1]       runs per target (the machine is shared: give a spread)
#   PROFILE=1        the agent writes a CPU profile of each run (to the
#                    work directory; kept, named in the output)
#   AGENT_ENV        extra environment for the agent, e.g. "GOMAXPROCS=1"
#   AGENT_BIN        use this binary instead of building one
#   BASE_PORT [16060]  KEEP=1 keeps the work directory
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
root=$PWD

targets=${TARGETS:-agent kamailio}
rate=${RATE:-100}
calls_s=${CALLS_S:-15}
call_ms=${CALL_MS:-1000}
idle_s=${IDLE_S:-10}
idle_settle=${IDLE_SETTLE_S:-3}
after_settle=${AFTER_SETTLE_S:-3}
nlines=${LINES:-10000}
action=${ACTION:-observe}
repeat=${REPEAT:-1}
base_port=${BASE_PORT:-16060}
kamailio_bin=$(command -v kamailio || echo /usr/sbin/kamailio)
clk_tck=$(getconf CLK_TCK)

tmp=$(mktemp -d "${TMPDIR:-/tmp}/bench-idle.XXXXXX")
pids=()
log() { echo "bench-idle: $*" >&2; }
alive() { [ -e "/proc/$1" ] && [ "$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)" != Z ]; }
stop() { # pid: SIGTERM, 10 s, SIGKILL; its children too
  local kids deadline=$((SECONDS + 10)) k
  kids=$(pgrep -P "$1" 2>/dev/null || true)
  kill "$1" 2>/dev/null || true
  while alive "$1" && [ $SECONDS -lt $deadline ]; do sleep 0.05; done
  alive "$1" && kill -KILL "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
  for k in $kids; do alive "$k" && kill -KILL "$k" 2>/dev/null || true; done
  local keep=() q
  for q in "${pids[@]}"; do [ "$q" = "$1" ] || keep+=("$q"); done
  pids=("${keep[@]}")
}
cleanup() {
  local p
  for p in "${pids[@]}"; do [ -n "$p" ] && stop "$p"; done
  if [ "${KEEP:-}" = 1 ] || [ "${PROFILE:-}" = 1 ]; then log "work directory kept: $tmp"; else rm -rf "$tmp"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_busy() { [ -n "$(ss -Hlnu "sport = :$1" 2>/dev/null)$(ss -Hlnt "sport = :$1" 2>/dev/null)" ]; }
ports=()
p=$base_port
while [ ${#ports[@]} -lt 4 ]; do
  port_busy "$p" || ports+=("$p")
  p=$((p + 1))
done
agent_port=${ports[0]} uas_port=${ports[1]} kam_port=${ports[2]} uac_port=${ports[3]}

wait_bound() { # port pid name
  local deadline=$((SECONDS + 20))
  until [ -n "$(ss -Hlnu "sport = :$1" 2>/dev/null)" ]; do
    alive "$2" || { log "$3 exited before binding udp $1"; return 1; }
    [ $SECONDS -lt $deadline ] || { log "$3 did not bind udp $1"; return 1; }
    sleep 0.05
  done
}

agent_bin=${AGENT_BIN:-}
if [[ " $targets " == *" agent"* ]] && [ -z "$agent_bin" ]; then
  log "building leadport-agent"
  CGO_ENABLED=0 go build -trimpath -o "$tmp/leadport-agent" ./agent/cmd/leadport-agent
  agent_bin=$tmp/leadport-agent
fi

# The bench's line, +15551230001, and the ones after it.
lines_yaml=$(awk -v n="$nlines" 'BEGIN { printf "["; for (i = 0; i < n; i++) printf "%s\"+1555%07d\"", (i ? ", " : ""), 1230001 + i; printf "]" }')

proc_pids() { # the proxy and, for kamailio, its children
  echo "$1"
  pgrep -P "$1" 2>/dev/null || true
}

# sample PID: prints "ticks schedstat_ns ctxt_switches" over all its
# processes and threads.
sample() {
  local t=0 ns=0 cs=0 p
  for p in $(proc_pids "$1"); do
    t=$((t + $(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | awk '{ print $12 + $13 }' || echo 0)))
    ns=$((ns + $(cat /proc/"$p"/task/*/schedstat 2>/dev/null | awk '{ n += $1 } END { printf "%.0f", n + 0 }')))
    cs=$((cs + $(cat /proc/"$p"/task/*/status 2>/dev/null | awk '/^(non)?voluntary_ctxt_switches/ { n += $2 } END { print n + 0 }')))
  done
  echo "$t $ns $cs"
}

start_proxy() { # target dir
  proxy_pid=
  case $1 in
  kamailio)
    "$kamailio_bin" -DD -E -f "$root/scripts/kamailio/kamailio.cfg" -P "$2/kamailio.pid" -Y "$2" \
      -A "SIP_PORT=$kam_port" -n 2 -m 512 -x tlsf -X tlsf \
      -A "UAS=\"sip:127.0.0.1:$uas_port\"" >"$2/kamailio.log" 2>&1 &
    proxy_pid=$!
    pids+=("$proxy_pid")
    wait_bound "$kam_port" "$proxy_pid" kamailio
    ;;
  agent*)
    local identity=sign lines=$lines_yaml policy
    policy=$(printf '  %s: {action: "%s"}\n' forwarding "$action" trunking "$action" pacing "$action" callerid "$action" quota "$action")
    [ "$1" = agent-unsigned ] && identity=off
    if [ "$1" = agent-min ]; then
      lines='["+15551230001"]'
      policy=$(printf '  %s: {action: "off"}\n' forwarding pacing trunking)
    fi
    cat >"$2/agent.yaml" <<EOF
data_dir: $2/data
lines: $lines
default_country: "1"
log: {level: warn}
api: {socket: "$2/api.sock"}
sip:
  listen: ["udp://127.0.0.1:$agent_port", "tcp://127.0.0.1:$agent_port"]
  upstream: "udp://127.0.0.1:$uas_port"
  identity: $identity
policy:
$policy
EOF
    local envs=()
    [ "${PROFILE:-}" = 1 ] && envs+=("LEADPORT_CPUPROFILE=$2/cpu.pprof")
    # shellcheck disable=SC2206
    [ -n "${AGENT_ENV:-}" ] && envs+=($AGENT_ENV)
    env "${envs[@]}" "$agent_bin" run --config "$2/agent.yaml" >"$2/agent.log" 2>&1 &
    proxy_pid=$!
    pids+=("$proxy_pid")
    wait_bound "$agent_port" "$proxy_pid" leadport-agent
    ;;
  esac
}

target_port() { case $1 in kamailio) echo "$kam_port" ;; *) echo "$agent_port" ;; esac; }

# idle_window PID: sleeps IDLE_S and prints "cpu_ms_per_s wakeups_per_s"
idle_window() {
  local a b t0 t1
  a=$(sample "$1")
  t0=$(date +%s.%N)
  sleep "$idle_s"
  b=$(sample "$1")
  t1=$(date +%s.%N)
  awk -v a="$a" -v b="$b" -v t0="$t0" -v t1="$t1" 'BEGIN {
    split(a, x, " "); split(b, y, " "); s = t1 - t0
    printf "%.2f %.1f", (y[2] - x[2]) / 1e6 / s, (y[3] - x[3]) / s }'
}

# latency DIR METHOD: METHOD -> 200 p50 and p99 in microseconds, from
# SIPp's short message trace (as bench-proxy.sh): for BYE, how long the
# agent held the answer until the call's usage record was stored.
latency() {
  awk -F'\t' -v m="$2" '
    $6 ~ m && $4 == "S" && index($7, m) == 1 { if (!($5 in sent)) sent[$5] = $3 }
    $6 ~ m && $4 == "R" && $7 ~ /^SIP\/2.0 200/ { if (($5 in sent) && !($5 in got)) { got[$5] = 1; printf "%.0f\n", ($3 - sent[$5]) * 1e6 } }
  ' "$1"/uac_*_shortmessages.log 2>/dev/null | sort -n | awk '
    { v[NR] = $1 }
    END {
      if (NR == 0) { print "- -"; exit }
      i50 = int(NR * 0.50 + 0.5); if (i50 < 1) i50 = 1
      i99 = int(NR * 0.99 + 0.5); if (i99 < 1) i99 = 1; if (i99 > NR) i99 = NR
      print v[i50], v[i99]
    }'
}

results=()
run_one() { # target n
  local t=$1 dir=$tmp/$1-$2 calls=$((rate * calls_s)) uas_pid a b ok failed idle after callrow
  mkdir -p "$dir"
  (cd "$dir" && exec sipp -sf "$root/scripts/sipp/uas.xml" -i 127.0.0.1 -p "$uas_port" -t u1 \
    -nostdin -buff_size 1048576 >"$dir/uas.out" 2>&1) &
  uas_pid=$!
  pids+=("$uas_pid")
  wait_bound "$uas_port" "$uas_pid" "SIPp UAS"
  start_proxy "$t" "$dir"
  sleep "$idle_settle"
  idle=$(idle_window "$proxy_pid")
  a=$(sample "$proxy_pid")
  (cd "$dir" && exec sipp -sf "$root/scripts/sipp/uac.xml" -s +15557654321 -i 127.0.0.1 -p "$uac_port" \
    -t u1 -nostdin -buff_size 1048576 -r "$rate" -m "$calls" -d "$call_ms" -recv_timeout 5000 \
    -timeout "$((calls_s * 3 + 30))s" -timeout_error -trace_stat -stf "$dir/uac_stat.csv" -fd 1 \
    -trace_shortmsg "127.0.0.1:$(target_port "$t")" >"$dir/uac.out" 2>&1) || true
  b=$(sample "$proxy_pid")
  read -r ok failed < <(awk -F';' 'NR == 1 { for (i = 1; i <= NF; i++) h[$i] = i; next } { last = $0 }
    END { split(last, f, ";"); print f[h["SuccessfulCall(C)"]] + 0, f[h["FailedCall(C)"]] + 0 }' "$dir/uac_stat.csv")
  sleep "$after_settle"
  after=$(idle_window "$proxy_pid")
  stop "$proxy_pid"
  stop "$uas_pid"
  callrow=$(awk -v a="$a" -v b="$b" -v n="$((ok + failed))" -v hz="$clk_tck" 'BEGIN {
    split(a, x, " "); split(b, y, " "); if (n == 0) n = 1
    printf "%8.0f %8.0f %8.1f", (y[1] - x[1]) / hz / n * 1e6, (y[2] - x[2]) / 1e3 / n, (y[3] - x[3]) / n }')
  local bye
  bye=$(latency "$dir" BYE)
  results+=("$(printf '%-15s %6d %6d %s %9s %9s %9s %9s %7s %7s' "$t" "$ok" "$failed" "$callrow" $idle $after $bye)")
  log "${results[-1]}"
  [ "${PROFILE:-}" = 1 ] && [ -f "$dir/cpu.pprof" ] && log "profile: $dir/cpu.pprof"
  return 0
}

log "ports: agent $agent_port, uas $uas_port, kamailio $kam_port, uac $uac_port; work dir $tmp"
for i in $(seq 1 "$repeat"); do
  for t in $targets; do
    run_one "$t" "$i"
  done
done

echo
echo "== $rate calls/s of $call_ms ms for $calls_s s; idle: ${idle_s} s with no calls (before; and after the calls)"
echo "   CPU us/call from /proc stat ticks and from schedstat; wake-ups = context switches (all threads)"
printf '%-15s %6s %6s %8s %8s %8s %9s %9s %9s %9s %7s %7s\n' target ok failed "us/call" "us/call" "cs/call" "idle" "idle" "after" "after" "BYE p50" "BYE p99"
printf '%-15s %6s %6s %8s %8s %8s %9s %9s %9s %9s %7s %7s\n' "" "" "" "(stat)" "(sched)" "" "CPU ms/s" "wakeup/s" "CPU ms/s" "wakeup/s" "us" "us"
for r in "${results[@]}"; do echo "$r"; done
