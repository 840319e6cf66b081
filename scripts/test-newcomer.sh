#!/usr/bin/env bash
# The README's two commands as a newcomer meets them, on this machine: a
# fresh clone of the committed HEAD in a temporary directory, then
#
#   make test -> make run -> make test -> make run     (as root)
#   make run                                           (as a user, not root)
#
# checking that each passes, that `make run` keeps its device id (its data)
# across the tests in between, and that the user's run keeps its data in
# its own state directory. `make test-long` runs it.
#
# `make test` runs a subset here, so that the check stays quick: the tests
# that touch what `make run` leaves on the machine (the package and service
# tests, which use /var/lib/leadport-agent) and the status page. Set
# NEWCOMER_TEST_PKGS / NEWCOMER_TEST_RUN (scripts/test.sh's TEST_PKGS and
# TEST_RUN) to change it; NEWCOMER_TEST_PKGS=./... NEWCOMER_TEST_RUN= runs
# the whole suite each time.
#
# An existing /var/lib/leadport-agent is set aside and put back at the end.
# Needs root (make run as root, a throwaway user for the other run).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
[ "$(id -u)" = 0 ] || { echo "test-newcomer: needs root" >&2; exit 1; }

DATA=/var/lib/leadport-agent
ASIDE=.set-aside-by-newcomer-check
NUSER=lp-newcomer
src=$(pwd)
work=$(mktemp -d /var/tmp/leadport-newcomer.XXXXXX)
chmod 755 "$work"
made_user=
fails=0
ok() { echo "newcomer: ok:   $*"; }
fail() { echo "newcomer: FAIL: $*"; fails=$((fails + 1)); }

if [ -e "$DATA$ASIDE" ]; then
  echo "test-newcomer: $DATA$ASIDE exists: a check that did not finish set it aside; put it back or remove it" >&2
  exit 1
fi
if [ -e "$DATA" ]; then
  mv "$DATA" "$DATA$ASIDE"
  echo "newcomer: set $DATA aside"
fi
cleanup() {
  pkill -f "^$work/" 2>/dev/null || true
  rm -rf "$DATA"
  if [ -e "$DATA$ASIDE" ]; then mv "$DATA$ASIDE" "$DATA"; echo "newcomer: put $DATA back"; fi
  if [ -n "$made_user" ]; then userdel -r "$NUSER" >/dev/null 2>&1 || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

git clone -q "$src" "$work/clone"
cd "$work/clone"
export TEST_PKGS=${NEWCOMER_TEST_PKGS-./agent/cmd/leadport-agent ./agent/service}
export TEST_RUN=${NEWCOMER_TEST_RUN-'^(TestPackagesDeb|TestInstallSystemdE2E|TestStatusPage)$'}

# make_run [runuser args...]: `make run` in the background until the agent
# answers `status`; prints its device id, then stops it with SIGTERM (as a
# technician's Ctrl-C would) and checks that it stopped cleanly.
make_run() {
  local as=("$@") log="$work/run.$RANDOM.log" id= pid agent
  "${as[@]}" setsid make run >"$log" 2>&1 &
  pid=$!
  for _ in $(seq 600); do
    id=$("${as[@]}" bin/leadport-agent status --json 2>/dev/null | grep -o '"device_id": *"[^"]*"' | head -n 1 | sed 's/.*"\([^"]*\)"$/\1/') || true
    [ -n "$id" ] && break
    kill -0 $pid 2>/dev/null || break
    sleep 0.2
  done
  agent=$(pgrep -f "^bin/leadport-agent run" | head -n 1 || true)
  if [ -z "$id" ] || [ -z "$agent" ]; then
    fail "make run${as:+ as ${as[*]}}: the agent did not answer status"; sed 's/^/  run: /' "$log" >&2
    kill -TERM -- -$pid 2>/dev/null || true
    wait $pid 2>/dev/null || true
    return
  fi
  kill -TERM "$agent"
  if wait $pid; then ok "make run${as:+ (${as[*]})}: device $id, stopped cleanly"; else fail "make run: exit $? after SIGTERM"; sed 's/^/  run: /' "$log" >&2; fi
  echo "$id" >"$work/last-id"
}

make_test() {
  if make test >"$work/test.log" 2>&1; then
    ok "make test ($(grep -c '^ok ' "$work/test.log") packages ok)"
  else
    fail "make test"; tail -n 40 "$work/test.log" | sed 's/^/  test: /' >&2
  fi
}

echo "newcomer: make test, then make run (no data yet)"
make_test
make_run
first=$(cat "$work/last-id" 2>/dev/null || true)
[ -f "$DATA/agent.db" ] && ok "make run as root keeps its data in $DATA" || fail "no $DATA/agent.db after make run"

echo "newcomer: make test again, then make run again"
make_test
[ -f "$DATA/agent.db" ] && ok "make test left $DATA in place" || fail "make test lost $DATA"
make_run
[ -n "$first" ] && [ "$(cat "$work/last-id")" = "$first" ] && ok "the second make run is the same device ($first)" || fail "device id changed across make test: $first -> $(cat "$work/last-id")"

echo "newcomer: make run as a user who is not root"
if ! getent passwd $NUSER >/dev/null; then
  useradd -m -s /bin/bash $NUSER
  made_user=1
fi
home=$(getent passwd $NUSER | cut -d: -f6)
# The user's own clone; modules from this machine's cache (no download).
modcache=$work/modcache
rootcache=$(go env GOMODCACHE)
GOMODCACHE=$modcache GOPROXY="file://$rootcache/cache/download" GOFLAGS=-mod=mod go mod download
chmod -R a+rX "$modcache"
rm -rf "$home/clone"
git clone -q "$src" "$home/clone"
chown -R $NUSER: "$home/clone"
cd "$home/clone"
make_run runuser -u $NUSER -- env HOME="$home" GOMODCACHE="$modcache" GOPROXY=off
[ -f "$home/.local/state/leadport-agent/agent.db" ] && ok "the user's run keeps its data in ~/.local/state/leadport-agent" || fail "no agent.db in $home/.local/state/leadport-agent"
cd "$work"

if [ "$fails" -ne 0 ]; then echo "newcomer: $fails failed"; exit 1; fi
echo "newcomer: ok"
