#!/usr/bin/env bash
# Installs what the build and tests need on a bare Debian machine of ours.
# Idempotent: quick when everything is already there.
set -euo pipefail
export PATH="$PATH:/usr/local/go/bin"

need=()
command -v make >/dev/null || need+=(make)
command -v git >/dev/null || need+=(git)
command -v mount >/dev/null || need+=(mount)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: missing ${need[*]}; install them (apt-get install ${need[*]})" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi

# install_tools SERVICES -- PACKAGES: installs Debian packages the tests run
# in the foreground on loopback ports, keeping their system services from
# starting (a policy-rc.d during the install, unless one exists, as in
# containers) and disabled afterwards.
install_tools() {
  local services=() pkgs=()
  while [ "$1" != "--" ]; do services+=("$1"); shift; done
  shift
  pkgs=("$@")
  [ ${#pkgs[@]} -gt 0 ] || return 0
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: missing ${pkgs[*]}; install them (apt-get install ${pkgs[*]})" >&2
    exit 1
  fi
  local own_policy=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\n# setup.sh: no service starts during this install\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    own_policy=1
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}"
  if [ -n "$own_policy" ]; then
    rm -f /usr/sbin/policy-rc.d
    trap - EXIT
  fi
  local svc
  for svc in "${services[@]}"; do
    if [ -d /run/systemd/system ]; then
      systemctl disable --now "$svc" >/dev/null 2>&1 || true
    else
      systemctl disable "$svc" >/dev/null 2>&1 || true
      [ -x "/etc/init.d/$svc" ] && "/etc/init.d/$svc" stop >/dev/null 2>&1 || true
    fi
  done
}

# --- SIP test tools: SIPp and kamailio ------------------------------------
# The SIPp end-to-end tests (agent/cmd/leadport-agent/e2e_*_test.go) and
# scripts/bench-proxy.sh need `sipp` (Debian package sip-tester) and
# `kamailio` (the reference stateful proxy; the base package carries the
# sl, tm, rr, maxfwd, textops and pv modules). SETUP_SIP=0 skips them.
if [ "${SETUP_SIP:-1}" != 0 ]; then
  need=()
  command -v sipp >/dev/null || need+=(sip-tester)
  command -v kamailio >/dev/null || [ -x /usr/sbin/kamailio ] || need+=(kamailio)
  install_tools kamailio -- "${need[@]}"
fi

# --- MQTT brokers: mosquitto and nats-server --------------------------------
# The sync tests run Debian's mosquitto (TLS with client certificates, a
# per-device ACL) and nats-server (MQTT over JetStream). SETUP_MQTT=0 skips
# them.
if [ "${SETUP_MQTT:-1}" != 0 ]; then
  need=()
  command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
  command -v nats-server >/dev/null || [ -x /usr/sbin/nats-server ] || need+=(nats-server)
  install_tools mosquitto nats-server -- "${need[@]}"
fi

# --- A browser for the status page test: Debian's chromium, headless ------
# SETUP_BROWSER=0 skips it.
if [ "${SETUP_BROWSER:-1}" != 0 ]; then
  need=()
  command -v chromium >/dev/null || need+=(chromium)
  install_tools -- "${need[@]}"
fi
# ---------------------------------------------------------------------------

if ! command -v go >/dev/null; then
  echo "setup: Go is missing: this project expects Go 1.26 at /usr/local/go (Debian's golang package is too old)" >&2
  exit 1
fi
# Modules come through the Go module proxy; fetch them once, up front, so a
# network problem shows here and not as a test failure.
cd "$(dirname "$0")/.."
go mod download
echo "setup: ok ($(go version))"
