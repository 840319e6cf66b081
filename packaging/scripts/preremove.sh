#!/bin/sh
# leadport-agent package: before removal (deb prerm, rpm %preun, apk
# pre-deinstall, ipk prerm). Stops and disables the service when the package
# goes away; an upgrade leaves it running (postinstall restarts it).
set -e
NAME=leadport-agent

# deb: remove|upgrade|deconfigure|failed-upgrade; rpm: 0 = erase, 1 = upgrade;
# apk: no argument (pre-upgrade is another script); ipk: remove|upgrade.
case "${1:-remove}" in
	remove|purge|0) ;;
	*) exit 0 ;;
esac
[ -z "${IPKG_INSTROOT:-}" ] || exit 0

if [ -d /run/systemd/system ]; then
	systemctl disable --now "$NAME.service" >/dev/null 2>&1 || true
elif command -v systemctl >/dev/null 2>&1; then
	systemctl disable "$NAME.service" >/dev/null 2>&1 || true
elif [ -f /etc/openwrt_release ] && [ -x /etc/init.d/$NAME ]; then
	/etc/init.d/$NAME stop >/dev/null 2>&1 || true
	/etc/init.d/$NAME disable >/dev/null 2>&1 || true
elif command -v rc-service >/dev/null 2>&1; then
	rc-service "$NAME" stop >/dev/null 2>&1 || true
	rc-update del "$NAME" >/dev/null 2>&1 || true
fi
exit 0
