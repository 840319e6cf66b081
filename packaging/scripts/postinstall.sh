#!/bin/sh
# leadport-agent package: after install or upgrade (deb postinst, rpm %post,
# apk post-install and post-upgrade, ipk postinst).
#
# Creates the system user leadport-agent, the data directory (0750, owned by
# it) and lets its group read /etc/leadport-agent. It does not enable or start
# the service: the example config must be edited first (README, "Install on
# a PBX"). An upgrade restarts an agent that is running.
set -e

NAME=leadport-agent
ETC=/etc/leadport-agent
DATA=/var/lib/leadport-agent
# OpenWrt keeps /var in RAM: its config puts the store on flash.
[ -f /etc/openwrt_release ] && DATA=$ETC/data

# Building a firmware image (OpenWrt): nothing to do on the build host.
[ -z "${IPKG_INSTROOT:-}" ] || exit 0

nologin() {
	for s in /usr/sbin/nologin /sbin/nologin; do
		if [ -x "$s" ]; then echo "$s"; return; fi
	done
	echo /bin/false
}

ensure_user() {
	id -u "$NAME" >/dev/null 2>&1 && return 0
	if command -v useradd >/dev/null 2>&1; then
		useradd --system --user-group --home-dir "$DATA" --no-create-home \
			--shell "$(nologin)" --comment "Leadport edge agent" "$NAME"
	elif command -v adduser >/dev/null 2>&1 && command -v addgroup >/dev/null 2>&1; then
		# BusyBox (Alpine)
		addgroup -S "$NAME" 2>/dev/null || true
		adduser -S -D -H -h "$DATA" -s "$(nologin)" -G "$NAME" -g "Leadport edge agent" "$NAME"
	elif [ -f /lib/functions.sh ]; then
		# OpenWrt: base-files' helpers, one id free as uid and gid from 200 up
		. /lib/functions.sh
		id=200
		while grep -q "^[^:]*:[^:]*:$id:" /etc/passwd /etc/group; do id=$((id + 1)); done
		group_exists "$NAME" || group_add "$NAME" "$id"
		gid=$(grep "^$NAME:" /etc/group | cut -d: -f3)
		user_exists "$NAME" || user_add "$NAME" "$id" "$gid" "Leadport edge agent" "/var/run/$NAME" /bin/false
	else
		echo "$NAME: cannot create the user $NAME: no useradd, adduser or OpenWrt functions" >&2
		exit 1
	fi
}

# An ipk installs on any CPU (OpenWrt's architecture names are per board):
# make sure this binary runs here.
if ! /usr/bin/leadport-agent version >/dev/null 2>&1; then
	echo "$NAME: /usr/bin/leadport-agent does not run on this machine ($(uname -m)): install the package built for it" >&2
	exit 1
fi

ensure_user
mkdir -p "$DATA"
chown "$NAME:$NAME" "$DATA"
chmod 0750 "$DATA"
if [ -d "$ETC" ]; then
	chgrp "$NAME" "$ETC"
	chmod 0750 "$ETC"
fi
if [ -f "$ETC/agent.yaml" ]; then
	chgrp "$NAME" "$ETC/agent.yaml"
	chmod 0640 "$ETC/agent.yaml"
fi

enabled=no
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || true
	systemctl try-restart "$NAME.service" >/dev/null 2>&1 || true
	systemctl is-enabled --quiet "$NAME.service" 2>/dev/null && enabled=yes
	hint="systemctl enable --now $NAME"
elif [ -f /etc/openwrt_release ]; then
	if /etc/init.d/$NAME enabled 2>/dev/null; then
		enabled=yes
		/etc/init.d/$NAME running 2>/dev/null && /etc/init.d/$NAME restart || true
	fi
	hint="/etc/init.d/$NAME enable; /etc/init.d/$NAME start"
elif command -v rc-service >/dev/null 2>&1; then
	if rc-service "$NAME" status >/dev/null 2>&1; then
		enabled=yes
		rc-service "$NAME" restart >/dev/null 2>&1 || true
	fi
	hint="rc-update add $NAME default; rc-service $NAME start"
else
	hint="leadport-agent install; leadport-agent start"
fi
if [ "$enabled" = no ]; then
	echo "$NAME: edit $ETC/agent.yaml, check it with \`leadport-agent doctor\`, then start the service: $hint"
fi
exit 0
