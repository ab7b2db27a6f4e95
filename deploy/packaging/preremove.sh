#!/bin/sh
# Before removal (deb: remove; rpm: $1 = 0). Not on upgrade.
set -e
case "$1" in
remove | 0)
    if [ -d /run/systemd/system ]; then
        systemctl disable --now rarp-announce.service || true
    fi
    ;;
esac
exit 0
