#!/bin/sh
# leadport-agent package: after removal (deb postrm, rpm %postun, apk
# post-deinstall, ipk postrm). Removal keeps the data directory (and the
# user); only a deb purge (dpkg -P, apt purge) deletes the data and
# /etc/leadport-agent. Without a purge: rm -rf /var/lib/leadport-agent.
set -e
NAME=leadport-agent
[ -z "${IPKG_INSTROOT:-}" ] || exit 0

if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || true
fi
case "${1:-remove}" in
	purge)
		rm -rf /var/lib/$NAME /etc/$NAME /run/$NAME
		;;
	remove|0)
		DATA=/var/lib/$NAME
		[ -f /etc/openwrt_release ] && DATA=/etc/$NAME/data
		if [ -d "$DATA" ]; then
			echo "$NAME: removed; its data is kept in $DATA (delete it with: rm -rf $DATA)"
		fi
		;;
esac
exit 0
