#!/bin/bash
# How fast does the agent announce? For N live migrations (alternating A->B, B->A), the time
# from the destination's RESUMED event to the first RARP frame entering the upstream switch from
# the destination. Brings up its own lab (QEMU's announce suppressed, so every frame is the
# agent's), starts the agent on both hypervisors, prints one line per migration and
# p50/p99/max, tears down. Run as root.
#
#   lab-latency.sh [N]          N migrations, default 10
#
# Two clocks are read, all on this machine (one CLOCK_REALTIME):
#   frame   tcpdump on the switch, kernel receive timestamp, us (lab-migrate.sh: first_rarp_ts)
#   agent   the agent's own log line for the event: when it received it (us or better).
#           Expected: a JSON line per landing, {"msg":"landed","received":<time>,...}, where
#           <time> is RFC3339 ("2026-11-23T01:31:51.776696123Z") or epoch seconds (1795397511.7767,
#           zap's default for time fields). lab-standin-agent.sh writes exactly that.
#   virsh   `virsh event --timestamp` on the destination, a separate client: when libvirt's
#           event reached it, ms resolution; independent of the agent's word
# Result columns: agent = frame - agent's "received" (the agent's own reaction time);
# virsh = frame - virsh's receipt (includes the agent's event delivery; +-1 ms).
#
#   LAB_AGENT, RARP_ANNOUNCE   as for lab-e2e.sh (default: the stand-in agent)
#   LAT_AGENT_LOG=path         the agent's log, %h = a|b (default $LAB_STATE/agent-%h.log, where
#                              LAB_AGENT's stdout+stderr go)
#   LAT_AGENT_EXTRACT='cmd'    reads the part of the destination's agent log written during one
#                              migration on stdin, prints the receive time of each landing, one
#                              per line (RFC3339 or epoch seconds); the first one is used.
#                              Default: python3, lines that are JSON with msg "landed" -> .received
#   LAT_MODE=precopy|postcopy  (default precopy)
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lab-env.sh"
[ "$(id -u)" = 0 ] || die "must run as root"
N=${1:-10}
MODE=${LAT_MODE:-precopy}
LOGPAT=${LAT_AGENT_LOG:-$LAB_STATE/agent-%h.log}
# (assigned apart: quotes inside ${X:-...} would be removed)
DEFAULT_EXTRACT='python3 -c "
import json, sys
for line in sys.stdin:
    try:
        o = json.loads(line)
    except ValueError:
        continue
    if isinstance(o, dict) and o.get(\"msg\") == \"landed\" and \"received\" in o:
        print(o[\"received\"])
"'
EXTRACT=${LAT_AGENT_EXTRACT:-$DEFAULT_EXTRACT}
to_epoch() { # RFC3339 or epoch seconds -> epoch seconds
    if [[ $1 =~ ^[0-9]+(\.[0-9]+)?$ ]]; then echo "$1"; else date -d "$1" +%s.%N; fi
}
ms() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.3f", (b-a)*1000}'; }
stats() { # name file-of-values
    sort -n "$2" | awk -v name="$1" '{v[NR]=$1} END {
        if (NR == 0) { printf "%-6s no samples\n", name; exit }
        p50 = v[int(0.50 * NR + 0.999999)]; p99 = v[int(0.99 * NR + 0.999999)]
        printf "%-6s n=%d  p50 %.3f ms  p99 %.3f ms  max %.3f ms  min %.3f ms\n", name, NR, p50, p99, v[NR], v[1] }'
}

lab_find_binary
export LAB_QEMU_ANNOUNCE=0
"$HERE/lab-up.sh" || die "lab-up.sh failed"
trap 'lab_agent_stop; [ "${LAB_KEEP:-0}" = 1 ] || "$HERE/lab-down.sh"' EXIT
for h in a b; do lab_agent_start "$h"; done
sleep "${LAB_AGENT_STARTUP:-1}"
echo "agent: $LAB_AGENT  (RARP_ANNOUNCE=$RARP_ANNOUNCE); $N $MODE migrations"
printf '%-3s %-4s %12s %12s %7s\n' "#" dir "agent(ms)" "virsh(ms)" frames
: >"$LAB_STATE/lat-agent"; : >"$LAB_STATE/lat-virsh"
first_rarp_ts="" resumed_ts="" rarp_from_dst=0   # set by result.env
bad=0
for i in $(seq 1 "$N"); do
    src=$(lab_where); dst=$(other "$src")
    alog=${LOGPAT//%h/$dst}
    off=$(stat -c %s "$alog" 2>/dev/null || echo 0)
    LAB_SETTLE=${LAB_SETTLE:-1} "$HERE/lab-migrate.sh" "${src}2$dst" "$MODE" >"$LAB_STATE/lat-$i.txt" 2>&1 ||
        { cat "$LAB_STATE/lat-$i.txt"; die "migration $i failed"; }
    # shellcheck disable=SC1091
    . "$LAB_STATE/runs/last.env"
    got=$(tail -c +$((off + 1)) "$alog" 2>/dev/null | sh -c "$EXTRACT" | head -n1)
    a="-" v="-"
    if [ -n "$first_rarp_ts" ]; then
        if [ -n "$got" ]; then a=$(ms "$(to_epoch "$got")" "$first_rarp_ts"); echo "$a" >>"$LAB_STATE/lat-agent"; fi
        if [ -n "$resumed_ts" ]; then v=$(ms "$resumed_ts" "$first_rarp_ts"); echo "$v" >>"$LAB_STATE/lat-virsh"; fi
    else
        bad=$((bad + 1))
    fi
    printf '%-3s %-4s %12s %12s %7s\n' "$i" "$src>$dst" "$a" "$v" "$rarp_from_dst"
done
stats agent "$LAB_STATE/lat-agent"
stats virsh "$LAB_STATE/lat-virsh"
[ "$bad" = 0 ] || { echo "$bad migration(s) without any RARP from the destination"; exit 1; }
