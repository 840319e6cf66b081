#!/usr/bin/env bash
# SIP proxy benchmark (issues 3 and 14), on loopback only, in one run:
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
#                 configured as on a busy PBX: BENCH_LINES lines (+15550000000
#                 up), every rule group (forwarding, trunking, pacing,
#                 callerid, quota) set to "observe" (evaluated, violations
#                 recorded, calls let through), every INVITE signed (RFC 8224
#                 Identity, sip.identity: sign)
#       agent-bare  (not searched unless named in BENCH_TARGETS) the earlier
#                 figure: one line, forwarding, pacing and trunking off
#     and the agent/kamailio ratio. Every path gets the same SIPp load:
#     scripts/sipp/uac-lines.xml, the calling number taken in turn from an
#     injection file (-inf) of the BENCH_LINES numbers, so the calls spread
#     evenly over the agent's lines. The agent's status (lines, calls,
#     blocks, violations recorded) is checked after each of its steps;
#  2. INVITE -> 200 latency p50/p99 at BENCH_LAT_RATE calls/s for each, and
#     what the proxies add to the direct figure, and BYE -> 200 (the agent
#     answers a BYE once the call's usage record is stored); with agent, also for
#     agent-unsigned (the same lines and rules, sip.identity: off), and the
#     agent's own mean time to sign a call (from its status);
#  3. the agent's RSS (VmRSS, highest sample every 0.5 s) with
#     BENCH_RSS_CALLS concurrent calls: BENCH_RSS_RATE calls/s of
#     BENCH_RSS_CALLS/BENCH_RSS_RATE seconds each, run half as long again
#     past the ramp so the plateau is sampled;
#  4. overload: each of BENCH_OVERLOAD_TARGETS offered BENCH_OVERLOAD_FACTORS
#     times the capacity found in 1 for BENCH_OVERLOAD_SECONDS, against fresh
#     processes, with scripts/sipp/uac-overload.xml, which takes a 503 as an
#     expected answer (a refusal: ACKed, counted apart, not a failed call), so
#     SIPp keeps offering the rate however many calls are shed. Reported:
#     the offered rate (calls created per second: SIPp on the same cores may
#     fall short of the plan), completed calls per second and as a share of
#     the capacity, calls refused with 503, failed calls, the proxy's peak
#     memory (sampled every 0.5 s: VmRSS for the agent; for kamailio the
#     PSS summed over its processes, its shared memory counted once),
#     whether it survived, and recovery: a probe UAC at BENCH_PROBE_PERCENT
#     of the capacity starts 1 s before the overload ends (SIGUSR1 to the
#     overload UAC: it places no new call; its calls in progress go on, with
#     their retransmissions and BYEs, as real callers' would) and runs
#     BENCH_PROBE_SECONDS past it; recovery is the time from the end of
#     the overload to the 200 of the first probe call from which on every
#     probe call was answered 200 within BENCH_RECOVERY_MS and its BYE
#     answered (resolution: the probe's interval between calls); and the
#     cores the proxy and SIPp each used during the run, with the proxy's
#     efficiency: its completed calls per CPU-second as a share of the same
#     at its capacity (what refusing the excess cost it, apart from the CPU
#     SIPp took from it);
#  5. idle cost: each proxy with no calls for BENCH_IDLE_SECONDS: CPU time
#     (utime+stime) per second and wake-ups per second (voluntary and
#     involuntary context switches of all its threads, all processes);
#  CPU time per call of each proxy (utime+stime from /proc/PID/stat, all of
#  kamailio's processes) at its highest passing rate and at BENCH_LAT_RATE,
#  and at BENCH_LAT_RATE its context switches per call (all threads, all
#  processes).
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
# for them beside it. In the overload runs at 3x the UAC itself needs much
# of the CPU: the offered rate column says what it managed.
#
# Latency uses SIPp's -trace_shortmsg (microsecond timestamps of every
# message) rather than -trace_rtt, whose response times are whole
# milliseconds: too coarse for loopback, where INVITE -> 200 takes ~1 ms.
#
# Environment (defaults in brackets; the defaults take about 12 minutes on 2 cores):
#   BENCH_TARGETS       which paths to search ["direct kamailio kamailio-qm agent"]
#                       (agent-bare: also the one-line, rules-off agent)
#   BENCH_LINES         lines configured in the agent and called from [10000]
#   BENCH_STEP_SECONDS  seconds of calls per step [8]
#   BENCH_STEP_CALLS    calls per step; overrides rate * BENCH_STEP_SECONDS
#   BENCH_CALL_MS       call length in a step and in the overload runs, ms [500]
#   BENCH_START_RATE    first rate tried, calls/s [200]
#   BENCH_MAX_RATE      highest rate tried, calls/s [25600]
#   BENCH_PRECISION     stop the search when the bounds are this close, % [10]
#   BENCH_LAT_RATE      rate of the latency runs [100]
#   BENCH_LAT_SECONDS   length of the latency runs [10]
#   BENCH_LAT_CALL_MS   call length in the latency runs [1000]
#   BENCH_RSS_CALLS     concurrent calls for the RSS figure [1000] (0: skip)
#   BENCH_RSS_RATE      rate that builds them up [100]
#   BENCH_OVERLOAD_TARGETS  paths given the overload runs, of those searched
#                       ["agent kamailio"] (empty: skip)
#   BENCH_OVERLOAD_FACTORS  multiples of the capacity offered ["2 3"]
#   BENCH_MEMORY_BUDGET the agent's memory_budget [its default, 48MiB]
#   BENCH_CAPACITY      "target=rate ..." skips the search for those targets
#                       and takes the rate as their capacity (to rerun the
#                       later parts against a capacity measured before)
#   BENCH_OVERLOAD_SECONDS  length of each overload run [60]
#   BENCH_PROBE_PERCENT rate of the recovery probe, % of the capacity [10]
#   BENCH_PROBE_SECONDS how long the probe runs past the overload's end [5]
#   BENCH_RECOVERY_MS   INVITE -> 200 within this counts as normal service [100]
#   BENCH_IDLE_SECONDS  length of the idle measurement [10] (0: skip)
#   BENCH_BASE_PORT     first port tried; five free ones are picked [15060]
#   BENCH_KAMAILIO_CHILDREN  kamailio UDP worker processes [2]
#   BENCH_KAMAILIO_SHM_MB    kamailio shared memory [512]; its default 64 MB
#                       runs out near 800 calls/s (transactions linger 5 s)
#   BENCH_KEEP=1        keep the work directory (logs, SIPp traces)
#   AGENT_BIN           use this binary instead of building one
#
# Needs sipp (Debian: sip-tester) and kamailio: scripts/setup.sh installs
# them. CI can run it small (about 2 minutes), e.g.
#   BENCH_STEP_SECONDS=2 BENCH_MAX_RATE=400 BENCH_LAT_SECONDS=3 BENCH_RSS_CALLS=100 \
#     BENCH_OVERLOAD_SECONDS=5 BENCH_IDLE_SECONDS=2 scripts/bench-proxy.sh
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
nlines=${BENCH_LINES:-10000}
ov_targets=${BENCH_OVERLOAD_TARGETS-agent kamailio}
ov_factors=${BENCH_OVERLOAD_FACTORS:-2 3}
ov_s=${BENCH_OVERLOAD_SECONDS:-60}
probe_pct=${BENCH_PROBE_PERCENT:-10}
probe_s=${BENCH_PROBE_SECONDS:-5}
recovery_ms=${BENCH_RECOVERY_MS:-100}
idle_s=${BENCH_IDLE_SECONDS:-10}
base_port=${BENCH_BASE_PORT:-15060}
kam_children=${BENCH_KAMAILIO_CHILDREN:-4} # its best here (scripts/kamailio/kamailio.cfg)
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
while [ ${#ports[@]} -lt 5 ]; do
  if [ "$p" -gt $((base_port + 1000)) ]; then
    log "no five free ports from $base_port"
    exit 1
  fi
  port_busy "$p" || ports+=("$p")
  p=$((p + 1))
done
agent_port=${ports[0]} uas_port=${ports[1]} kam_port=${ports[2]} uac_port=${ports[3]} probe_port=${ports[4]}
log "ports: agent $agent_port, uas $uas_port, kamailio $kam_port, uac $uac_port, probe $probe_port; work dir $tmp"

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
    if alive "$k"; then kill -KILL "$k" 2>/dev/null || true; fi
  done
}

# --- the agent ---------------------------------------------------------------
agent_bin=${AGENT_BIN:-}
if [[ " $targets " == *" agent"* ]] && [ -z "$agent_bin" ]; then
  log "building leadport-agent"
  CGO_ENABLED=0 go build -trimpath -o "$tmp/leadport-agent" ./agent/cmd/leadport-agent
  agent_bin=$tmp/leadport-agent
fi

# --- the lines ---------------------------------------------------------------------
# BENCH_LINES numbers from +15550000000 up: SIPp's injection file (one
# number per call, in turn: each line calls every BENCH_LINES calls) and the
# agent's "lines". agent-bare calls from its one line.
if [ "$nlines" -lt 1 ] || [ "$nlines" -gt 10000000 ]; then
  log "BENCH_LINES must be 1 to 10000000"
  exit 1
fi
awk -v n="$nlines" -v csv="$tmp/lines.csv" -v yaml="$tmp/lines.yaml" 'BEGIN {
  print "SEQUENTIAL" >csv
  print "lines:" >yaml
  for (i = 0; i < n; i++) {
    num = sprintf("+1555%07d", i)
    print num ";" >csv
    print "  - \"" num "\"" >yaml
  }
}'
printf 'SEQUENTIAL\n+15551230001;\n' >"$tmp/line1.csv"
lines_csv() { # target: the injection file its UAC calls from
  if [ "$1" = agent-bare ]; then echo "$tmp/line1.csv"; else echo "$tmp/lines.csv"; fi
}

# --- processes -----------------------------------------------------------------
# Each step starts its own UAS and proxy, so that one overloaded step
# leaves nothing behind for the next.
uas_pid='' proxy_pid=''
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
  agent | agent-unsigned | agent-bare)
    local identity=sign
    [ "$1" = agent-unsigned ] && identity=off
    {
      echo "data_dir: $2/data"
      [ -n "${BENCH_MEMORY_BUDGET:-}" ] && echo "memory_budget: $BENCH_MEMORY_BUDGET"
      if [ "$1" = agent-bare ]; then
        echo 'lines: ["+15551230001"]'
      else
        cat "$tmp/lines.yaml"
      fi
      cat <<EOF
default_country: "1"
log: {level: warn}
api: {socket: "$2/api.sock"}
sip:
  listen: ["udp://127.0.0.1:$agent_port", "tcp://127.0.0.1:$agent_port"]
  upstream: "udp://127.0.0.1:$uas_port"
  identity: $identity
EOF
      if [ "$1" = agent-bare ]; then
        # One line placing hundreds of calls a second is machine-paced
        # dialing and trunking by definition: those rules are off so every
        # call is relayed (the decision hook and the dialog tracking still run).
        cat <<EOF
policy:
  forwarding: {action: "off"}
  pacing: {action: "off"}
  trunking: {action: "off"}
EOF
      else
        # Every rule group evaluated and observing: a violation is recorded
        # and the call goes through. A quota allowance makes the quota rule
        # count minutes (with 0 it is idle); no line comes near it here.
        cat <<EOF
policy:
  forwarding: {action: observe}
  trunking: {action: observe}
  pacing: {action: observe}
  callerid: {action: observe}
  quota: {action: observe, monthly_minutes: 10000}
EOF
      fi
    } >"$2/agent.yaml"
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
  agent*) echo "$agent_port" ;;
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
# curl reads the agent's metrics during the overload runs; without it those
# figures are "-".
have_curl=$(command -v curl || true)
# Context switches per call: on a virtual machine each one is dear, and
# they show how a proxy's design spends CPU (a switch per message and
# process for kamailio; the Go runtime's threads handing work between
# them for the agent) with far less noise than CPU time.
# ctxsw PID: voluntary and involuntary context switches of all threads of
# PID and of its children (a thread that exited in between takes its count
# with it).
ctxsw() {
  local p
  for p in "$1" $(pgrep -P "$1" 2>/dev/null || true); do
    cat /proc/"$p"/task/*/status 2>/dev/null || true
  done | awk '/^(voluntary|nonvoluntary)_ctxt_switches/ { n += $2 } END { printf "%.0f\n", n }'
}
per_call() { # ticks0 ticks1 calls: CPU microseconds per call
  awk -v a="$1" -v b="$2" -v hz="$clk_tck" -v n="$3" 'BEGIN { if (n == 0) print "-"; else printf "%.0f", (b - a) / hz / n * 1e6 }'
}

# launch_uac DIR LOCAL_PORT SCENARIO TARGET RATE CALLS CALL_MS [sipp options]:
# starts a SIPp UAC on LOCAL_PORT against TARGET, calling from TARGET's
# lines, its files in DIR; sets launched_pid.
launch_uac() {
  local dir=$1 lport=$2 sf=$3 target=$4 rate=$5 calls=$6 dur=$7
  shift 7
  local limit=$((calls * 3 / rate + dur * 2 / 1000 + 30)) port inf
  port=$(target_port "$target")
  inf=$(lines_csv "$target")
  (cd "$dir" && exec sipp -sf "$sf" -inf "$inf" -s +15557654321 -i 127.0.0.1 -p "$lport" \
    -t u1 -nostdin -buff_size 1048576 -r "$rate" -m "$calls" -d "$dur" -recv_timeout 5000 \
    -timeout "${limit}s" -timeout_error -trace_stat -stf "$dir/uac_stat.csv" -fd 1 \
    -trace_err -error_file "$dir/uac_errors.log" "$@" "127.0.0.1:$port" >"$dir/uac.out" 2>&1) &
  launched_pid=$!
  pids+=("$launched_pid")
}

# start_uac DIR RATE CALLS CALL_MS TARGET [sipp options]: starts the UAC
# (scripts/sipp/uac-lines.xml) against TARGET; sets uac_pid.
start_uac() {
  local dir=$1 rate=$2 calls=$3 dur=$4 target=$5
  shift 5
  uac_dir=$dir
  uac_t0=$(date +%s.%N)
  launch_uac "$dir" "$uac_port" "$root/scripts/sipp/uac-lines.xml" "$target" "$rate" "$calls" "$dur" "$@"
  uac_pid=$launched_pid
}

# uac_stats DIR: "successful failed created" from the last line of the
# UAC's statistics file in DIR.
uac_stats() {
  awk -F';' '
    NR == 1 { for (i = 1; i <= NF; i++) h[$i] = i; next }
    { last = $0 }
    END {
      if (!("SuccessfulCall(C)" in h) || last == "") { print 0, 0, 0; exit }
      split(last, f, ";")
      print f[h["SuccessfulCall(C)"]] + 0, f[h["FailedCall(C)"]] + 0, f[h["TotalCallCreated"]] + 0
    }' "$1/uac_stat.csv" 2>/dev/null || echo 0 0 0
}

# finish_uac: waits for the UAC; sets rc (its exit code), ok, failed and
# elapsed (s).
finish_uac() {
  rc=0
  wait "$uac_pid" || rc=$?
  local t1
  t1=$(date +%s.%N)
  forget "$uac_pid"
  read -r ok failed _ < <(uac_stats "$uac_dir")
  elapsed=$(awk -v a="$uac_t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
}

run_uac() { # as start_uac, then finish_uac
  start_uac "$@"
  finish_uac
}

# agent_status TARGET DIR: reads the agent's status (saved to
# DIR/status.json) and checks it is configured as the figure says: its
# lines are BENCH_LINES (one for agent-bare). Sets st_lines, st_calls,
# st_blocks, st_viol (violations recorded, waiting for sync), st_queue (the
# record writer's queue high-water mark), st_byes (the most BYE answers
# held for the store at once), st_wait (the most requests waiting for a
# slot to be worked on in at once), st_refused (new requests refused
# with 503 by admission control, by reason; "-" from an agent without it)
# and st_summary.
agent_status() {
  local want=$nlines
  [ "$1" = agent-bare ] && want=1
  "$agent_bin" status --json --socket "$2/api.sock" >"$2/status.json" 2>"$2/status.err" || true
  read -r st_lines st_calls st_blocks st_viol st_queue st_byes st_wait st_refused < <(awk '
    /"lines": \[/ { inl = 1; next }
    inl && /\]/ { inl = 0 }
    inl && /"\+/ { lines++ }
    /"calls": [0-9]/ { gsub(/[^0-9]/, ""); calls = $0 }
    /"blocks": [0-9]/ { gsub(/[^0-9]/, ""); blocks = $0 }
    /"violation": \{/ { inv = 1 }
    inv && /"pending": [0-9]/ { gsub(/[^0-9]/, ""); viol = $0; inv = 0 }
    /"queue_high_water": [0-9]/ { gsub(/[^0-9]/, ""); queue = $0 }
    /"byes_held_peak": [0-9]/ { gsub(/[^0-9]/, ""); byes = $0 }
    /"waiting_peak": [0-9]/ { gsub(/[^0-9]/, ""); wait = $0 }
    /"admission": \{/ { inadm = 1 }
    inadm && /"refused": [0-9]/ { gsub(/[^0-9]/, ""); refused = $0; inadm = 0 }
    /"refused_by_reason": \{/ { inr = 1; next }
    inr && /\}/ { inr = 0 }
    inr { gsub(/[" ,]/, ""); sub(/:/, " "); why = why (why == "" ? "" : ",") $0 }
    END {
      if (refused != "" && why != "") refused = refused "(" why ")"
      print lines + 0, (calls == "" ? "?" : calls), (blocks == "" ? "?" : blocks), (viol == "" ? "?" : viol),
        (queue == "" ? "-" : queue), (byes == "" ? "-" : byes), (wait == "" ? "-" : wait), (refused == "" ? "-" : refused)
    }
  ' "$2/status.json")
  st_summary="$st_lines lines, $st_calls calls, $st_blocks blocked, $st_viol violations recorded"
  [ "$st_byes" != - ] && st_summary+=", BYE answers held for the store at most at once: $st_byes"
  [ "$st_wait" != - ] && st_summary+=", requests waiting for a slot at most at once: $st_wait"
  [ "$st_refused" != - ] && st_summary+=", 503s sent by admission control: ${st_refused/(/ (}"
  if [ "$st_calls" = "?" ]; then
    st_summary="status unavailable (see $2/status.err)"
    log "$1: the agent's status could not be read: see $2/status.err"
  elif [ "$st_lines" != "$want" ]; then
    log "$1: the agent's status shows $st_lines lines, not $want: not the configuration measured (see $2/status.json)"
    exit 1
  fi
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
  run_uac "$dir" "$rate" "$calls" "$call_ms" "$target"
  step_cpu=- step_queue=-
  if [ -n "$proxy_pid" ]; then
    ticks1=$(cpu_ticks "$proxy_pid")
    step_cpu=$(per_call "$ticks0" "$ticks1" "$((ok + failed))")
    if [[ "$target" == agent* ]]; then
      agent_status "$target" "$dir"
      # How far the record writer fell behind the calls: the proxy never
      # waits on the store while this stays below the queue's bound.
      step_queue=$st_queue
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
  elif [[ "$target" == agent* ]] && [ "$st_blocks" != 0 ]; then
    verdict="fail ($st_blocks blocked: the rules should only observe)"
  fi
  local q=""
  [ "$step_queue" != - ] && q="  writer queue peak ${step_queue:-?}; status: $st_summary"
  log "$(printf '%-8s %5d calls/s  %6d calls  ok %6d  failed %5d  %6.2fs  -> %s%s' "$target" "$rate" "$calls" "$ok" "$failed" "$elapsed" "$verdict" "$q")"
  [ "$verdict" = pass ]
}

# search TARGET: sets found to the highest passing rate (">=N" when
# BENCH_MAX_RATE passed). Not in a subshell: the pids must stay known.
search() {
  local target=$1 lo=0 hi=0 r=$start_rate mid
  found_cpu=- found_queue=- found_status=-
  while [ "$r" -le "$max_rate" ]; do
    if step "$target" "$r"; then
      lo=$r found_cpu=$step_cpu found_queue=$step_queue found_status=${st_summary:--}
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
    if step "$target" "$mid"; then lo=$mid found_cpu=$step_cpu found_queue=$step_queue found_status=${st_summary:--}; else hi=$mid; fi
  done
  found=$lo
}

# --- 1. highest sustained call rate ------------------------------------------------
declare -A best best_cpu best_queue best_status
for t in $targets; do
  known=$(tr ' ' '\n' <<<"${BENCH_CAPACITY:-}" | sed -n "s/^$t=//p" | head -n 1)
  if [ -n "$known" ]; then
    log "== $t: capacity taken as $known calls/s (BENCH_CAPACITY), no search"
    best[$t]=$known best_cpu[$t]=- best_queue[$t]=- best_status[$t]=-
    continue
  fi
  log "== $t: searching the highest rate with < 0.1% failed calls"
  st_summary=-
  search "$t"
  best[$t]=$found best_cpu[$t]=$found_cpu best_queue[$t]=$found_queue best_status[$t]=$found_status
done

# --- 2. latency and CPU per call at a fixed rate --------------------------------
# latency DIR METHOD: METHOD -> 200 per call in microseconds, from the
# short message trace; prints "p50 p99 n". INVITE is call set-up; BYE is
# answered by the agent only once the call's usage record is stored.
latency() {
  awk -F'\t' -v m="$2" '
    $6 ~ m && $4 == "S" && index($7, m) == 1 { if (!($5 in sent)) sent[$5] = $3 }
    $6 ~ m && $4 == "R" && $7 ~ /^SIP\/2.0 200/ { if (($5 in sent) && !($5 in got)) { got[$5] = 1; printf "%.0f\n", ($3 - sent[$5]) * 1e6 } }
  ' "$1"/*_shortmessages.log | sort -n | awk '
    { v[NR] = $1 }
    END {
      if (NR == 0) { print "- - 0"; exit }
      i50 = int(NR * 0.50 + 0.5); if (i50 < 1) i50 = 1
      i99 = int(NR * 0.99 + 0.5); if (i99 < 1) i99 = 1; if (i99 > NR) i99 = NR
      print v[i50], v[i99], NR
    }'
}

declare -A p50 p99 cpu csw bye50 bye99 lat_status
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
  ticks0=0 cs0=0
  [ -n "$proxy_pid" ] && ticks0=$(cpu_ticks "$proxy_pid") cs0=$(ctxsw "$proxy_pid")
  run_uac "$dir" "$lat_rate" "$lat_calls" "$lat_call_ms" "$t" -trace_shortmsg
  if [ -n "$proxy_pid" ]; then
    ticks1=$(cpu_ticks "$proxy_pid") cs1=$(ctxsw "$proxy_pid")
    cpu[$t]=$(per_call "$ticks0" "$ticks1" "$((ok + failed))")
    csw[$t]=$(awk -v a="$cs0" -v b="$cs1" -v n="$((ok + failed))" 'BEGIN { if (n == 0) print "-"; else printf "%.1f", (b - a) / n }')
    if [[ "$t" == agent* ]]; then
      agent_status "$t" "$dir"
      lat_status[$t]=$st_summary
      if [ "$t" = agent ]; then
        sign_us=$(sed -n 's/.*"sign_us_mean": *\([0-9.]*\).*/\1/p' "$dir/status.json" | head -n 1)
      fi
    fi
    stop "$proxy_pid"
  fi
  stop "$uas_pid"
  read -r a b n < <(latency "$dir" INVITE)
  p50[$t]=$a p99[$t]=$b
  read -r c d _ < <(latency "$dir" BYE)
  bye50[$t]=$c bye99[$t]=$d
  log "$t: $ok ok, $failed failed; INVITE->200 p50 ${a} us, p99 ${b} us over $n calls${lat_status[$t]:+; status: ${lat_status[$t]}}"
done

# --- 3. agent RSS with many concurrent calls ------------------------------------
rss_peak='' rss_idle='' rss_conc=''
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
  start_uac "$dir" "$rss_rate" "$total" "$((hold_s * 1000))" agent
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

# --- 4. overload -------------------------------------------------------------------
# now: sets now_us, the wall clock in microseconds (no fork).
now() { now_us=${EPOCHREALTIME//[.,]/}; }

# mem_kb PID: the proxy's memory in KiB: VmRSS of a single process; for a
# process with children (kamailio) the PSS summed over all of them, so that
# their shared memory is counted once.
mem_kb() {
  local kids p sum=0 v
  kids=$(pgrep -P "$1" 2>/dev/null || true)
  if [ -z "$kids" ]; then
    v=$(awk '/^VmRSS/ { print $2 }' "/proc/$1/status" 2>/dev/null || true)
    echo "${v:-0}"
    return
  fi
  for p in "$1" $kids; do
    v=$(awk '/^Pss:/ { print $2 }' "/proc/$p/smaps_rollup" 2>/dev/null || true)
    sum=$((sum + ${v:-0}))
  done
  echo "$sum"
}

# recovery FILE T_END_US LIMIT_MS: from the probe's short message trace,
# prints "recovery_ms after normal refused": the time from T_END to the 200
# of the first probe call (INVITE sent after T_END) from which on every
# call was answered 200 within LIMIT_MS and its BYE answered 200 ("-" when
# none was); how many calls the probe placed after T_END; how many of them
# were normal; how many were refused with 503.
recovery() {
  awk -F'\t' -v tend="$2" -v lim="$3" '
    $4 == "S" && $6 ~ /INVITE/ && index($7, "INVITE") == 1 { if (!($5 in inv)) { inv[$5] = $3 + 0; order[++n] = $5 } }
    $4 == "R" && $6 ~ /INVITE/ && $7 ~ /^SIP\/2.0 200/ { if (($5 in inv) && !($5 in ans)) ans[$5] = $3 + 0 }
    $4 == "R" && $6 ~ /INVITE/ && $7 ~ /^SIP\/2.0 503/ { refused[$5] = 1 }
    $4 == "R" && $6 ~ /BYE/ && $7 ~ /^SIP\/2.0 200/ { bye[$5] = 1 }
    END {
      tend = tend / 1e6; first = ""; after = 0; good = 0; ref = 0; tail = 1
      for (i = n; i >= 1; i--) {
        id = order[i]
        if (inv[id] < tend) break
        after++
        ok = (id in ans) && (id in bye) && (ans[id] - inv[id]) * 1000 <= lim
        if (ok) good++
        if (id in refused) ref++
        if (!ok) tail = 0
        if (tail) first = id
      }
      if (first == "") rec = "-"; else { rec = (ans[first] - tend) * 1000; if (rec < 0) rec = 0; rec = sprintf("%.0f", rec) }
      print rec, after, good, ref
    }' "$1"
}

# overload TARGET FACTOR CAPACITY: one overload run; sets the ov_* entries
# for "TARGET FACTOR".
declare -A ov_plan ov_offered ov_done ov_pct ov_refused ov_failed ov_mem ov_anon ov_alive ov_rec ov_res ov_probe ov_status
declare -A ov_pcpu ov_scpu ov_eff ov_gor ov_stk
overload() {
  local target=$1 factor=$2 cap=$3 key="$1 $2" rate prate dir ov_pid probe_pid=
  local t_start t_probe t_end t_stop mem peak=0 anon apeak=0 rec after good pref rc_ov=0 rc_probe=0 ok_ov failed_ov created_ov refused sf
  local pt0 pt1=0 st0 st1=0 gor gpeak=- stk spk=-
  rate=$((cap * factor))
  prate=$((cap * probe_pct / 100))
  [ "$prate" -lt 1 ] && prate=1
  dir=$tmp/overload-$target-${factor}x
  mkdir -p "$dir/probe"
  log "== $target: overload, ${factor}x its capacity of $cap calls/s: $rate calls/s for ${ov_s}s, then a probe at $prate calls/s"
  [ "$factor" -ge 3 ] && log "(SIPp shares the cores: at ${factor}x the UAC itself takes much of the CPU and may offer less than planned)"
  start_uas "$dir"
  start_proxy "$target" "$dir"
  sf=$root/scripts/sipp/uac-overload.xml
  # -l: room for every call open for its whole 5 s receive timeout, so
  # that SIPp does not throttle itself (its default, 3 x rate x call
  # length, would) when the proxy answers late
  now
  t_start=$now_us
  pt0=$(cpu_ticks "$proxy_pid") st0=$(cpu_ticks "$uas_pid")
  launch_uac "$dir" "$uac_port" "$sf" "$target" "$rate" "$((rate * (ov_s + 60)))" "$call_ms" \
    -trace_counts -l "$((rate * (8 + call_ms / 1000)))"
  ov_pid=$launched_pid
  t_end=$((t_start + ov_s * 1000000))
  t_probe=$((t_end - 1000000))
  t_stop=$((t_end + probe_s * 1000000))
  # Sample the memory every 0.5 s from the start until the last call has
  # ended; start the probe 1 s before the end; end the overload at its
  # planned end (SIGUSR1: SIPp places no new call and exits once the open
  # ones finish), the probe BENCH_PROBE_SECONDS later. Between these events
  # sleep until the next one: these are points in time, not states to poll.
  local next=$t_start ended=0 stopped=0 wake
  while :; do
    now
    if [ "$now_us" -ge "$next" ]; then
      mem=$(mem_kb "$proxy_pid")
      [ "${mem:-0}" -gt "$peak" ] && peak=$mem
      anon=$(awk '/^RssAnon/ { print $2 }' "/proc/$proxy_pid/status" 2>/dev/null || true)
      [ "${anon:-0}" -gt "$apeak" ] && apeak=$anon
      # The agent's goroutines and their stacks, from its local API: what
      # sipgo's goroutine a message costs when in-dialog traffic bursts
      # (admission control refuses new calls, never those).
      if [[ "$target" == agent* ]] && [ -n "$have_curl" ]; then
        read -r gor stk < <(curl -s --max-time 0.2 --unix-socket "$dir/api.sock" http://agent/metrics 2>/dev/null |
          awk '$1 == "go_goroutines" { g = $2 } $1 == "go_memstats_stack_inuse_bytes" { k = $2 }
            END { printf "%d %d\n", g, k / 1048576 }' || echo "0 0")
        [ "${gor:-0}" -gt 0 ] && { [ "$gpeak" = - ] || [ "$gor" -gt "$gpeak" ]; } && gpeak=$gor
        [ "${gor:-0}" -gt 0 ] && { [ "$spk" = - ] || [ "$stk" -gt "$spk" ]; } && spk=$stk
      fi
      next=$((next + 500000))
    fi
    if [ -z "$probe_pid" ] && [ "$now_us" -ge "$t_probe" ]; then
      launch_uac "$dir/probe" "$probe_port" "$sf" "$target" "$prate" "$((prate * (probe_s + 62)))" "$call_ms" \
        -trace_shortmsg -l "$((prate * (8 + call_ms / 1000) + 100))"
      probe_pid=$launched_pid
    fi
    if [ "$ended" = 0 ] && [ "$now_us" -ge "$t_end" ]; then
      # The CPU each side had during the overload (the probe's last second
      # included: it is a tenth of the capacity).
      pt1=$(cpu_ticks "$proxy_pid") st1=$(($(cpu_ticks "$uas_pid") + $(cpu_ticks "$ov_pid") + $(cpu_ticks "$probe_pid")))
      kill -USR1 "$ov_pid" 2>/dev/null || true
      now
      t_end=$now_us ended=1
    fi
    if [ "$stopped" = 0 ] && [ "$now_us" -ge "$t_stop" ]; then
      kill -USR1 "$probe_pid" 2>/dev/null || true
      stopped=1
    fi
    if [ "$stopped" = 1 ] && ! alive "$ov_pid" && ! alive "$probe_pid"; then
      break
    fi
    wake=$next
    [ -z "$probe_pid" ] && [ "$t_probe" -lt "$wake" ] && wake=$t_probe
    [ "$ended" = 0 ] && [ "$t_end" -lt "$wake" ] && wake=$t_end
    [ "$stopped" = 0 ] && [ "$t_stop" -lt "$wake" ] && wake=$t_stop
    now
    wake=$((wake - now_us))
    [ "$wake" -gt 0 ] && sleep "$((wake / 1000000)).$(printf '%06d' $((wake % 1000000)))"
  done
  wait "$ov_pid" || rc_ov=$?
  forget "$ov_pid"
  wait "$probe_pid" || rc_probe=$?
  forget "$probe_pid"
  ov_alive[$key]=no
  if alive "$proxy_pid"; then
    ov_alive[$key]=yes
    if [[ "$target" == agent* ]]; then
      agent_status "$target" "$dir"
      ov_status[$key]=$st_summary
    fi
    stop "$proxy_pid"
  else
    wait "$proxy_pid" 2>/dev/null || true
    forget "$proxy_pid"
    log "$target died during the overload: see $dir"
  fi
  stop "$uas_pid"
  read -r ok_ov failed_ov created_ov < <(uac_stats "$dir")
  # the 503 answers: the receive count of the 503 element
  refused=$(awk -F';' '
    NR == 1 { for (i = 1; i <= NF; i++) if ($i ~ /_503_Recv$/) k = i; next }
    k { v = $k } END { print v + 0 }' "$dir"/*_counts.csv 2>/dev/null || echo 0)
  local secs completed
  secs=$(awk -v a="$t_start" -v b="$t_end" 'BEGIN { printf "%.2f", (b - a) / 1e6 }')
  completed=$((ok_ov - refused))
  ov_plan[$key]=$rate
  ov_offered[$key]=$(awk -v c="$created_ov" -v s="$secs" 'BEGIN { printf "%.0f", c / s }')
  ov_done[$key]=$(awk -v c="$completed" -v s="$secs" 'BEGIN { printf "%.0f", c / s }')
  ov_pct[$key]=$(awk -v c="$completed" -v s="$secs" -v k="$cap" 'BEGIN { printf "%.0f", c / s / k * 100 }')
  ov_refused[$key]=$refused ov_failed[$key]=$failed_ov
  ov_mem[$key]=$peak ov_anon[$key]=$apeak ov_gor[$key]=$gpeak ov_stk[$key]=$spk
  # Cores used by the proxy and by SIPp (UAC, probe and UAS) during the
  # overload, and the proxy's completed calls per CPU-second as a share of
  # what it did per CPU-second at its capacity (the search's CPU per call):
  # how much of its CPU went to calls rather than to refusing the rest.
  # A proxy that died before the end has no CPU left to read: "-".
  ov_pcpu[$key]=$(awk -v a="$pt0" -v b="$pt1" -v hz="$clk_tck" -v s="$secs" 'BEGIN { if (b < a) print "-"; else printf "%.2f", (b - a) / hz / s }')
  ov_scpu[$key]=$(awk -v a="$st0" -v b="$st1" -v hz="$clk_tck" -v s="$secs" 'BEGIN { printf "%.2f", (b - a) / hz / s }')
  ov_eff[$key]=$(awk -v c="$completed" -v a="$pt0" -v b="$pt1" -v hz="$clk_tck" -v us="${best_cpu[$target]:--}" '
    BEGIN { cpu = (b - a) / hz; if (cpu <= 0 || us !~ /^[0-9.]+$/ || us <= 0) print "-"; else printf "%.0f", c / cpu / (1e6 / us) * 100 }')
  read -r rec after good pref < <(recovery "$(echo "$dir"/probe/*_shortmessages.log)" "$t_end" "$recovery_ms" 2>/dev/null || echo "- 0 0 0")
  ov_rec[$key]=$rec
  ov_res[$key]=$(awk -v r="$prate" 'BEGIN { printf "%.1f", 1000 / r }')
  ov_probe[$key]="$good of $after normal, $pref refused; a call every ${ov_res[$key]:-?} ms"
  log "$(printf '%s %sx: %s calls in %ss (%s/s offered), %s completed (%s/s, %s%% of %s), %s refused (503), %s failed; peak memory %d KiB (anonymous %d KiB); survived: %s; recovery %s ms (probe after the end: %s)%s' \
    "$target" "$factor" "$created_ov" "$secs" "${ov_offered[$key]}" "$completed" "${ov_done[$key]}" "${ov_pct[$key]}" "$cap" \
    "$refused" "$failed_ov" "$peak" "$apeak" "${ov_alive[$key]}" "$rec" "${ov_probe[$key]}" "${ov_status[$key]:+; status: ${ov_status[$key]}}")"
  [ "$rc_ov" -gt 1 ] && log "(the overload UAC exited $rc_ov: see $dir/uac.out)"
  [ "$rc_probe" -gt 1 ] && log "(the probe UAC exited $rc_probe: see $dir/probe/uac.out)"
  return 0
}

ov_ran=()
for t in $ov_targets; do
  [[ " $targets " == *" $t "* ]] || continue
  [ "$t" = direct ] && continue # no proxy to overload
  cap=${best[$t]#>=}
  if [ "${cap:-0}" -lt 1 ]; then
    log "$t: no capacity found, no overload run"
    continue
  fi
  [[ "${best[$t]}" == ">="* ]] && log "$t: its capacity is only known to be at least $cap (BENCH_MAX_RATE): the overload runs offer multiples of that"
  for f in $ov_factors; do
    overload "$t" "$f" "$cap"
    ov_ran+=("$t $f")
  done
done

# --- 5. idle cost -------------------------------------------------------------------
# cpu_ns PID: nanoseconds on a CPU of all threads of PID and of its
# children (schedstat: finer than the 10 ms clock ticks of /proc/PID/stat,
# which an idle process hardly reaches in a few seconds); empty where the
# kernel has no schedstat.
cpu_ns() {
  local p
  for p in "$1" $(pgrep -P "$1" 2>/dev/null || true); do
    cat /proc/"$p"/task/*/schedstat 2>/dev/null || true
  done | awk '{ n += $1; k++ } END { if (k) printf "%.0f\n", n }'
}

declare -A idle_cpu idle_wake idle_mem
idle_targets=()
if [ "$idle_s" -gt 0 ]; then
  for t in agent kamailio; do
    [[ " $targets " == *" $t "* ]] || continue
    log "== $t: idle for ${idle_s}s"
    dir=$tmp/idle-$t
    mkdir -p "$dir"
    start_uas "$dir"
    start_proxy "$t" "$dir"
    if [ "$t" = agent ]; then
      # ready: the local API answers (then leave it alone)
      deadline=$((SECONDS + 20))
      until "$agent_bin" status --json --socket "$dir/api.sock" >/dev/null 2>&1; do
        [ $SECONDS -ge $deadline ] && { log "agent: the local API did not answer within 20 s"; exit 1; }
        sleep 0.05
      done
    fi
    ticks0=$(cpu_ticks "$proxy_pid")
    ns0=$(cpu_ns "$proxy_pid")
    cs0=$(ctxsw "$proxy_pid")
    now
    t0=$now_us
    sleep "$idle_s" # the measurement window, not a wait for state
    ticks1=$(cpu_ticks "$proxy_pid")
    ns1=$(cpu_ns "$proxy_pid")
    cs1=$(ctxsw "$proxy_pid")
    now
    idle_mem[$t]=$(mem_kb "$proxy_pid")
    if [ -n "$ns0" ] && [ -n "$ns1" ]; then
      idle_cpu[$t]=$(awk -v a="$ns0" -v b="$ns1" -v us="$((now_us - t0))" 'BEGIN { printf "%.2f", (b - a) / 1e6 / (us / 1e6) }')
    else
      idle_cpu[$t]=$(awk -v a="$ticks0" -v b="$ticks1" -v hz="$clk_tck" -v us="$((now_us - t0))" 'BEGIN { printf "%.2f", (b - a) / hz * 1000 / (us / 1e6) }')
    fi
    idle_wake[$t]=$(awk -v a="$cs0" -v b="$cs1" -v us="$((now_us - t0))" 'BEGIN { printf "%.1f", (b - a) / (us / 1e6) }')
    stop "$proxy_pid"
    stop "$uas_pid"
    idle_targets+=("$t")
    log "$t idle: ${idle_cpu[$t]} ms CPU per second, ${idle_wake[$t]} wake-ups per second, memory $((idle_mem[$t] / 1024)) MiB"
  done
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
  agent-bare) name="... leadport-agent, 1 line, rules off" ;;
  *) name=$t ;;
  esac
  printf '%-36s %12s %14s\n' "$name" "${best[$t]}" "${best_cpu[$t]}"
done
[[ " $targets " == *" agent "* ]] &&
  echo "leadport-agent: $nlines lines, the calls spread over them in turn, every rule group observing, every INVITE signed"
for t in agent agent-unsigned agent-bare; do
  [ -n "${best[$t]:-}" ] && [ "${best_queue[$t]:--}" != - ] &&
    echo "$t: the record writer's queue peaked at ${best_queue[$t]} records at ${best[$t]} calls/s (bound 10,000: the proxy never waits on the store below it); status: ${best_status[$t]}"
done
if [ -n "${best[agent]:-}" ] && [ -n "${best[kamailio]:-}" ]; then
  note="(target >= 1.5)"
  [[ "${best[agent]}${best[kamailio]}" == *">="* ]] && note="(a rate reached BENCH_MAX_RATE: raise it for a real ratio)"
  awk -v a="${best[agent]#>=}" -v k="${best[kamailio]#>=}" -v note="$note" 'BEGIN { if (k > 0) printf "%-36s %12.2f   %s\n", "agent / kamailio", a / k, note }'
fi

echo
echo "== INVITE -> 200 at $lat_rate calls/s ($lat_calls calls), microseconds; CPU per call of the proxy"
echo "   (agent and agent-unsigned: $nlines lines, every rule group observing, as in the search; target: agent CPU/call <= kamailio's;"
echo "    switches: the proxy's context switches per call, all its threads and processes)"
printf '%-14s %8s %8s %10s %10s %12s %9s %9s %9s\n' path p50 p99 "+p50" "+p99" "CPU us/call" switches "BYE p50" "BYE p99"
for t in $lat_targets; do
  [ "$t" = direct ] && [ -n "${shown_direct:-}" ] && continue
  [ "$t" = direct ] && shown_direct=1
  add50=- add99=-
  if [ "$t" != direct ] && [ "${p50[$t]}" != - ] && [ "${p50[direct]}" != - ]; then
    add50=$((p50[$t] - p50[direct]))
    add99=$((p99[$t] - p99[direct]))
  fi
  printf '%-14s %8s %8s %10s %10s %12s %9s %9s %9s\n' "$t" "${p50[$t]}" "${p99[$t]}" "$add50" "$add99" "${cpu[$t]:--}" "${csw[$t]:--}" "${bye50[$t]:--}" "${bye99[$t]:--}"
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

if [ ${#ov_ran[@]} -gt 0 ]; then
  echo
  echo "== overload: offered ${ov_factors// /x, }x the capacity found above for ${ov_s}s each, fresh processes"
  echo "   (SIPp UAC and UAS share the same cores: at 3x the UAC itself takes much of the CPU, so 'offered' may fall short of 'planned'."
  echo "   completed: calls answered 200 and hung up, per second of the run and as % of the capacity (target >= 90 %);"
  echo "   refused: answered 503 (admission control); failed: any other outcome (timeout, other errors);"
  echo "   memory: peak VmRSS of the agent (target <= 64 MB), kamailio: PSS over its processes;"
  echo "   recovery: end of the overload to the first of the probe's ${probe_pct}% calls from which on all were answered within ${recovery_ms} ms (target <= 2000))"
  printf '%-10s %3s %8s %8s %10s %6s %9s %8s %9s %8s %10s  %s\n' path x planned offered "completed" "%cap" refused failed "mem MiB" survived "recov. ms" "probe after the end"
  for k in "${ov_ran[@]}"; do
    read -r t f <<<"$k"
    printf '%-10s %3s %8s %8s %10s %6s %9s %8s %9.1f %8s %10s  %s\n' "$t" "${f}x" "${ov_plan[$k]}" "${ov_offered[$k]}" "${ov_done[$k]}" "${ov_pct[$k]}" \
      "${ov_refused[$k]}" "${ov_failed[$k]}" "$(awk -v k="${ov_mem[$k]}" 'BEGIN { print k / 1024 }')" "${ov_alive[$k]}" "${ov_rec[$k]}" "${ov_probe[$k]}"
  done
  echo "   CPU during each run, in cores: the proxy's, and SIPp's (UAC, probe, UAS) on the same cores; efficiency: the proxy's"
  echo "   completed calls per CPU-second as % of the same at its capacity (the search's CPU per call): what refusing the rest cost it"
  for k in "${ov_ran[@]}"; do
    printf '   %s: proxy %s cores, SIPp %s cores; efficiency %s%%\n' "${k}x" "${ov_pcpu[$k]}" "${ov_scpu[$k]}" "${ov_eff[$k]}"
  done
  for k in "${ov_ran[@]}"; do
    [[ $k == agent* ]] || continue
    printf '   %s: anonymous memory (heap, stacks, the runtime: what memory_budget bounds) peaked at %.1f MiB; the rest of the RSS is file pages (the binary, bbolt'"'"'s map); goroutines peaked at %s, their stacks at %s MiB (sampled every 0.5 s)\n' \
      "${k}x" "$(awk -v k="${ov_anon[$k]}" 'BEGIN { print k / 1024 }')" "${ov_gor[$k]:--}" "${ov_stk[$k]:--}"
  done
fi

if [ ${#idle_targets[@]} -gt 0 ]; then
  echo
  echo "== idle: no calls for ${idle_s}s (agent: $nlines lines, rules observing); CPU: user+system time; wake-ups: context switches of all threads"
  printf '%-10s %12s %12s %9s\n' path "CPU ms/s" "wake-ups/s" "mem MiB"
  for t in "${idle_targets[@]}"; do
    printf '%-10s %12s %12s %9.1f\n' "$t" "${idle_cpu[$t]}" "${idle_wake[$t]}" "$(awk -v k="${idle_mem[$t]}" 'BEGIN { print k / 1024 }')"
  done
fi
