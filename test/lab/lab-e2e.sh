#!/bin/bash
# The end-to-end test: with QEMU's own announce suppressed, the agent and nothing else moves the
# VM's MAC on the upstream switch, after every kind of migration. Prints PASS/FAIL lines and
# ends with "N passed, M failed"; exit 1 if anything failed. Run as root.
#
#   LAB_AGENT='command'   the agent, run by `sh -c` inside each hypervisor (its network and
#                         mount namespaces), with LAB_HV=a|b and RARP_ANNOUNCE (the binary) in
#                         its environment, e.g.  LAB_AGENT='exec "$RARP_ANNOUNCE" run'
#                         Default: lab-standin-agent.sh. Its output: $LAB_STATE/agent-<h>.log,
#                         printed here when a check fails.
#   RARP_ANNOUNCE=path    the binary (default: rarp-announce on PATH, else ../../bin/)
#   LAB_E2E_BURST=5       frames one announce sends (QEMU's schedule: 5)
#   LAB_SUPPRESS=announce QEMU runs with migration.announce-rounds=0 (default)
#               nft       QEMU announces, nft drops its frames on both hypervisors' br0
#   LAB_AGENT_STARTUP=1   seconds to give the agents before the first migration
#   LAB_AGENT_RECONNECT=3 seconds to give an agent to reconnect after libvirtd restarts
#   LAB_KEEP=1            leave the lab up afterwards
#
# Steps:
#   1. no agent, A->B: no RARP reaches the switch, it still points at A, the client cannot
#      reach the VM (proves the rig: only an agent can make the next checks pass); back B->A
#   2. agents on both hypervisors; pre-copy A->B, B->A, A->B: the switch follows, ping works
#   3. post-copy B->A with virsh migrate-postcopy: the destination sees Resumed Post-copy then
#      Resumed Migrated; exactly one burst ($LAB_E2E_BURST frames) enters the switch from A
#   4. libvirtd on B killed with SIGKILL and restarted; the agent on B lives on; A->B announced
#   5. a paused migration B->A (virsh migrate --suspend): nothing while the VM stays paused on A
#      (the switch still points at B), then `virsh resume` on A lands it: the switch follows
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lab-env.sh"
[ "$(id -u)" = 0 ] || die "must run as root"
. "$HERE/lab-e2e-lib.sh"
BURST=${LAB_E2E_BURST:-5}

case ${LAB_SUPPRESS:-announce} in
    announce) export LAB_QEMU_ANNOUNCE=0 LAB_NORARP=0 ;;
    nft) export LAB_QEMU_ANNOUNCE=1 LAB_NORARP=1 ;;
    *) die "LAB_SUPPRESS must be announce or nft" ;;
esac
lab_find_binary
echo "agent: ${LAB_AGENT:-$HERE/lab-standin-agent.sh (RARP_ANNOUNCE=$RARP_ANNOUNCE)}"
"$HERE/lab-up.sh" || abort "lab-up.sh"
check "lab up: client pings the VM on A" ok "$(lab_ping)"

# ---- 1. control: without an agent the switch must stay stale
migrate a2b precopy
check "no agent, a->b: RARP frames at the switch" 0 "$((rarp_from_dst + rarp_other))"
check "no agent, a->b: switch port (stale)" swa "$fdb_after"
check "no agent, a->b: client pings the VM" fail "$(lab_ping)"
migrate b2a precopy

# ---- 2. the agent on both hypervisors, pre-copy A->B->A->B
for h in a b; do lab_agent_start "$h"; done
sleep "${LAB_AGENT_STARTUP:-1}"
for h in a b; do lab_agent_alive "$h" || abort "agent on $h exited at start"; done
for d in a2b b2a a2b; do
    migrate "$d" precopy
    followed "agent, pre-copy ${d/2/->}"
done

# ---- 3. post-copy B->A: one burst although the destination sees two Resumed events
migrate b2a postcopy
check "agent, post-copy b->a: destination events" "Started Migrated,Resumed Post-copy,Resumed Migrated" "$dst_events"
followed "agent, post-copy b->a"
check "agent, post-copy b->a: RARP frames from swa (one burst)" "$BURST" "$rarp_from_dst"

# ---- 4. the destination's libvirtd crashes and comes back
"$HERE/lab-restart-libvirtd.sh" b >"$LAB_STATE/e2e-restart.txt" 2>&1 || { cat "$LAB_STATE/e2e-restart.txt"; abort "restart libvirtd b"; }
check "libvirtd b killed and restarted" yes "$(lab_virsh b uri >/dev/null 2>&1 && echo yes || echo no)"
sleep "${LAB_AGENT_RECONNECT:-3}"
check "agent on b still running after libvirtd restart" yes "$(lab_agent_alive b && echo yes || echo no)"
migrate a2b precopy
followed "agent, a->b after libvirtd b restart"

# ---- 5. a migration that leaves the VM paused on the destination, resumed by hand later
LAB_MIGRATE_FLAGS=--suspend migrate b2a precopy
check "agent, paused b->a: destination events" "Started Migrated,Suspended Paused" "$dst_events"
check "agent, paused b->a: RARP frames from swa while paused" 0 "$rarp_from_dst"
check "agent, paused b->a: switch port while paused (still b)" swb "$fdb_after"
lab_virsh a resume "$LAB_VM" >/dev/null || abort "virsh resume $LAB_VM on a"
check "agent, paused b->a, resumed: switch port" swa "$(lab_wait_fdb swa 3)"
check "agent, paused b->a, resumed: client pings the VM" ok "$(lab_ping)"
check "agent on a: the resume logged as a landing" yes "$(has "$(grep -F '"msg":"landed"' "$LAB_STATE/agent-a.log")" '"event":"resumed/unpaused"')"
finish
