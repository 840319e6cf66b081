#!/usr/bin/env bash
# make bench-fleet (issue 16): DEVICES simulated devices (default 1,000),
# each with its own store on tmpfs, key, identity and sync client, in one
# process (scripts/fleet-sim) against a three-node NATS cluster on this
# machine (JetStream, MQTT state replicated on all three). Prints the
# connect storm, steady records/s, CPU and RSS of the brokers and of the
# simulator per device, a fleet-wide ping, then one node SIGKILLed:
# records lost (must be 0) and the time until every device publishes
# again. Exit 1 when a record was lost or a phase timed out.
#   DEVICES          simulated devices (default 1000)
#   DURATION         steady-state window (default 60s)
#   USAGE_RATE       usage records per second per device (default 0.5)
#   VIOLATION_RATE   violation records per second per device (default 0.05)
#   BENCH_FLEET_JSON where the figures go as JSON (default dist/bench-fleet.json)
#   NATS_MQTT        ';'-separated lines for each node's mqtt block (default
#                    js_api_timeout: "30s": at the default 5 s a node fails
#                    the SUBSCRIBEs of a storm of a few hundred devices, whose
#                    JetStream consumers it cannot create in time; docs/fleet.md)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
devices=${DEVICES:-1000}
json=${BENCH_FLEET_JSON:-dist/bench-fleet.json}

# The pinned nats-server (setup.sh builds it when missing; nothing else).
SETUP_SIP=0 SETUP_BROWSER=0 scripts/setup.sh >/dev/null

# Each device holds its bbolt file and a socket open.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt $((devices * 3 + 100)) ]; then
  echo "bench-fleet: open files limited to $(ulimit -n); $devices devices need about $((devices * 3 + 100))" >&2
  exit 1
fi
# About 1 MiB of tmpfs per device for the run's stores.
free_kib=$(df -Pk /dev/shm | awk 'NR == 2 {print $4}')
if [ "$free_kib" -lt $((devices * 2048)) ]; then
  echo "bench-fleet: /dev/shm has $((free_kib / 1024)) MiB free; $devices devices want $((devices * 2)) MiB" >&2
  exit 1
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
go build -o "$tmp/fleet-sim" ./scripts/fleet-sim
mkdir -p "$(dirname "$json")"
echo "bench-fleet: $devices devices, $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo);" \
  "brokers, simulator and platform share this machine (and whatever else runs on it)"
"$tmp/fleet-sim" -devices "$devices" -nats-cluster -kill -duration "${DURATION:-60s}" \
  -usage-rate "${USAGE_RATE:-0.5}" -violation-rate "${VIOLATION_RATE:-0.05}" \
  -nats-mqtt "${NATS_MQTT:-js_api_timeout: \"30s\"}" -json "$json"
echo "bench-fleet: figures in $json"
