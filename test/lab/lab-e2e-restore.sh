#!/bin/bash
# Save and restore across hypervisors: `virsh save` on A, `virsh restore` on B. QEMU loads the
# state as an incoming migration and, with its own announce suppressed (as when its frames are
# lost), nothing tells the switch that the VM's MAC now lives behind B, unless the agent on B
# announces at STARTED/RESTORED. Prints PASS/FAIL lines and "N passed, M failed"; exit 1 if
# anything failed. Run as root; about 30 s.
#
#   LAB_AGENT='command'   the agent (default: rarp-announce run, debug log)
#   RARP_ANNOUNCE=path    the binary (default: rarp-announce on PATH, else ../../bin/)
#   LAB_KEEP=1            leave the lab up afterwards
#
# Steps:
#   1. no agent: save on A, restore on B: the switch still points at A and the client cannot
#      reach the VM (proves the rig); save on B, restore on A
#   2. agents on both hypervisors: save on A, restore on B: the switch follows to B, the client
#      pings the VM, B's agent logged the landing at started/restored; and back B -> A
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lab-env.sh"
. "$HERE/lab-e2e-lib.sh"
e2e_prepare
lab_find_binary
LAB_AGENT=${LAB_AGENT:-'exec "$RARP_ANNOUNCE" run --log-level debug'}
echo "agent: $LAB_AGENT (RARP_ANNOUNCE=$RARP_ANNOUNCE)"
"$HERE/lab-up.sh" || abort "lab-up.sh"
check "lab up: client pings the VM on A" ok "$(lab_ping)"

SAVE=$LAB_STATE/$LAB_VM.save
# move SRC DST: save the VM on SRC, restore it on DST (the save file holds its XML)
move() {
    local src=$1 dst=$2 out=$LAB_STATE/restore-$1$2-$(date +%H%M%S%N).txt
    rm -f "$SAVE"
    { lab_virsh "$src" save "$LAB_VM" "$SAVE" && lab_virsh "$dst" restore "$SAVE"; } >"$out" 2>&1 ||
        { sed 's/^/    /' "$out"; abort "save on $src, restore on $dst"; }
    check "VM runs on $dst after restore" "$dst" "$(lab_where)"
}

# ---- 1. control: without an agent the switch stays stale
move a b
sleep 1
check "no agent, restore on b: switch port (stale)" swa "$(lab_fdbport)"
check "no agent, restore on b: client pings the VM" fail "$(lab_ping)"
move b a
check "no agent, back on a: client pings the VM" ok "$(lab_ping)"

# ---- 2. the agent on both hypervisors
for h in a b; do lab_agent_start "$h"; done
sleep "${LAB_AGENT_STARTUP:-1}"
for h in a b; do lab_agent_alive "$h" || abort "agent on $h exited at start"; done
move a b
check "agent, restore on b: switch port" swb "$(lab_wait_fdb swb 3)"
check "agent, restore on b: client pings the VM" ok "$(lab_ping)"
check "agent on b: landed at started/restored" yes \
    "$(grep '"landed"' "$LAB_STATE/agent-b.log" | grep -q '"event":"started/restored"' && echo yes || echo no)"
move b a
check "agent, restore back on a: switch port" swa "$(lab_wait_fdb swa 3)"
check "agent, restore back on a: client pings the VM" ok "$(lab_ping)"
finish
