#!/usr/bin/env bash
# Footprint figures (issue 6): the stripped linux/arm64 binary's size, and
# for this machine's build: time from exec to the SIP listener bound, and
# RSS once idle. The agent runs with SIP on loopback, the local API, and
# no broker.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
tmp=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; rm -rf "$tmp"' EXIT
CGO_ENABLED=0 GOOS=linux GOARCH=arm64 go build -trimpath -ldflags '-s -w' -o "$tmp/arm64" ./agent/cmd/leadport-agent
CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' -o "$tmp/agent" ./agent/cmd/leadport-agent
printf 'linux/arm64 stripped binary: %.1f MB\n' "$(echo "$(stat -c %s "$tmp/arm64") / 1000000" | bc -l)"
port=$(( 20000 + RANDOM % 20000 ))
cat >"$tmp/agent.yaml" <<CONF
data_dir: $tmp/data
lines: ["+15551230001"]
sip:
  listen: ["udp://127.0.0.1:$port"]
  upstream: "udp://127.0.0.1:9"
api:
  socket: $tmp/api.sock
CONF
hexport=$(printf '%04X' "$port")
for run in 1 2 3; do
  rm -rf "$tmp/data"
  start=$(date +%s%N)
  "$tmp/agent" run --config "$tmp/agent.yaml" 2>"$tmp/log" &
  pid=$!
  until grep -q ":$hexport " /proc/net/udp 2>/dev/null; do :; done
  end=$(date +%s%N)
  echo "run $run: exec to SIP listening: $(( (end - start) / 1000000 )) ms"
  if [ "$run" = 3 ]; then
    # Idle: a few seconds after start, the upstream checks done.
    sleep 10
    echo "RSS when idle: $(awk '/VmRSS/ {printf "%.1f MB", $2/1024}' /proc/$pid/status) (VmHWM $(awk '/VmHWM/ {printf "%.1f MB", $2/1024}' /proc/$pid/status))"
  fi
  kill -TERM $pid; wait $pid || true
done
