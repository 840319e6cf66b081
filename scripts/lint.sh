#!/usr/bin/env bash
# gofmt and go vet, for this machine and for a 32-bit target: ARMv6/v7 and
# MIPS boxes are 32-bit, where bbolt can map at most 1-2 GB.
set -euo pipefail
cd "$(dirname "$0")/.."
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then
  echo "gofmt would change:"; echo "$unformatted"; exit 1
fi
go vet ./...
GOARCH=386 go vet ./...
GOOS=linux GOARCH=arm GOARM=6 CGO_ENABLED=0 go build -o /dev/null ./agent/cmd/leadport-agent
GOOS=linux GOARCH=mipsle GOMIPS=softfloat CGO_ENABLED=0 go build -o /dev/null ./agent/cmd/leadport-agent
echo "lint: ok"
