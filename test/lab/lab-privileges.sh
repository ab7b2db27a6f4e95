#!/bin/bash
# The real binary with exactly the privileges the project documents (docs/deploy.md, the
# unit and its drop-ins, deploy/systemd_test.go's dropInSets), run under setpriv as a non-root
# user outside the libvirt group, on the two-hypervisor lab. QEMU's own announce is suppressed:
# only the agent moves the switch. Prints PASS/FAIL lines and "N passed, M failed"; exit 1 on
# any failure. Run as root. About 60 s.
#
#   RARP_ANNOUNCE=path  the binary (default: rarp-announce on PATH, else ../../bin/)
#   LAB_KEEP=1          leave the lab up afterwards
#
# Steps (the VM starts on A):
#   1. one capability removed: with fdb_repair on and CAP_NET_RAW only, `run` exits 1 at once
#      naming CAP_NET_ADMIN; with no capability, it exits 1 naming CAP_NET_RAW; `send` without
#      CAP_NET_RAW exits 1 with a hint
#   2. A->B without an agent (the switch stays at A), then `announce --domain` on B as nobody
#      with CAP_NET_RAW only, outside the libvirt group (read-only socket): the switch follows
#   3. agents as the unit with no-fdb-repair.conf runs them: nobody, CAP_NET_RAW only,
#      no_new_privs, fdb_repair: false; B->A: the switch follows; no EPERM in the logs, and
#      no "frames sent unmarked" (host.frame_mark's SO_MARK with CAP_NET_RAW alone)
#   4. agents as the unit runs them: CAP_NET_RAW + CAP_NET_ADMIN, fdb repair on; A->B: the
#      switch follows and the client pings the VM
#   5. the RARP responder inside the agent on A, as the unit with no-fdb-repair.conf runs it
#      (nobody, CAP_NET_RAW only): the client's RARP request is answered from the table
#   6. the address learner (ip_announce.sources.learned) inside the agent on B, as the unit
#      with no-fdb-repair.conf runs it: the VM's ARP reply to the client teaches it the VM's IP
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lab-env.sh"
. "$HERE/lab-e2e-lib.sh"
e2e_prepare
lab_find_binary

# the agent's user: not root, in no supplementary group (so not in libvirt)
USR=nobody GRP=nogroup

"$HERE/lab-up.sh" || abort "lab-up.sh"
check "lab up: client pings the VM on A" ok "$(lab_ping)"

# A copy of the binary the user can execute (the test's build directory is root-only), the
# configurations, and as-unit.sh, in the state directory (visible inside the hypervisors).
P=$LAB_STATE/priv
mkdir -p "$P" && install -m 0755 "$RARP_ANNOUNCE" "$P/rarp-announce" || abort "copy the binary"
printf '# lab-privileges.sh: as with no-fdb-repair.conf\nfdb_repair: false\nstrategies:\n  vhostuser: skip\n' >"$P/norepair.yaml"
printf '# lab-privileges.sh: the defaults, no NIC kind on the qemu strategy\nstrategies:\n  vhostuser: skip\n' >"$P/default.yaml"
# as-unit.sh CAPS CMD...: setpriv as the unit runs the agent (User=, no supplementary group,
# AmbientCapabilities= = CapabilityBoundingSet= = CAPS, NoNewPrivileges=). CAPS: "net_raw",
# "net_raw,+net_admin", or "" for none.
cat >"$P/as-unit.sh" <<SCRIPT
#!/bin/sh
c=\$1; shift
set=-all; [ -n "\$c" ] && set="-all,+\$c"
exec setpriv --reuid=$USR --regid=$GRP --clear-groups --no-new-privs \\
    --inh-caps="\$set" --ambient-caps="\$set" --bounding-set="\$set" -- "\$@"
SCRIPT
chmod 0755 "$LAB_DIR" "$LAB_STATE" "$P" "$P/as-unit.sh" && chmod 0644 "$P"/*.yaml || abort "permissions"
BIN=$P/rarp-announce AS=$P/as-unit.sh
export BIN AS
# the effective capabilities (CapEff) of the agent started on hypervisor $1
agent_capeff() {
    local pid
    pid=$(pgrep -g "${LAB_AGENT_PID[$1]}" -f "priv/rarp-announce run" | head -1)
    awk '/^CapEff/ {print $2}' "/proc/${pid:-0}/status" 2>/dev/null
}

# ---- 1. one capability removed: exit 1 at start, naming it
run_on_a() { # caps config; sets out, rc
    out=$(lab_exec a timeout 10 "$AS" "$1" "$BIN" run --config "$2" --metrics-address 127.0.0.1:0 2>&1)
    rc=$?
}
run_on_a net_raw "$P/default.yaml"
check "fdb repair on, CAP_NET_RAW only: run exits 1" 1 "$rc"
check "  ... naming CAP_NET_ADMIN" yes "$(has "$out" 'missing CAP_NET_ADMIN, needed for FDB repair')"
echo "     ($out)"
run_on_a "" "$P/norepair.yaml"
check "no capability: run exits 1" 1 "$rc"
check "  ... naming CAP_NET_RAW" yes "$(has "$out" 'missing CAP_NET_RAW, needed for RARP announces')"
out=$(lab_exec a timeout 10 "$AS" "" "$BIN" send -i br0 --mac 52:54:00:00:00:01 2>&1)
rc=$?
check "send without CAP_NET_RAW exits 1 at once" 1 "$rc"
check "  ... with a hint" yes "$(has "$out" 'missing CAP_NET_RAW, needed for sending frames')"

# ---- 2. announce --domain as nobody, outside the libvirt group
migrate a2b precopy
check "no agent, a->b: switch port (stale)" swa "$fdb_after"
out=$(lab_exec b timeout 30 "$AS" net_raw "$BIN" announce --domain "$LAB_VM" --config "$P/norepair.yaml" 2>&1)
rc=$?
check "announce --domain as $USR with CAP_NET_RAW only: exit status" 0 "$rc"
check "announce --domain as $USR: switch port" swb "$(lab_wait_fdb swb 3)"
[ "$rc" = 0 ] || sed 's/^/    /' <<<"$out"

# ---- 3. agents with CAP_NET_RAW only (no-fdb-repair.conf)
LAB_AGENT='exec "$AS" net_raw "$BIN" run --log-level debug --config "$LAB_STATE/priv/norepair.yaml"'
for h in a b; do : >"$LAB_STATE/agent-$h.log"; lab_agent_start "$h"; done
sleep "${LAB_AGENT_STARTUP:-1}"
for h in a b; do lab_agent_alive "$h" || abort "agent on $h (CAP_NET_RAW only) exited at start"; done
for h in a b; do check "agent on $h, CAP_NET_RAW only: CapEff" 0000000000002000 "$(agent_capeff "$h")"; done
migrate b2a precopy
check "CAP_NET_RAW only, b->a: switch port" "sw$dst" "$(lab_wait_fdb "sw$dst" 3)"
echo "     (client ping without FDB repair: $(lab_ping); $rarp_from_dst RARP from sw$dst)"
for h in a b; do
    log=$(cat "$LAB_STATE/agent-$h.log")
    check "agent on $h, CAP_NET_RAW only: no EPERM" no "$(has "$log" 'operation not permitted')"
    # host.frame_mark: SO_MARK with CAP_NET_RAW alone (Linux 5.17+), or
    # the agent says its frames went out unmarked.
    check "agent on $h, CAP_NET_RAW only: frames marked" no "$(has "$log" 'frames sent unmarked')"
    # The failover registry (running domains' live XML, device events) on
    # the read-only socket, and the reconvergence watches (the uplinks'
    # shared sockets), as the unit runs them.
    check "agent on $h, CAP_NET_RAW only: failover registry filled" yes "$(has "$log" 'registry of running domains refreshed')"
    check "agent on $h, CAP_NET_RAW only: device events subscribed" no "$(has "$log" 'libvirt refused device events')"
    check "agent on $h, CAP_NET_RAW only: reconvergence watches open" no "$(has "$log" 'cannot watch the network around the migration')"
    # internal/procs: one Go P, and no more after a landing out of the
    # uplink (no bridge-device send, no responder).
    check "agent on $h, CAP_NET_RAW only: one Go P" yes "$(has "$(grep -F '"msg":"Go Ps"' <<<"$log")" '"gomaxprocs":1,')"
    check "agent on $h, CAP_NET_RAW only: no P added" no "$(has "$log" 'the agent takes one more')"
done
# The premature-move watch opened at STARTED/MIGRATED on the destination:
# frames from the VM's MAC out of its uplink, a socket CAP_NET_RAW opens.
plog=$(grep -F 'watching for premature moves' "$LAB_STATE/agent-$dst.log")
check "agent on $dst, CAP_NET_RAW only: premature-move watch on up$dst" yes "$(has "$plog" "up$dst")"
lab_agent_stop
for h in a b; do cp "$LAB_STATE/agent-$h.log" "$LAB_STATE/agent-$h-netraw.log"; done

# ---- 4. agents with CAP_NET_RAW + CAP_NET_ADMIN (the unit as shipped)
LAB_AGENT='exec "$AS" net_raw,+net_admin "$BIN" run --log-level debug --config "$LAB_STATE/priv/default.yaml"'
for h in a b; do : >"$LAB_STATE/agent-$h.log"; lab_agent_start "$h"; done
sleep "${LAB_AGENT_STARTUP:-1}"
for h in a b; do lab_agent_alive "$h" || abort "agent on $h (CAP_NET_RAW+CAP_NET_ADMIN) exited at start"; done
check "agent on b, CAP_NET_RAW+CAP_NET_ADMIN: CapEff" 0000000000003000 "$(agent_capeff b)"
migrate a2b precopy
followed "CAP_NET_RAW+CAP_NET_ADMIN, a->b"
check "agent on b: FDB repair ran" yes "$(has "$(cat "$LAB_STATE/agent-b.log")" 'removed stale bridge entries')"
check "agent on b, CAP_NET_RAW+CAP_NET_ADMIN: frames marked" no "$(has "$(cat "$LAB_STATE/agent-b.log")" 'frames sent unmarked')"
lab_agent_stop

# ---- 5. the responder, CAP_NET_RAW only
printf '52:54:00:00:99:01 10.99.0.1\n' >"$P/ethers"
printf '# lab-privileges.sh: the responder, as with no-fdb-repair.conf\nfdb_repair: false\nstrategies:\n  vhostuser: skip\nresponder:\n  enabled: true\n  interfaces: [br0]\n  ethers: %s\n  off_link: true\n' \
    "$P/ethers" >"$P/responder.yaml"
chmod 0644 "$P/ethers" "$P/responder.yaml" || abort "permissions"
LAB_AGENT='exec "$AS" net_raw "$BIN" run --config "$LAB_STATE/priv/responder.yaml"'
: >"$LAB_STATE/agent-a.log"
lab_agent_start a
for _ in $(seq 1 50); do grep -qF 'answering RARP requests' "$LAB_STATE/agent-a.log" && break; sleep 0.1; done
check "agent on a with the responder, CAP_NET_RAW only: CapEff" 0000000000002000 "$(agent_capeff a)"
out=$(lab_ns c "$RARP_ANNOUNCE" query --interface cl0 --mac 52:54:00:00:99:01 --timeout 1s 2>&1)
check "responder as $USR with CAP_NET_RAW only: the client's request answered" yes "$(has "$out" '52:54:00:00:99:01 is 10.99.0.1')"
echo "     ($out)"
check "agent on a with the responder: no EPERM" no "$(has "$(cat "$LAB_STATE/agent-a.log")" 'operation not permitted')"
lab_agent_stop

# ---- 6. the address learner on the VM's tap, CAP_NET_RAW only (the VM is on B)
printf '# lab-privileges.sh: the address learner, as with no-fdb-repair.conf\nfdb_repair: false\nstrategies:\n  vhostuser: skip\nip_announce:\n  enabled: true\n  sources: {nova: false, static: false, learned: true, carried: false}\n' >"$P/learner.yaml"
chmod 0644 "$P/learner.yaml" || abort "permissions"
LAB_AGENT='exec "$AS" net_raw "$BIN" run --log-level debug --config "$LAB_STATE/priv/learner.yaml"'
: >"$LAB_STATE/agent-b.log"
lab_agent_start b
sleep "${LAB_AGENT_STARTUP:-1}"
lab_agent_alive b || abort "agent on b with the learner (CAP_NET_RAW only) exited at start"
check "agent on b with the learner, CAP_NET_RAW only: CapEff" 0000000000002000 "$(agent_capeff b)"
# the client forgets the VM and pings it: the VM's ARP reply, from the guest, teaches the
# learner; then the client's permanent entry is back
lab_ns c ip neigh del "$LAB_VM_IP" dev cl0
r=$(lab_ping)
lab_ns c ip neigh replace "$LAB_VM_IP" lladdr "$LAB_MAC" dev cl0 nud permanent
check "client pings the VM on B (its ARP reply teaches the learner)" ok "$r"
learned=no
for _ in $(seq 1 30); do
    grep -q '"msg":"learned an address of the guest".*"ip":"'"$LAB_VM_IP"'"' "$LAB_STATE/agent-b.log" && { learned=yes; break; }
    sleep 0.1
done
check "learner as $USR with CAP_NET_RAW only: learned $LAB_VM_IP" yes "$learned"
check "agent on b with the learner: no EPERM" no "$(has "$(cat "$LAB_STATE/agent-b.log")" 'operation not permitted')"
finish
