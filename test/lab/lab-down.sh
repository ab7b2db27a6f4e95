#!/bin/bash
# Tear the lab down (idempotent). Touches only the $LAB_NS_PREFIX-* namespaces and $LAB_DIR, and
# kills only processes that live in those namespaces (libvirtd, QEMU, agents, tcpdump ...), by PID.
#   LAB_PURGE=1   also drop the QEMU capabilities cache and the last logs
# The state of the last lab (logs, configs, migration runs, agent logs) is moved to
# $LAB_DIR/last-logs for a post-mortem.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lab-env.sh"

exists() { [ -e "/run/netns/${LAB_NETNS[$1]}" ]; }
nspids() { local n; for n in sw a b c; do exists "$n" && ip netns pids "${LAB_NETNS[$n]}" 2>/dev/null; done; }

# a clean shutdown first: libvirtd stops its QEMUs, then exits
for h in a b; do
    pid=$(lab_libvirtd_pid "$h") || continue
    kill -0 "$pid" 2>/dev/null || continue
    for dom in $(timeout 10 virsh -q -c "$(lab_uri "$h")" list --name 2>/dev/null); do
        timeout 10 virsh -q -c "$(lab_uri "$h")" destroy "$dom" >/dev/null 2>&1
    done
    kill "$pid" 2>/dev/null
done
# then whatever else runs in the namespaces
pids=$(nspids)
# shellcheck disable=SC2086
[ -n "$pids" ] && kill $pids 2>/dev/null
for _ in $(seq 1 50); do pids=$(nspids); [ -z "$pids" ] && break; sleep 0.1; done
# shellcheck disable=SC2086
[ -n "$pids" ] && kill -9 $pids 2>/dev/null

for h in a b; do mountpoint -q "$LAB_STATE/ns/$h.mnt" 2>/dev/null && umount "$LAB_STATE/ns/$h.mnt"; done
mountpoint -q "$LAB_STATE/ns" 2>/dev/null && umount "$LAB_STATE/ns"
for n in sw a b c; do exists "$n" && ip netns del "${LAB_NETNS[$n]}"; done
if [ -d "$LAB_STATE" ]; then
    rm -rf "$LAB_DIR/last-logs"
    mv "$LAB_STATE" "$LAB_DIR/last-logs"
    rm -rf "$LAB_DIR/last-logs/ns"
fi
[ "${LAB_PURGE:-0}" = 1 ] && rm -rf "$LAB_DIR/cache" "$LAB_DIR/last-logs"
exit 0
