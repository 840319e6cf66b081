#!/usr/bin/env bash
# Static, stripped binaries (CGO off) for the devices the agent runs on, into
# dist/, with each binary's size.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}
COMMIT=${COMMIT:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}
PKG=github.com/leadport/leadport-agent
LDFLAGS="-s -w -X $PKG/agent.version=$VERSION -X $PKG/agent.commit=$COMMIT"
mkdir -p dist
# os/arch[/variant]: variant is GOARM for arm, GOMIPS for mipsle.
targets=(
  linux/amd64 linux/arm64 linux/arm/7 linux/arm/6 linux/mipsle/softfloat
  windows/amd64 darwin/arm64
)
printf '%-44s %10s\n' binary bytes
for t in "${targets[@]}"; do
  IFS=/ read -r os arch variant <<<"$t"
  name="leadport-agent-$os-$arch${variant:+v$variant}"
  [ "$arch" = mipsle ] && name="leadport-agent-$os-mipsle-$variant"
  [ "$os" = windows ] && name="$name.exe"
  env CGO_ENABLED=0 GOOS="$os" GOARCH="$arch" \
    ${variant:+$([ "$arch" = arm ] && echo GOARM=$variant || echo GOMIPS=$variant)} \
    go build -trimpath -ldflags "$LDFLAGS" -o "dist/$name" ./agent/cmd/leadport-agent
  printf '%-44s %10d\n' "$name" "$(stat -c %s "dist/$name")"
done
