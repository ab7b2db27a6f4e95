#!/bin/bash
# The qemu strategy end to end: the agent asks QEMU to announce (QMP announce-self through
# libvirt's monitor passthrough), so the frames enter each bridge from the VM's tap, as the
# guest's own would: the switch follows the VM *and* the destination's own br0 moves the MAC
# from the uplink (where it learned it while the VM ran on the other side) to the tap, with no
# FDB repair. QEMU's own announce is suppressed (migration.announce-rounds=0): announce-self
# takes its own timings. Prints PASS/FAIL lines and "N passed, M failed"; exit 1 on any
# failure. Run as root. About 60 s.
#
#   RARP_ANNOUNCE=path     the binary (default: rarp-announce on PATH, else ../../bin/)
#   LAB_QEMU_AGENT='cmd'   the agent (default below: rarp-announce run with the config file
#                          $LAB_STATE/agent-qemu-<h>.yaml this script writes)
#   LAB_QEMU_TIMEOUT=500ms the libvirt RPC timeout of B's agent (A's: the default 5 s); shorter
#                          than a post-copy phase, longer than a pre-copy landing's call
#   LAB_E2E_BURST=5        frames one announce sends (the schedule: 5)
#   LAB_KEEP=1             leave the lab up afterwards
#
# Steps (the VM starts on A; both agents: strategies bridge/network = qemu, fdb_repair false;
# each watches events on the read-only socket and opens the read-write one for QMP):
#   1. pre-copy A->B, B->A, A->B: the switch follows, the client pings, exactly one burst enters
#      the switch from the destination, the destination's br0 has the MAC on the VM's tap (and
#      had it on the uplink before, from the previous landing's broadcast: no repair needed);
#      the agent logged "QEMU announce-self accepted" and repaired nothing; libvirt marks the
#      domain tainted (custom-monitor)
#   2. rarp-announce announce by hand on B, after the switch was pointed back at A:
#      --strategy qemu and --strategy host move it (exit 0, one burst each); the read-only
#      socket is refused (exit 1), a domain that is not running here is refused (exit 1), an
#      unknown strategy is a usage error (exit 2)
#   3. post-copy B->A (A's agent, RPC timeout 5 s): announced, but only once the migration job
#      ends (libvirt holds monitor commands until then): the delay is printed
#   4. post-copy A->B (B's agent, RPC timeout $LAB_QEMU_TIMEOUT): the call times out: logged,
#      counted (timeout); it costs only the QMP connection (the watcher's, on the read-only
#      socket, stays); the agent lives on; B->A, then A->B is announced by B
#   5. the agents' metrics: announce-self ok/timeout/qmp_error counts
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lab-env.sh"
. "$HERE/lab-e2e-lib.sh"
e2e_prepare
BURST=${LAB_E2E_BURST:-5}
LAB_AGENT=${LAB_QEMU_AGENT:-'exec "$RARP_ANNOUNCE" run --log-level debug --config "$LAB_STATE/agent-qemu-$LAB_HV.yaml"'}
lab_find_binary

# yes if the agent log of hypervisor $1 written since byte $2 has a line containing $3
# (no `| grep -q` anywhere: with pipefail, the writer's SIGPIPE would turn a match into "no")
logged() { has "$(tail -c +$(($2 + 1)) "$LAB_STATE/agent-$1.log")" "$3"; }
# rarp_during PORT CMD...: run CMD, count the RARPs entering the switch from PORT meanwhile
# and for 1.2 s after (a burst lasts 0.8 s); sets out, rc, frames
rarp_during() {
    local port=$1 cap pid _
    shift
    cap=$LAB_STATE/manual-$(date +%H%M%S%N).txt
    ip netns exec "${LAB_NETNS[sw]}" tcpdump -i "$port" -Q in -nn -l 'ether proto 0x8035' >"$cap" 2>"$cap.err" &
    pid=$!
    for _ in $(seq 1 50); do grep -q '^listening' "$cap.err" && break; sleep 0.1; done
    out=$("$@" 2>&1); rc=$?
    sleep 1.2
    kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
    frames=$(grep -c 'Reverse' "$cap")
}
# a pre-copy migration announced by the qemu strategy, with its checks
qemu_migrate() { # dir
    local label="qemu, pre-copy ${1/2/->}" d=${1#*2} off before
    off=$(logsize "$d")
    before=$(lab_brport "$d")
    migrate "$1" precopy
    followed "$label"
    check "$label: RARP frames from sw$dst (one burst)" "$BURST/0" "$rarp_from_dst/$rarp_other"
    check "$label: destination br0 has the MAC on the VM's tap" "$(lab_tap "$dst")" "$(lab_brport "$dst")"
    echo "     (destination br0 had it on '${before:-nothing}' before)"
    check "$label: agent on $dst: QEMU announce-self accepted" yes "$(logged "$dst" "$off" '"msg":"QEMU announce-self accepted"')"
    check "$label: agent on $dst: no FDB repair" no "$(logged "$dst" "$off" 'removed stale bridge entries')"
}

"$HERE/lab-up.sh" || abort "lab-up.sh"
check "lab up: client pings the VM on A" ok "$(lab_ping)"
for h in a b; do
    {
        echo "# written by lab-e2e-qemu.sh: announce through QEMU, no FDB repair"
        [ "$h" = a ] || printf 'libvirt:\n  rpc_timeout: %s\n' "${LAB_QEMU_TIMEOUT:-500ms}"
        printf 'strategies:\n  bridge: qemu\n  network: qemu\nfdb_repair: false\n'
    } >"$LAB_STATE/agent-qemu-$h.yaml"
done
echo "agent: $LAB_AGENT"
for h in a b; do lab_agent_start "$h"; done
sleep "${LAB_AGENT_STARTUP:-1}"
for h in a b; do lab_agent_alive "$h" || abort "agent on $h exited at start"; done
for h in a b; do
    check "agent on $h watches on the read-only socket" yes "$(logged "$h" 0 '"msg":"connected to libvirt","socket":"/run/libvirt/libvirt-sock-ro"')"
done

# ---- 1. pre-copy A->B->A->B
b_before=$(lab_brport b)
qemu_migrate a2b
check "agent on b: QMP on its own connection, on the read-write socket" yes \
    "$(logged b 0 '"msg":"connected to libvirt for QEMU monitor commands","socket":"/run/libvirt/libvirt-sock"')"
check "libvirt marks the domain tainted (dominfo)" yes \
    "$(has "$(lab_virsh b dominfo "$LAB_VM")" 'tainted: custom monitor control commands issued')"
check "libvirt marks the domain tainted (domain log)" yes \
    "$(has "$(cat "$LAB_STATE/b/log/libvirt/qemu/$LAB_VM.log")" 'is tainted: custom-monitor')"
grep 'tainted' "$LAB_STATE/b/log/libvirt/qemu/$LAB_VM.log" | sed 's/^/     (B domain log) /'
a_before=$(lab_brport a)
qemu_migrate b2a
check "before b->a, A's br0 had the MAC on its uplink (stale, from B's announce)" upa "$a_before"
b_before=$(lab_brport b)
qemu_migrate a2b
check "before a->b, B's br0 had the MAC on its uplink (stale, from A's announce)" upb "$b_before"

# ---- 2. by hand on B, where the VM runs: point the switch back at A first
poison() { lab_ns sw bridge fdb replace "$LAB_MAC" dev swa master dynamic; }
poison
rarp_during swb lab_exec b "$RARP_ANNOUNCE" announce --domain "$LAB_VM" --strategy qemu
echo "$out" | sed 's/^/     (announce --strategy qemu) /'
check "announce --strategy qemu: exit status" 0 "$rc"
check "announce --strategy qemu: says what it did" yes "$(has "$out" "$LAB_VM $LAB_MAC qemu: started: QEMU announce-self on net0")"
check "announce --strategy qemu: RARP frames from swb" "$BURST" "$frames"
check "announce --strategy qemu: switch port" swb "$(lab_wait_fdb swb 3)"
poison
rarp_during swb lab_exec b "$RARP_ANNOUNCE" announce --domain "$LAB_VM" --strategy host
echo "$out" | sed 's/^/     (announce --strategy host) /'
check "announce --strategy host: exit status" 0 "$rc"
check "announce --strategy host: says what it did" yes "$(has "$out" "$LAB_VM $LAB_MAC host: started on br0")"
check "announce --strategy host: RARP frames from swb" "$BURST" "$frames"
check "announce --strategy host: switch port" swb "$(lab_wait_fdb swb 3)"
rarp_during swb lab_exec b "$RARP_ANNOUNCE" announce --domain "$LAB_VM" --strategy qemu --libvirt-socket /run/libvirt/libvirt-sock-ro
check "announce --strategy qemu on the read-only socket: exit status" 1 "$rc"
check "announce --strategy qemu on the read-only socket: refused" yes "$(has "$out" 'read only access prevents virDomainQemuMonitorCommand')"
check "announce --strategy qemu on the read-only socket: RARP frames" 0 "$frames"
lab_exec a "$RARP_ANNOUNCE" announce --domain "$LAB_VM" --strategy qemu >/dev/null 2>&1
check "announce on A, where the VM does not run: exit status" 1 "$?"
lab_exec b "$RARP_ANNOUNCE" announce --domain "$LAB_VM" --strategy bogus >/dev/null 2>&1
check "announce --strategy bogus: exit status" 2 "$?"

# ---- 3. post-copy B->A: A's agent (5 s timeout) announces when the migration job ends
off=$(logsize a)
migrate b2a postcopy
check "qemu, post-copy b->a: destination events" "Started Migrated,Resumed Post-copy,Resumed Migrated" "$dst_events"
followed "qemu, post-copy b->a"
check "qemu, post-copy b->a: RARP frames from swa (one burst)" "$BURST/0" "$rarp_from_dst/$rarp_other"
check "qemu, post-copy b->a: destination br0 has the MAC on the VM's tap" "$(lab_tap a)" "$(lab_brport a)"
echo "     (post-copy: first RARP $(latency) after Resumed Post-copy: libvirt holds the monitor command until the migration job ends)"

# ---- 4. post-copy A->B: B's agent times out, lives on, and announces the next landing
off=$(logsize b)
migrate a2b postcopy
check "qemu, post-copy a->b, short RPC timeout: destination events" "Started Migrated,Resumed Post-copy,Resumed Migrated" "$dst_events"
check "qemu, post-copy a->b, short RPC timeout: agent on b logged the timeout" yes "$(logged b "$off" 'libvirt did not answer in time')"
echo "     ($rarp_from_dst RARP from swb, first $(latency) after Resumed Post-copy: libvirtd may still run a command whose caller gave up)"
sleep 1
check "agent on b alive after the timeout" yes "$(lab_agent_alive b && echo yes || echo no)"
check "agent on b: the timeout cost only the QMP connection (watcher still connected, no reconnect)" 1/0 \
    "$(lab_metric b rarp_announce_libvirt_connected)/$(lab_metric b rarp_announce_libvirt_reconnects_total)"
qemu_migrate b2a
qemu_migrate a2b

# ---- 5. what the agents counted
check "agent on a: announce-self ok" 3 "$(lab_metric a 'rarp_announce_qmp_announce_self_total{result="ok"}')"
check "agent on b: announce-self ok" 3 "$(lab_metric b 'rarp_announce_qmp_announce_self_total{result="ok"}')"
check "agent on b: announce-self timeout" 1 "$(lab_metric b 'rarp_announce_qmp_announce_self_total{result="timeout"}')"
check "agent on b: qemu NICs failed" 1 "$(lab_metric b 'rarp_announce_nic_announces_total{result="failed",strategy="qemu"}')"
for h in a b; do
    check "agent on $h: no QMP errors, bad replies or other RPC errors" 0/0/0 \
        "$(lab_metric "$h" 'rarp_announce_qmp_announce_self_total{result="qmp_error"}')/$(lab_metric "$h" 'rarp_announce_qmp_announce_self_total{result="bad_reply"}')/$(lab_metric "$h" 'rarp_announce_qmp_announce_self_total{result="rpc_error"}')"
done
finish
