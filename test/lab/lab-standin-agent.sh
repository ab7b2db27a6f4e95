#!/bin/bash
# A stand-in for `rarp-announce run`, in shell, only to prove the lab: it does what the agent
# must do, slowly (a virsh and a rarp-announce process per landing). Run it on a hypervisor
# (lab-e2e.sh does: lab_exec, so qemu:///system and br0 are that hypervisor's):
#
#   RARP_ANNOUNCE=/path/to/rarp-announce LAB_HV=a lab-standin-agent.sh
#
# It listens to libvirt lifecycle events (virsh event --loop; started again whenever libvirtd
# goes away and comes back) and when a domain lands, "Resumed Migrated" or "Resumed Post-copy",
# it announces each bridge NIC of the domain: `rarp-announce send --interface <bridge> --mac ...`,
# one QEMU-like burst of 5 frames. A post-copy migration brings Resumed Post-copy and, when the
# last page has arrived, Resumed Migrated: only the first of consecutive Resumed events of a
# domain is announced, so a migration gives one burst (STANDIN_DEDUP=0 announces every Resumed
# event: a bug on purpose, to see lab-e2e.sh catch a doubled burst).
#
# Before sending it removes the bridge's entries for the MAC on ports other than the VM's tap
# (STANDIN_FIX_LOCAL_FDB=1, the default): the local bridge learned "MAC -> uplink" while the VM
# ran on the other hypervisor, and it does not learn from frames the host itself sends.
#
# For lab-latency.sh it logs, for each landing, the line the Go agent is expected to log:
#   {"msg":"landed","domain":"labvm","event":"Resumed Migrated","received":"<RFC3339, UTC>"}
# with "received" taken right after virsh printed the event.
set -uo pipefail
export TZ=UTC
bin=${RARP_ANNOUNCE:-rarp-announce}
hv=${LAB_HV:-?}
say() { printf '%(%H:%M:%S)T.%s standin[%s]: %s\n' "${EPOCHREALTIME%.*}" "${EPOCHREALTIME#*.}" "$hv" "$*"; }

# announce DOMAIN: fix the local FDB, then one `rarp-announce send` per bridge
announce() {
    local dom=$1 tap type br _model mac port
    declare -A macs=()
    while read -r tap type br _model mac; do
        [ "$type" = bridge ] || { say "$dom: $tap is type $type, not announced"; continue; }
        macs[$br]+=" --mac $mac"
        [ "${STANDIN_FIX_LOCAL_FDB:-1}" = 1 ] || continue
        for port in $(bridge fdb show br "$br" | awk -v m="$mac" -v t="$tap" '$1 == m && $3 != t && !/permanent|self/ {print $3}'); do
            bridge fdb del "$mac" dev "$port" master && say "$dom: removed stale $mac -> $port from $br"
        done
    done < <(virsh -q domiflist "$dom")
    for br in "${!macs[@]}"; do
        # shellcheck disable=SC2086
        "$bin" send --interface "$br" ${macs[$br]} 2>&1 | sed "s/^/    /"
    done
}

evpid=""
trap '[ -n "$evpid" ] && kill "$evpid" 2>/dev/null; exit 0' TERM INT
declare -A last=()
while :; do
    until virsh -q uri >/dev/null 2>&1; do sleep 0.2; done
    last=()   # events may have been missed while disconnected
    coproc EV { exec stdbuf -oL virsh -q event --loop --event lifecycle; }
    evpid=$EV_PID
    say "connected to $(virsh -q uri), $bin"
    while read -r line <&"${EV[0]}"; do
        t=$EPOCHREALTIME
        # event 'lifecycle' for domain 'labvm': Resumed Migrated
        [[ $line =~ ^event\ \'lifecycle\'\ for\ domain\ \'(.*)\':\ (.*)$ ]] || continue
        dom=${BASH_REMATCH[1]} ev=${BASH_REMATCH[2]}
        prev=${last[$dom]:-}
        last[$dom]=$ev
        case $ev in "Resumed Migrated"|"Resumed Post-copy") ;; *) say "$dom: $ev"; continue ;; esac
        [ "${STANDIN_DEDUP:-1}" = 0 ] && prev=""
        case $prev in "Resumed Migrated"|"Resumed Post-copy") say "$dom: $ev (already announced on $prev)"; continue ;; esac
        printf '{"msg":"landed","domain":"%s","event":"%s","received":"%(%Y-%m-%dT%H:%M:%S)T.%sZ"}\n' \
            "$dom" "$ev" "${t%.*}" "${t#*.}"
        announce "$dom" &
    done
    wait "$evpid"
    say "virsh event ended (libvirtd gone?), reconnecting"
    evpid=""
    sleep 0.2
done
