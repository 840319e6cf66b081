#!/usr/bin/env bash
# Installs what the build and the tests need on a bare Debian machine of
# ours; `make test` runs it first. Idempotent and quick when everything is
# already there (no apt-get at all then).
#
# Where it cannot install (not root, no apt-get), it prints one line per
# missing tool with what to install, and fails: the suite must not run
# with tests that would skip or fail for a missing tool.
#
#   SETUP_SIP=0      leave out sipp and kamailio
#   SETUP_MQTT=0     leave out mosquitto and nats-server
#   SETUP_BROWSER=0  leave out chromium
set -euo pipefail
export PATH="$PATH:/usr/local/go/bin:/usr/sbin:/sbin"
cd "$(dirname "$0")/.."

if ! command -v go >/dev/null; then
  echo "setup: go is missing: this project expects Go 1.26 at /usr/local/go (Debian's golang package is too old)" >&2
  exit 1
fi

# have TOOL: on PATH or in the sbin directories (daemons live there); a
# kamailio module (NAME.so) in kamailio's module directory.
have() {
  case "$1" in
    *.so) compgen -G "/usr/lib/*/kamailio/modules/$1" >/dev/null || [ -e "/usr/lib/kamailio/modules/$1" ] ;;
    *) command -v "$1" >/dev/null || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ] ;;
  esac
}

# Each line: tool, the Debian package that provides it, the system services
# the package would start (kept off: the tests run their own instances on
# loopback ports), what needs it.
tools=(
  "make make - the README's commands"
  "git git - version stamps, the newcomer check"
  "mount mount - tmpfs tests of a full and a read-only disk"
  "runuser util-linux - tests that run as the service user"
  "flock util-linux - the package test: is an agent running on the data"
  "dpkg-deb dpkg - the package test (TestPackagesDeb)"
  "systemd-analyze systemd - the unit checks and the package test"
)
if [ "${SETUP_SIP:-1}" != 0 ]; then
  tools+=(
    "sipp sip-tester - SIPp end-to-end tests, make bench-proxy"
    "kamailio kamailio kamailio the reference proxy of make bench-proxy"
    "secsipid.so kamailio-secsipid-modules - the edge that verifies the agent's Identity (TestSIPpIdentity)"
    "secsipidx secsipidx - the stock Identity verifier, against detect/passport"
    "openssl openssl - reading the call-signing key file as OpenSSL does"
    "svwar sipvicious - SIP scanners (svmap, svwar, svcrack) against the agent (TestScanners)"
    "baresip baresip-core - real softphones registering and calling through the agent (TestRealPhones)"
  )
fi
if [ "${SETUP_MQTT:-1}" != 0 ]; then
  tools+=(
    "mosquitto mosquitto mosquitto TLS and ACL tests, make bench-sync"
    "nats-server nats-server nats-server MQTT over JetStream tests"
  )
fi
if [ "${SETUP_BROWSER:-1}" != 0 ]; then
  tools+=("chromium chromium - the status page tests (headless)")
fi

missing=() pkgs=() services=()
for entry in "${tools[@]}"; do
  read -r tool pkg svc why <<<"$entry"
  have "$tool" && continue
  missing+=("$tool|$pkg|$why")
  pkgs+=("$pkg")
  [ "$svc" = - ] || services+=("$svc")
done

if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
    why="not root"
    [ "$(id -u)" -ne 0 ] || why="no apt-get"
    for m in "${missing[@]}"; do
      IFS='|' read -r tool pkg what <<<"$m"
      echo "setup: $tool is missing ($what): install Debian's $pkg (apt-get install $pkg)" >&2
    done
    echo "setup: cannot install them here ($why); the suite needs every one" >&2
    exit 1
  fi
  # No service starts during the install (a policy-rc.d, unless one exists,
  # as in containers); the services are disabled afterwards.
  own_policy=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\n# setup.sh: no service starts during this install\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    own_policy=1
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  echo "setup: installing ${pkgs[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
  if [ -n "$own_policy" ]; then
    rm -f /usr/sbin/policy-rc.d
    trap - EXIT
  fi
  for svc in "${services[@]}"; do
    if [ -d /run/systemd/system ]; then
      systemctl disable --now "$svc" >/dev/null 2>&1 || true
    else
      systemctl disable "$svc" >/dev/null 2>&1 || true
      [ -x "/etc/init.d/$svc" ] && "/etc/init.d/$svc" stop >/dev/null 2>&1 || true
    fi
  done
  for m in "${missing[@]}"; do
    IFS='|' read -r tool pkg _ <<<"$m"
    have "$tool" || { echo "setup: $pkg installed but $tool is still missing" >&2; exit 1; }
  done
fi

# The three-node NATS cluster of the failover tests and `make bench-fleet`
# runs nats-server at a pinned version, built from its Go module (Debian's
# 2.9 refuses MQTT topics with a '.' and has no QoS 2: docs/fleet.md), kept
# apart from Debian's. The version is synctest.NATSVersion's; where it goes,
# synctest.NATSServerPath's (LEADPORT_NATS_SERVER: a binary of your own).
if [ "${SETUP_MQTT:-1}" != 0 ] && [ -z "${LEADPORT_NATS_SERVER:-}" ]; then
  nats_version=v2.14.10
  nats_bin="${XDG_CACHE_HOME:-$HOME/.cache}/leadport-tools/nats-server-$nats_version/nats-server"
  if ! "$nats_bin" --version 2>/dev/null | grep -qF "${nats_version#v}"; then
    echo "setup: building nats-server $nats_version into $nats_bin"
    GOBIN="$(dirname "$nats_bin")" GOFLAGS=-mod=mod CGO_ENABLED=0 go install "github.com/nats-io/nats-server/v2@$nats_version"
  fi
fi

# Modules come through the Go module proxy; fetch them once, up front, so a
# network problem shows here and not as a test failure.
go mod download
echo "setup: ok ($(go version))"
