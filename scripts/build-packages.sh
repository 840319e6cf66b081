#!/usr/bin/env bash
# deb, rpm, apk and ipk packages of leadport-agent for amd64, arm64 and armv7
# into dist/, with nfpm (pinned, run through `go run`; not in go.mod) and
# packaging/nfpm.yaml.
#
#   scripts/build-packages.sh                     all formats, all arches
#   PKG_FORMATS="deb" PKG_ARCHES="amd64" scripts/build-packages.sh
#   PKG_VERSION=1.2.3 scripts/build-packages.sh   another version than git's
#
# Version: vX.Y.Z when HEAD is tagged so; otherwise the next patch after the
# last such tag (0.0.1 without one) as a pre-release, gitYYYYMMDDhhmmss of
# the commit time, which sorts below the release it leads to in every format
# (deb/ipk 0.0.1~git..., rpm 0.0.1~git..., apk 0.0.1_git...).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"

NFPM="github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.45.2"
formats=(${PKG_FORMATS:-deb rpm apk ipk})
arches=(${PKG_ARCHES:-amd64 arm64 armv7})

# Version.
VERSION=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}
COMMIT=${COMMIT:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}
if [ -z "${PKG_VERSION:-}" ]; then
  if [[ $(git describe --tags --exact-match --match 'v[0-9]*' 2>/dev/null || true) =~ ^v([0-9]+\.[0-9]+\.[0-9]+)$ ]]; then
    PKG_VERSION=${BASH_REMATCH[1]}
    PKG_PRERELEASE=
  else
    last=$(git describe --tags --abbrev=0 --match 'v[0-9]*.[0-9]*.[0-9]*' 2>/dev/null || echo v0.0.0)
    IFS=. read -r ma mi pa <<<"${last#v}"
    PKG_VERSION="$ma.$mi.$((${pa%%[!0-9]*} + 1))"
    PKG_PRERELEASE="git$(git log -1 --format=%cd --date=format-local:%Y%m%d%H%M%S 2>/dev/null || date -u +%Y%m%d%H%M%S)"
  fi
fi
export PKG_VERSION PKG_PRERELEASE=${PKG_PRERELEASE:-}

# Binaries: the same static, stripped builds and names as scripts/cross.sh.
PKG=github.com/leadport/leadport-agent
LDFLAGS="-s -w -X $PKG/agent.version=$VERSION -X $PKG/agent.commit=$COMMIT"
work=dist/.pkgbuild
mkdir -p dist "$work"
declare -A nfpm_arch=([amd64]=amd64 [arm64]=arm64 [armv7]=arm7)
for a in "${arches[@]}"; do
  [ -n "${nfpm_arch[$a]:-}" ] || { echo "unknown arch $a (want amd64, arm64, armv7)" >&2; exit 2; }
  goarch=$a goarm=
  [ "$a" = armv7 ] && goarch=arm goarm=7
  env CGO_ENABLED=0 GOOS=linux GOARCH="$goarch" ${goarm:+GOARM=$goarm} \
    go build -trimpath -ldflags "$LDFLAGS" -o "dist/leadport-agent-linux-$a" ./agent/cmd/leadport-agent
done

# Configs: the example as it is; on OpenWrt /var is RAM, so the ipk's keeps
# the store on flash in /etc/leadport-agent/data.
cp packaging/leadport-agent.example.yaml "$work/agent.yaml"
sed 's|^data_dir: /var/lib/leadport-agent$|data_dir: /etc/leadport-agent/data|' \
  packaging/leadport-agent.example.yaml > "$work/agent-openwrt.yaml"
grep -q '^data_dir: /etc/leadport-agent/data$' "$work/agent-openwrt.yaml" ||
  { echo "packaging/leadport-agent.example.yaml: no 'data_dir: /var/lib/leadport-agent' line to adapt for OpenWrt" >&2; exit 1; }

# go run caches the nfpm binary after its first build.
nfpm() { go run "$NFPM" "$@"; }

printf '%-60s %10s\n' package bytes
for a in "${arches[@]}"; do
  for f in "${formats[@]}"; do
    export ARCH=${nfpm_arch[$a]} BINARY="dist/leadport-agent-linux-$a" AGENT_CONFIG="$work/agent.yaml"
    target=dist/
    case $f in
      deb|rpm|apk) ;;
      ipk)
        AGENT_CONFIG="$work/agent-openwrt.yaml"
        # Architecture "all" (see nfpm.yaml): name the file by arch.
        v=$PKG_VERSION${PKG_PRERELEASE:+~$PKG_PRERELEASE}
        target="dist/leadport-agent_${v}-1_$a.ipk"
        ;;
      *) echo "unknown format $f (want deb, rpm, apk, ipk)" >&2; exit 2 ;;
    esac
    out=$(nfpm package --config packaging/nfpm.yaml --packager "$f" --target "$target" 2>&1) ||
      { echo "$out" >&2; exit 1; }
    file=$(sed -n 's/.*created package: //p' <<<"$out" | tail -n 1)
    printf '%-60s %10d\n' "$file" "$(stat -c %s "$file")"
  done
done
