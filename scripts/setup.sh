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

if ! command -v go >/dev/null; then
  echo "setup: Go is missing: this project expects Go 1.26 at /usr/local/go (Debian's golang package is too old)" >&2
  exit 1
fi
# Modules come through the Go module proxy; fetch them once, up front, so a
# network problem shows here and not as a test failure.
cd "$(dirname "$0")/.."
go mod download
echo "setup: ok ($(go version))"
