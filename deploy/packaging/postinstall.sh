#!/bin/sh
# After install or upgrade (deb: configure; rpm: $1 = 1 or 2).
set -e

# The system user the unit runs as, in no supplementary group: the
# "libvirt" group (root-equivalent) is an opt-in for the qemu strategy only,
# see rarp-announce-libvirt.sysusers in docs/deploy.md.
if command -v systemd-sysusers >/dev/null 2>&1; then
    systemd-sysusers /usr/lib/sysusers.d/rarp-announce.conf
else
    getent passwd rarp-announce >/dev/null ||
        useradd --system --user-group --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin --comment "rarp-announce agent" rarp-announce
fi

# The agent is not enabled here: review /etc/rarp-announce/rarp-announce.yaml,
# then "systemctl enable --now rarp-announce". An upgrade restarts it if it
# runs.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || true
    systemctl try-restart rarp-announce.service || true
fi
exit 0
