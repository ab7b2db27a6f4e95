#!/bin/bash
# Live-migrate the lab VM to the other hypervisor and record what happened.
#
#   lab-migrate.sh [a2b|b2a|auto] [precopy|postcopy]       (default: auto precopy)
#
# precopy   virsh migrate --live: the destination sees Started Migrated ... Resumed Migrated.
# postcopy  virsh migrate --live --postcopy --bandwidth $LAB_BANDWIDTH (MiB/s, default 1: the
#           first pass then takes about 2 s instead of 0.1 s), and while it runs
#           virsh migrate-postcopy. The destination must see Resumed Post-copy, then Resumed
#           Migrated when the last page has arrived; if not, exit 3.
#
# Records in $LAB_STATE/runs/NNN-<src><dst>-<mode>/: both daemons' events
# (virsh event --all --loop --timestamp), every RARP frame at the switch (tcpdump -tt -e),
# virsh's output, and result.env (shell-sourceable, copied to $LAB_STATE/runs/last.env; read by
# lab-e2e.sh and lab-latency.sh):
#   src dst mode wall_s downtime_ms fdb_before fdb_after postcopy(0|1) dst_events
#   rarp_from_dst  frames that entered the switch from the destination's port
#   rarp_other     frames that entered it from any other port
#   first_rarp_ts  epoch seconds (us) of the first of those frames, as tcpdump timestamped it
#   resumed_ts     epoch seconds (ms) of the destination's first Resumed event, as virsh event
#                  timestamped it on receipt
# Prints a summary. Exit 0 = migrated (and, for postcopy, switched to post-copy).
#   LAB_SETTLE=s     wait after the migration before reading the switch (default 1.5: an
#                    announce burst lasts 0.8 s; a second, duplicate burst would show up too)
#   LAB_MIGRATE_FLAGS="..."  more virsh migrate flags
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lab-env.sh"

dir=${1:-auto} mode=${2:-precopy}
case $dir in
    a2b) src=a ;;
    b2a) src=b ;;
    auto) src=$(lab_where); [ "$src" != none ] || die "$LAB_VM is not running on A or B" ;;
    *) die "usage: $0 [a2b|b2a|auto] [precopy|postcopy]" ;;
esac
dst=$(other "$src")
flags=(--live)
case $mode in
    precopy) ;;
    postcopy) flags+=(--postcopy --bandwidth "${LAB_BANDWIDTH:-1}" --postcopy-bandwidth "${LAB_BANDWIDTH:-1}") ;;
    *) die "usage: $0 [a2b|b2a|auto] [precopy|postcopy]" ;;
esac
# shellcheck disable=SC2206
flags+=(${LAB_MIGRATE_FLAGS:-})

mkdir -p "$LAB_STATE/runs"
n=$(find "$LAB_STATE/runs" -mindepth 1 -maxdepth 1 -type d | wc -l)
R=$LAB_STATE/runs/$(printf %03d $((n + 1)))-$src$dst-$mode
mkdir -p "$R"

# ---------------------------------------------------------------- recorders
pids=()
stop_recorders() { kill "${pids[@]}" 2>/dev/null; wait "${pids[@]}" 2>/dev/null || true; pids=(); }
trap stop_recorders EXIT
# -tt: epoch timestamps in us, the kernel's receive time (same clock as every log here);
# -e -i any: the port and the direction (B = broadcast in, Out = out) of each frame
# (ip netns exec directly, not the lab_ns function: $! must be tcpdump itself, not a subshell)
ip netns exec "${LAB_NETNS[sw]}" tcpdump -i any -nn -e -tt -l 'ether proto 0x8035' >"$R/switch-rarp.txt" 2>"$R/tcpdump.err" &
pids+=($!)
for h in a b; do
    virsh -c "$(lab_uri "$h")" event --all --loop --timestamp >"$R/events-$h.txt" 2>&1 &
    pids+=($!)
done
for _ in $(seq 1 50); do grep -q '^listening' "$R/tcpdump.err" && break; sleep 0.1; done
sleep 0.3   # virsh event says nothing when it has registered

# ---------------------------------------------------------------- migrate
before=$(lab_fdbport)
log "migrating $LAB_VM $src -> $dst ($mode): virsh migrate ${flags[*]}"
t0=$(date +%s.%N)
lab_virsh "$src" migrate "${flags[@]}" "$LAB_VM" "$(lab_uri "$dst")" >"$R/virsh.out" 2>&1 &
mig=$!
if [ "$mode" = postcopy ]; then
    # refused until QEMU's migration has actually started: retry until accepted
    until lab_virsh "$src" migrate-postcopy "$LAB_VM" >>"$R/postcopy.out" 2>&1; do
        kill -0 $mig 2>/dev/null || break
        sleep 0.1
    done
fi
wait $mig || { cat "$R/virsh.out" >&2; die "migration failed (run dir $R)"; }
wall=$(since "$t0")
sleep "${LAB_SETTLE:-1.5}"
after=$(lab_fdbport)
stop_recorders; trap - EXIT

# ---------------------------------------------------------------- results
# "2026-11-23 01:28:23.091+0000: event 'lifecycle' for domain 'labvm': Resumed Migrated"
dst_events=$(sed -n "s/.*event 'lifecycle' for domain '$LAB_VM': //p" "$R/events-$dst.txt" | paste -sd, -)
resumed_ts=""
line=$(grep -m1 "event 'lifecycle' for domain '$LAB_VM': Resumed" "$R/events-$dst.txt" || true)
[ -n "$line" ] && resumed_ts=$(date -d "${line%%: event*}" +%s.%3N)
postcopy=0
[[ ,$dst_events, == *",Resumed Post-copy,"*"Resumed Migrated,"* ]] && postcopy=1
# tcpdump line: EPOCH PORT DIRECTION ...; not "Out" = the frame entered the switch there
# (sw0 lines are the bridge device itself receiving the flooded broadcast: not a port)
count() { awk -v p="$1" '$2 ~ p && $3 != "Out"' "$R/switch-rarp.txt" | wc -l; }
rarp_from_dst=$(count "^sw$dst\$")
rarp_other=$(count "^sw[abc]\$" ) rarp_other=$((rarp_other - rarp_from_dst))
first_rarp_ts=$(awk -v p="sw$dst" '$2 == p && $3 != "Out" {print $1; exit}' "$R/switch-rarp.txt")
downtime_ms=$(awk '$1 == "downtime:" {print $2; exit}' "$R/events-$src.txt")
cat >"$R/result.env" <<ENV
run='$R'
src=$src
dst=$dst
mode=$mode
wall_s=$wall
downtime_ms=${downtime_ms:-}
fdb_before='$before'
fdb_after='$after'
postcopy=$postcopy
dst_events='$dst_events'
rarp_from_dst=$rarp_from_dst
rarp_other=$rarp_other
first_rarp_ts=${first_rarp_ts:-}
resumed_ts=${resumed_ts:-}
ENV
cp "$R/result.env" "$LAB_STATE/runs/last.env"

echo "migration $src->$dst ($mode) done in ${wall}s, downtime ${downtime_ms:-?} ms   (run dir: $R)"
echo "  destination events: $dst_events"
echo "  source events:      $(sed -n "s/.*event 'lifecycle' for domain '$LAB_VM': //p" "$R/events-$src.txt" | paste -sd, -)"
echo "  RARP frames entering the switch: from sw$dst $rarp_from_dst, from other ports $rarp_other"
if [ -n "${first_rarp_ts:-}" ] && [ -n "$resumed_ts" ]; then
    echo "  first RARP from sw$dst $(awk -v a="$resumed_ts" -v b="$first_rarp_ts" 'BEGIN{printf "%.1f", (b-a)*1000}') ms after the Resumed event (virsh event, ms resolution)"
fi
echo "  switch port for $LAB_MAC: before ${before:-none}, after ${after:-none}"
if [ "$mode" = postcopy ] && [ $postcopy != 1 ]; then
    echo "  ERROR: no 'Resumed Post-copy' then 'Resumed Migrated' on the destination" >&2
    exit 3
fi
