#!/bin/bash
# The container image itself, run in the two-hypervisor lab the way the DaemonSet (and the
# kolla recipe) run it: UID 0, every capability dropped but NET_RAW and NET_ADMIN,
# no-new-privileges, read-only root file system, the hypervisor's network namespace, its libvirt
# run directory mounted read-only at /run/libvirt. QEMU's own announce is suppressed: only the
# agent moves the switch. Prints PASS/FAIL lines and "N passed, M failed"; exit 1 on any
# failure. Run as root. About 60 s plus the image build.
#
#   RARP_IMAGE=name     the image to run (default: built here with `make image`, removed after)
#   LAB_KEEP=1          leave the lab up afterwards
#
# Containers run with `podman --runtime runc --cgroup-manager cgroupfs` and a containers.conf
# holding `default_ulimits = []`: crun refuses this kernel's hybrid cgroups, and its setrlimit
# calls fail here.
#
# Steps (the VM starts on A):
#   1. NET_RAW only with fdb_repair on: the container exits 1 at once naming CAP_NET_ADMIN
#      (and the binary does exec: it has no file capabilities)
#   2. agents as the DaemonSet runs them (NET_RAW + NET_ADMIN) on both hypervisors: they reach
#      libvirt as UID 0 on the read-only socket; A->B: the switch follows, the client pings
#   3. agents with NET_RAW only and fdb_repair: false; B->A: the switch follows
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
. "$HERE/lab-env.sh"
. "$HERE/lab-e2e-lib.sh"
e2e_prepare

NAME=$LAB_NS_PREFIX-agent
export CONTAINERS_CONF=$LAB_DIR/containers.conf
mkdir -p "$LAB_DIR"
printf '[containers]\ndefault_ulimits = []\n' >"$CONTAINERS_CONF"
pod() { podman --runtime runc --cgroup-manager cgroupfs "$@"; }
pods_down() { local h; for h in a b; do pod rm -f -t 2 "$NAME-$h" >/dev/null 2>&1; done; }

IMG=${RARP_IMAGE:-}
if [ -z "$IMG" ]; then
    IMG=localhost/rarp-announce-lab:$$
    t=$(date +%s.%N)
    out=$(make -C "$ROOT" image IMAGE="$IMG" 2>&1) || { echo "$out"; abort "make image"; }
    echo "     (make image: $(since "$t")s)"
    trap 'pods_down; podman rmi -f "$IMG" >/dev/null 2>&1' EXIT
else
    trap pods_down EXIT
fi
check "image runs as UID 0" "0:0" "$(podman image inspect -f '{{.Config.User}}' "$IMG")"

"$HERE/lab-up.sh" || abort "lab-up.sh"
check "lab up: client pings the VM on A" ok "$(lab_ping)"

CFG=$LAB_STATE/image-config
mkdir -p "$CFG/default" "$CFG/norepair"
printf '# lab-image.sh: the defaults\n' >"$CFG/default/rarp-announce.yaml"
printf '# lab-image.sh: FDB repair off\nfdb_repair: false\n' >"$CFG/norepair/rarp-announce.yaml"

# the DaemonSet's container: agent h CAPS CONFIG [podman run flags...]
agent() {
    local h=$1 caps=$2 cfg=$3 c add=()
    shift 3
    for c in $caps; do add+=(--cap-add "$c"); done
    pod run --name "$NAME-$h" --network "ns:/run/netns/${LAB_NETNS[$h]}" \
        --user 0:0 --cap-drop all "${add[@]}" --security-opt no-new-privileges --read-only \
        -v "$LAB_STATE/$h/run/libvirt:/run/libvirt:ro" -v "$CFG/$cfg:/etc/rarp-announce:ro" \
        "$@" "$IMG" run --config /etc/rarp-announce/rarp-announce.yaml --log-level debug
}
start_agents() { # caps config
    local h
    for h in a b; do
        agent "$h" "$1" "$2" -d >/dev/null || abort "podman run on $h"
    done
    sleep "${LAB_AGENT_STARTUP:-2}"
    for h in a b; do
        check "container on $h ($1) running" true "$(pod inspect -f '{{.State.Running}}' "$NAME-$h" 2>&1)"
        check "container on $h: subscribed to libvirt as UID 0" yes "$(has "$(pod logs "$NAME-$h" 2>&1)" '"msg":"connected to libvirt"')"
    done
}
dump_logs() {
    local h
    for h in a b; do echo "---- container on $h"; pod logs "$NAME-$h" 2>&1 | tail -40 | sed 's/^/    /'; done
}

# ---- 1. a capability missing: exit 1, named
agent a NET_RAW default --rm >"$LAB_STATE/image-missing-cap.txt" 2>&1 &
p=$!
(sleep 60; pod rm -f -t 0 "$NAME-a" >/dev/null 2>&1) &
w=$!
wait "$p"
rc=$?
kill "$w" 2>/dev/null
out=$(cat "$LAB_STATE/image-missing-cap.txt")
check "NET_RAW only, fdb repair on: container exits 1" 1 "$rc"
check "  ... naming CAP_NET_ADMIN" yes "$(has "$out" 'missing CAP_NET_ADMIN, needed for FDB repair')"

# ---- 2. as the DaemonSet runs it
start_agents "NET_RAW NET_ADMIN" default
migrate a2b precopy
followed "image, NET_RAW+NET_ADMIN, a->b"
check "container on b, NET_RAW+NET_ADMIN: frames marked (host.frame_mark)" no "$(has "$(pod logs "$NAME-b" 2>&1)" 'frames sent unmarked')"
[ "$fail" = 0 ] || dump_logs
pods_down

# ---- 3. NET_RAW only, FDB repair off
start_agents "NET_RAW" norepair
migrate b2a precopy
check "image, NET_RAW only, b->a: switch port" "sw$dst" "$(lab_wait_fdb "sw$dst" 3)"
for h in a b; do
    check "container on $h, NET_RAW only: no EPERM" no "$(has "$(pod logs "$NAME-$h" 2>&1)" 'operation not permitted')"
    check "container on $h, NET_RAW only: frames marked (host.frame_mark)" no "$(has "$(pod logs "$NAME-$h" 2>&1)" 'frames sent unmarked')"
done
[ "$fail" = 0 ] || dump_logs
pods_down
finish
