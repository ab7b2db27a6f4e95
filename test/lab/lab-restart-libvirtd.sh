#!/bin/bash
# Kill hypervisor a|b's libvirtd with SIGKILL (no clean shutdown: clients see the socket drop,
# as when the daemon crashes) and start it again. QEMU processes keep running; libvirtd
# reattaches to them from /run/libvirt/qemu when it restarts.
#   lab-restart-libvirtd.sh a|b        LAB_RESTART_DELAY=s between kill and start (default 0.5)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lab-env.sh"
h=${1:-}
case $h in a|b) ;; *) die "usage: $0 a|b" ;; esac
pid=$(lab_libvirtd_pid "$h") || die "libvirtd $h was never started"
kill -0 "$pid" 2>/dev/null || die "libvirtd $h is not running"
# gone, or a zombie: the daemonized libvirtd's parent is init, which may reap it late
dead() { ! kill -0 "$pid" 2>/dev/null || [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" = Z ]; }
kill -KILL "$pid"
for _ in $(seq 1 50); do dead && break; sleep 0.05; done
dead || die "libvirtd $h (pid $pid) survived SIGKILL"
log "libvirtd $h (pid $pid) killed with SIGKILL"
sleep "${LAB_RESTART_DELAY:-0.5}"
lab_libvirtd_start "$h"
log "libvirtd $h restarted, pid $(lab_libvirtd_pid "$h"); domains running there: $(lab_virsh "$h" list --name | paste -sd' ' -)"
