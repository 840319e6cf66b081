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

# --- SIP test tools: SIPp and kamailio ------------------------------------
# The SIPp end-to-end test (agent/cmd/leadport-agent/e2e_sipp_test.go) and
# scripts/bench-proxy.sh need `sipp` (Debian package sip-tester) and
# `kamailio` (the reference stateful proxy; the base package carries the
# sl, tm, rr, maxfwd, textops and pv modules). Both run in the foreground
# from the scripts on loopback ports: kamailio's system service must not run,
# so a policy-rc.d (unless one exists, as in containers) keeps the package
# from starting it, and it is disabled and stopped afterwards.
# SETUP_SIP=0 skips this block.
if [ "${SETUP_SIP:-1}" != 0 ]; then
  sip_need=()
  command -v sipp >/dev/null || sip_need+=(sip-tester)
  command -v kamailio >/dev/null || [ -x /usr/sbin/kamailio ] || sip_need+=(kamailio)
  if [ ${#sip_need[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
      echo "setup: missing ${sip_need[*]}; install them (apt-get install ${sip_need[*]})" >&2
      exit 1
    fi
    own_policy=
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      printf '#!/bin/sh\n# setup.sh: no service starts during this install\nexit 101\n' >/usr/sbin/policy-rc.d
      chmod 755 /usr/sbin/policy-rc.d
      own_policy=1
      trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${sip_need[@]}"
    if [ -n "$own_policy" ]; then
      rm -f /usr/sbin/policy-rc.d
      trap - EXIT
    fi
    if [ -d /run/systemd/system ]; then
      systemctl disable --now kamailio >/dev/null 2>&1 || true
    else
      systemctl disable kamailio >/dev/null 2>&1 || true
      [ -x /etc/init.d/kamailio ] && /etc/init.d/kamailio stop >/dev/null 2>&1 || true
    fi
  fi
fi

# --- MQTT brokers: mosquitto and nats-server --------------------------------
# The sync tests run Debian's mosquitto (TLS with client certificates, a
# per-device ACL) and nats-server (MQTT over JetStream) in the foreground on
# free loopback ports; their system services must not run. SETUP_MQTT=0
# skips this block.
if [ "${SETUP_MQTT:-1}" != 0 ]; then
  mqtt_need=()
  command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || mqtt_need+=(mosquitto)
  command -v nats-server >/dev/null || mqtt_need+=(nats-server)
  if [ ${#mqtt_need[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
      echo "setup: missing ${mqtt_need[*]}; install them (apt-get install ${mqtt_need[*]})" >&2
      exit 1
    fi
    own_policy=
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      printf '#!/bin/sh\n# setup.sh: no service starts during this install\nexit 101\n' >/usr/sbin/policy-rc.d
      chmod 755 /usr/sbin/policy-rc.d
      own_policy=1
      trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${mqtt_need[@]}"
    if [ -n "$own_policy" ]; then
      rm -f /usr/sbin/policy-rc.d
      trap - EXIT
    fi
    for svc in mosquitto nats-server; do
      if [ -d /run/systemd/system ]; then
        systemctl disable --now "$svc" >/dev/null 2>&1 || true
      else
        systemctl disable "$svc" >/dev/null 2>&1 || true
        [ -x "/etc/init.d/$svc" ] && "/etc/init.d/$svc" stop >/dev/null 2>&1 || true
      fi
    done
  fi
fi

# --- A browser for the status page test: Debian's chromium, headless ------
# SETUP_BROWSER=0 skips it.
if [ "${SETUP_BROWSER:-1}" != 0 ] && ! command -v chromium >/dev/null; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: missing chromium; install it (apt-get install chromium)" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium
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
