#!/bin/sh
# After removal. The system user is kept (Debian practice: files it owned
# may remain, and a reused UID would inherit them).
set -e
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || true
fi
exit 0
