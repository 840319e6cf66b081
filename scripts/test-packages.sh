#!/usr/bin/env bash
# Installs the amd64 .deb on this Debian machine with dpkg, checks what it put
# where (files, modes, owners, the user, the unit), runs `leadport-agent
# doctor` against the installed config, then removes the package (data kept)
# and purges it (data gone). Never starts the service. Needs root, dpkg.
#
#   scripts/test-packages.sh            builds the deb (scripts/build-packages.sh)
#   DEB=dist/x.deb scripts/test-packages.sh
#
# Decides by what is really installed: where the package or a unit of
# `leadport-agent install` is there, that is a real installation, and the
# script refuses to touch it. A data or config directory without either (a
# `make run` as root made /var/lib/leadport-agent) is set aside for the
# test and put back afterwards, byte for byte; a run that was killed is
# recovered by the next one (the state file below says what was moved).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin:/usr/sbin:/sbin"

NAME=leadport-agent
DATA=/var/lib/$NAME
ETC=/etc/$NAME
UNIT=/usr/lib/systemd/system/$NAME.service
fails=0
ok() { echo "ok:   $*"; }
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
check() { # description, command...
  local what=$1; shift
  if "$@" >/dev/null 2>&1; then ok "$what"; else fail "$what"; fi
}
# stat_is PATH "mode owner:group"
stat_is() {
  local got
  got=$(stat -c '%a %U:%G' "$1" 2>/dev/null || echo missing)
  if [ "$got" = "$2" ]; then ok "$1 is $2"; else fail "$1 is $got, want $2"; fi
}

[ "$(id -u)" = 0 ] || { echo "test-packages: needs root (dpkg -i)" >&2; exit 1; }
command -v dpkg >/dev/null || { echo "test-packages: needs dpkg (Debian)" >&2; exit 1; }

# STATE lists what a run set aside ("aside ORIGINAL"), whether it had
# installed the package ("installed") and whether the package made the user
# ("user"), so that a run killed half-way is
# undone by the next, and only what the test itself made is removed.
STATE=/var/tmp/$NAME-test-packages.state
ASIDE=.set-aside-by-test
pkg_installed() { dpkg-query -W -f='${Status}' $NAME 2>/dev/null | grep -q 'install\|config-files'; }
restore() {
  local kind orig
  [ -e "$STATE" ] || return 0
  while read -r kind orig; do
    [ "$kind" = aside ] || continue
    if [ -e "$orig$ASIDE" ]; then
      rm -rf "$orig"
      mv "$orig$ASIDE" "$orig"
      echo "test-packages: put back $orig"
    fi
  done <"$STATE"
  rm -f "$STATE"
}
if [ -e "$STATE" ]; then
  echo "test-packages: an earlier run did not finish ($STATE); undoing it"
  if grep -qx installed "$STATE" && pkg_installed; then dpkg -P $NAME >/dev/null; fi
  if grep -qx user "$STATE" && getent passwd $NAME >/dev/null; then
    userdel $NAME >/dev/null 2>&1 || true
    getent group $NAME >/dev/null && groupdel $NAME >/dev/null 2>&1 || true
  fi
  restore
fi

# A real installation: the package, or a unit that `leadport-agent install`
# wrote. Never touched.
if pkg_installed; then
  echo "test-packages: the $NAME package is installed here; not touching a real installation (remove it, or run this test on another machine)" >&2; exit 1
fi
for unit in /etc/systemd/system/$NAME.service /etc/init.d/$NAME; do
  if [ -e "$unit" ]; then
    echo "test-packages: $unit is installed (leadport-agent install); not touching a real installation" >&2; exit 1
  fi
done
# An agent running on these directories (make run in another terminal) holds
# the store's lock: moving its data away under it is not ours to do.
if [ -e "$DATA/agent.db" ] && ! flock -n -x "$DATA/agent.db" true 2>/dev/null; then
  echo "test-packages: an agent is running with its data in $DATA; stop it first" >&2; exit 1
fi

: >"$STATE"
for d in "$DATA" "$ETC"; do
  if [ -e "$d" ]; then
    if [ -e "$d$ASIDE" ]; then
      echo "test-packages: both $d and $d$ASIDE exist; one was set aside by a test that did not finish: keep the one you want and remove the other" >&2
      rm -f "$STATE"; exit 1
    fi
    echo "aside $d" >>"$STATE"
    sync -f "$STATE" 2>/dev/null || sync
    mv "$d" "$d$ASIDE"
    echo "test-packages: set $d aside for the test"
  fi
done

user_before=no
getent passwd $NAME >/dev/null && user_before=yes
[ $user_before = yes ] || echo user >>"$STATE"

if [ -z "${DEB:-}" ]; then
  PKG_FORMATS=deb PKG_ARCHES=amd64 scripts/build-packages.sh
  DEB=$(ls -t dist/${NAME}_*_amd64.deb | head -n 1)
fi
echo "package: $DEB"

cleanup() {
  dpkg -P $NAME >/dev/null 2>&1 || true
  if [ "$user_before" = no ] && getent passwd $NAME >/dev/null; then
    userdel $NAME >/dev/null 2>&1 || true
    getent group $NAME >/dev/null && groupdel $NAME >/dev/null 2>&1 || true
  fi
  restore
}
trap cleanup EXIT

# Install.
echo installed >>"$STATE"
out=$(dpkg -i "$DEB" 2>&1) || { echo "$out"; fail "dpkg -i"; exit 1; }
echo "$out" | sed 's/^/  dpkg: /'
ok "dpkg -i"

# Files.
stat_is /usr/bin/$NAME "755 root:root"
check "$NAME version runs" /usr/bin/$NAME version
stat_is "$UNIT" "644 root:root"
check "the unit is packaging/$NAME.service" cmp "$UNIT" packaging/$NAME.service
stat_is "$ETC" "750 root:$NAME"
stat_is "$ETC/agent.yaml" "640 root:$NAME"
check "agent.yaml is the example" cmp "$ETC/agent.yaml" packaging/$NAME.example.yaml
check "agent.yaml is a conffile" bash -c "dpkg-query -W -f='\${Conffiles}' $NAME | grep -q ' $ETC/agent.yaml '"
stat_is "$DATA" "750 $NAME:$NAME"

# The user.
IFS=: read -r _ _ uid gid _ home shell < <(getent passwd $NAME) || true
if [ -n "${uid:-}" ] && [ "$uid" -lt 1000 ]; then ok "user $NAME is a system user (uid $uid)"; else fail "user $NAME: uid ${uid:-none}"; fi
[ "${home:-}" = "$DATA" ] && ok "home $home" || fail "home ${home:-none}, want $DATA"
case "${shell:-}" in */nologin|/bin/false) ok "shell $shell" ;; *) fail "shell ${shell:-none}" ;; esac
[ "$(getent group $NAME | cut -d: -f3)" = "${gid:-x}" ] && ok "group $NAME (gid $gid)" || fail "group $NAME"

# The service is installed, not enabled or started.
[ ! -e /etc/systemd/system/multi-user.target.wants/$NAME.service ] && ok "service not enabled" || fail "service enabled by the package"
if pgrep -f "^/usr/bin/$NAME" >/dev/null; then fail "the package started /usr/bin/$NAME"; else ok "the package started no agent"; fi

# The unit parses, and what systemd makes of its sandbox.
if command -v systemd-analyze >/dev/null; then
  check "systemd-analyze verify $UNIT" systemd-analyze verify "$UNIT"
  exposure=$(systemd-analyze security --offline=yes "$UNIT" 2>/dev/null | sed -n 's/.*Overall exposure level for [^:]*: *//p')
  [ -n "$exposure" ] && ok "systemd-analyze security: $exposure" || echo "skip: systemd-analyze security --offline=yes does not work here"
else
  fail "no systemd-analyze (Debian's systemd; scripts/setup.sh installs it)"
fi

# The config as the service user sees it.
check "user $NAME can read and validate the config" runuser -u $NAME -- /usr/bin/$NAME config check "$ETC/agent.yaml"

# doctor against the installed config: 0 (all OK) or 1 (a FAIL: the example
# names a broker and certificates that do not exist here), with its checks.
set +e
dout=$(timeout 60 /usr/bin/$NAME doctor --config "$ETC/agent.yaml" 2>&1)
drc=$?
set -e
if [ "$drc" -le 1 ] && grep -Eq '(^|[^A-Z])(OK|WARN|FAIL)([^A-Z]|$)' <<<"$dout"; then
  ok "doctor exit $drc, $(grep -Ec '(^|[^A-Z])(OK|WARN|FAIL)([^A-Z]|$)' <<<"$dout") check lines"
  sed 's/^/  doctor: /' <<<"$dout"
else
  fail "doctor exit $drc"
  sed 's/^/  doctor: /' <<<"$dout"
fi

# Data the agent would have written, then removal: data and config stay.
install -o $NAME -g $NAME -m 0600 /dev/null "$DATA/agent.db"
dpkg -r $NAME >/dev/null
[ ! -e /usr/bin/$NAME ] && ok "dpkg -r removed the binary" || fail "binary left by dpkg -r"
[ ! -e "$UNIT" ] && ok "dpkg -r removed the unit" || fail "unit left by dpkg -r"
[ -f "$DATA/agent.db" ] && ok "dpkg -r kept $DATA" || fail "dpkg -r deleted $DATA"
[ -f "$ETC/agent.yaml" ] && ok "dpkg -r kept $ETC/agent.yaml" || fail "dpkg -r deleted the config"

# Purge: everything goes.
dpkg -P $NAME >/dev/null
[ ! -e "$DATA" ] && ok "dpkg -P deleted $DATA" || fail "dpkg -P left $DATA"
[ ! -e "$ETC" ] && ok "dpkg -P deleted $ETC" || fail "dpkg -P left $ETC"
dpkg-query -W $NAME >/dev/null 2>&1 && fail "dpkg still knows $NAME" || ok "package gone"

if [ "$fails" -ne 0 ]; then
  echo "test-packages: $fails failed"; exit 1
fi
echo "test-packages: ok"
