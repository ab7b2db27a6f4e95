#!/bin/bash
# Learned addresses travel with the domain (ip_announce.sources.learned + carry_learned): no Nova
# metadata and no static map. The client pings the iPXE guest on A; its ARP replies teach A's
# agent (a learner on the VM's tap) its IP, 10.66.0.10, and A's agent writes it into the domain's
# live XML in our own <metadata> namespace (read-write socket). After the migration to B, B's
# agent reads it from the live XML at landing and sends GARPs for 10.66.0.10 after its RARPs.
# Negative control: with the agent on the source on the read-only socket it cannot write, says
# so once, and the destination announces no IP. QEMU's own announce is suppressed.
# Prints PASS/FAIL lines and "N passed, M failed"; exit 1 on any failure. Run as root.
#
#   RARP_ANNOUNCE=path   the binary (default: rarp-announce on PATH, else ../../bin/)
#   LAB_KEEP=1           leave the lab up afterwards
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lab-env.sh"
. "$HERE/lab-e2e-lib.sh"
e2e_prepare tshark
unset LAB_VM_METADATA
NS=https://github.com/rarp-announce/rarp-announce/xmlns/addresses/1
lab_find_binary

"$HERE/lab-up.sh" || abort "lab-up.sh"
check "lab up: client pings the VM on A" ok "$(lab_ping)"
check "lab up: no metadata of ours in the XML" 0 "$(lab_virsh a dumpxml "$LAB_VM" | grep -c "$NS")"

# agent config; $1: the libvirt socket line (or nothing)
agent_config() { # file socket
    {
        [ -n "$2" ] && printf 'libvirt:\n  socket: %s\n' "$2"
        cat <<YAML
ip_announce:
  enabled: true
  sources: {nova: false, static: false, learned: true, carried: true}
  carry_learned: true
  carry_every: 1s
  count: 2
  interval: 1.1s
YAML
    } >"$1"
}
agent_config "$LAB_STATE/agent-carry.yaml" ""
agent_config "$LAB_STATE/agent-carry-ro.yaml" /run/libvirt/libvirt-sock-ro
start_agents() { # config of a, config of b
    LAB_AGENT="exec \"\$RARP_ANNOUNCE\" run --log-level debug --config \"$LAB_STATE/\$LAB_CFG\""
    LAB_CFG=$1 lab_agent_start a
    LAB_CFG=$2 lab_agent_start b
    sleep 1.5
    for h in a b; do lab_agent_alive "$h" || abort "agent on $h exited at start"; done
}
export LAB_CFG
# the client forgets the VM (lab-up.sh gave it a permanent entry) and pings it: the VM answers
# the client's ARP request; then the permanent entry is back, so no later ARP of the client's
# teaches the switch where the VM went
teach() {
    local r
    lab_ns c ip neigh del "$LAB_VM_IP" dev cl0
    r=$(lab_ping)
    lab_ns c ip neigh replace "$LAB_VM_IP" lladdr "$LAB_MAC" dev cl0 nud permanent
    echo "$r"
}
# our metadata in $1's live XML, on one line
carried_xml() { lab_virsh "$1" dumpxml "$LAB_VM" | tr -d '\n' | grep -o "<rarp:addresses[^>]*$NS.*</rarp:addresses>"; }
wait_carried() { # h ip
    local _
    for _ in $(seq 1 50); do carried_xml "$1" | grep -q "address=\"$2\"" && { echo yes; return; }; sleep 0.1; done
    echo no
}
# migrate $1 with a capture of what enters the switch from the destination's port; sets sum:
# "first RARP|GARP times|GARPs with bad fields"
capture_migrate() { # dir label
    local d=${1#*2} cap cpid
    cap=$LAB_STATE/carry-$1-$(date +%H%M%S).pcap
    ip netns exec "${LAB_NETNS[sw]}" tcpdump -i "sw$d" -Q in -U -nn -w "$cap" "ether src $LAB_MAC" 2>"$cap.err" &
    cpid=$!
    for _ in $(seq 1 50); do grep -q '^listening' "$cap.err" && break; sleep 0.1; done
    migrate "$1" precopy
    sleep 1.5   # the second GARP is due 1.1 s after the first
    kill "$cpid" 2>/dev/null; wait "$cpid" 2>/dev/null
    followed "$2"
    tshark -r "$cap" -T fields -E separator='|' -e frame.time_epoch -e eth.type -e arp.opcode \
        -e arp.src.proto_ipv4 -e arp.dst.proto_ipv4 -e arp.dst.hw_mac -e eth.dst 2>/dev/null >"$cap.txt"
    sum=$(awk -F'|' -v ip="$LAB_VM_IP" '
        $2 == "0x8035" && !r { r = $1 }
        $2 == "0x0806" && $3 == "1" && $4 == ip && $5 == ip { g = g " " $1; if ($6 != "00:00:00:00:00:00" || $7 != "ff:ff:ff:ff:ff:ff") bg++ }
        END { printf "%s|%s|%d\n", r, g, bg }' "$cap.txt")
    echo "     (capture $cap: $(cut -d'|' -f1-2 <<<"$sum"))"
}

# ---- carried: A learns and writes, B announces
start_agents agent-carry.yaml agent-carry.yaml
check "client pings the VM on A (teaches A's agent)" ok "$(teach)"
check "A's agent logged the learned address" 1 "$(grep -c '"msg":"learned an address of the guest".*"ip":"'"$LAB_VM_IP"'"' "$LAB_STATE/agent-a.log")"
check "A's live XML carries $LAB_VM_IP in our namespace" yes "$(wait_carried a "$LAB_VM_IP")"
echo "     (A: $(carried_xml a))"
check "A's agent: metadata writes ok" 1 "$(lab_metric a 'rarp_announce_ip_metadata_writes_total{result="ok"}')"
capture_migrate a2b "carried, pre-copy a->b"
IFS='|' read -r rarp garps badg <<<"$sum"
check "carried: GARP requests for $LAB_VM_IP entering from swb" 2 "$(wc -w <<<"$garps")"
check "carried: GARP fields (sip = tip, tha 0, to broadcast)" 0 "$badg"
# shellcheck disable=SC2086
check "carried: GARPs after the first RARP, >= 1.1 s apart" ok "$(awk -v r="$rarp" -v g="$garps" 'BEGIN {
    n = split(g, G, " ")
    if (r == "" || n < 2) { print "missing"; exit }
    if (G[1] < r) { print "before the RARP"; exit }
    if (G[2] - G[1] < 1.1) { printf "%.3f s apart\n", G[2]-G[1]; exit }
    print "ok" }')"
check "B's agent: 1 address from the carried source" 1 "$(lab_metric b 'rarp_announce_ip_addresses_total{source="carried"}')"
check "virsh dumpxml on B shows our metadata with $LAB_VM_IP" yes "$(carried_xml b | grep -q "address=\"$LAB_VM_IP\"" && echo yes || echo no)"
echo "     (B: $(carried_xml b))"
lab_agent_stop

# ---- negative control: the source (now B) cannot write; the destination (A) announces no IP
lab_virsh b metadata "$LAB_VM" "$NS" --live --remove >/dev/null
check "B's live XML: our metadata removed" 0 "$(lab_virsh b dumpxml "$LAB_VM" | grep -c "$NS")"
: >"$LAB_STATE/agent-a.log"; : >"$LAB_STATE/agent-b.log"
start_agents agent-carry.yaml agent-carry-ro.yaml
check "client pings the VM on B (teaches B's agent)" ok "$(teach)"
sleep 2
check "read-only: B's agent learned the address" 1 "$(grep -c '"msg":"learned an address of the guest".*"ip":"'"$LAB_VM_IP"'"' "$LAB_STATE/agent-b.log")"
check "read-only: B's agent says once that it cannot carry" 1 "$(grep -c 'refuses to write the domain.s metadata' "$LAB_STATE/agent-b.log")"
check "read-only: metadata writes denied 1, ok 0" 1/0 \
    "$(lab_metric b 'rarp_announce_ip_metadata_writes_total{result="denied"}')/$(lab_metric b 'rarp_announce_ip_metadata_writes_total{result="ok"}')"
check "read-only: B's live XML has no metadata of ours" 0 "$(lab_virsh b dumpxml "$LAB_VM" | grep -c "$NS")"
capture_migrate b2a "read-only source, pre-copy b->a"
IFS='|' read -r rarp garps badg <<<"$sum"
check "read-only source: RARPs entered from swa" yes "$([ -n "$rarp" ] && echo yes || echo no)"
check "read-only source: no GARP for $LAB_VM_IP" 0 "$(wc -w <<<"$garps")"
check "read-only source: A's agent had no carried address" 0 "$(lab_metric a 'rarp_announce_ip_addresses_total{source="carried"}')"
finish
