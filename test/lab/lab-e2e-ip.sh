#!/bin/bash
# The IP layer follows the MAC (ip_announce): the VM's domain XML carries Nova's metadata with
# its fixed IPs (10.66.0.10 and fd66::10; a floating IP that must never be announced), QEMU's
# own announce is suppressed, and the agents run with ip_announce on and the router's
# addresses as gateways. A router namespace on the switch (10.66.0.1, fd66::1, Linux's
# default arp_accept=0) learns a neighbour only from an ARP request / NS addressed to it.
# With guest_announce each landing also asks QEMU (QMP announce-self for the NIC's alias).
# Prints PASS/FAIL lines and "N passed, M failed"; exit 1 on any failure. Run as root.
#
#   RARP_ANNOUNCE=path   the binary (default: rarp-announce on PATH, else ../../bin/)
#   LAB_KEEP=1           leave the lab up afterwards
#
# For each migration (pre-copy A->B, B->A), with the router's neighbour table flushed first
# (and checked empty), a capture of what enters the switch from the destination's port
# (tcpdump -Q in, decoded with tshark) must show, after the first RARP:
#   - GARP requests for 10.66.0.10 (sip = tip, tha = 0, to broadcast), 2 of them >= 1.1 s apart
#   - unsolicited NAs for fd66::10 (O=1, S=0, to ff02::1, hop limit 255, target link-layer
#     option = the VM's MAC, good checksum), 2 of them >= 1.1 s apart
#   - the directed ARP request to 10.66.0.1 and NS to fd66::1; nothing for the floating IP
# and the router must have a REACHABLE/STALE/DELAY entry for 10.66.0.10 and for fd66::10 within
# 1 s of the destination's Resumed event (none before).
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lab-env.sh"
. "$HERE/lab-e2e-lib.sh"
e2e_prepare tshark
PORT_ID=a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d
# Nova names a Linux bridge port's tap "tap" + the port id's first 11 characters
export LAB_VM_TAP=tap${PORT_ID:0:11}
export LAB_VM_METADATA="<nova:instance xmlns:nova='http://openstack.org/xmlns/libvirt/nova/1.1'><nova:name>ipvm</nova:name><nova:ports><nova:port uuid='$PORT_ID'><nova:ip type='fixed' address='$LAB_VM_IP' ipVersion='4'/><nova:ip type='fixed' address='fd66::10' ipVersion='6'/><nova:ip type='floating' address='203.0.113.7' ipVersion='4'/></nova:port></nova:ports></nova:instance>"
LAB_AGENT='exec "$RARP_ANNOUNCE" run --log-level debug --config "$LAB_STATE/agent-ip.yaml"'
lab_find_binary
RTR=$LAB_NS_PREFIX-r

"$HERE/lab-up.sh" || abort "lab-up.sh"
check "lab up: client pings the VM on A" ok "$(lab_ping)"
check "lab up: the VM's tap is Nova's name" "$LAB_VM_TAP" "$(lab_tap a)"

# the router: on the switch, IPv4 and IPv6, arp_accept=0 (the default, set anyway)
ip netns del "$RTR" 2>/dev/null
ip netns add "$RTR"
ip link add swr netns "${LAB_NETNS[sw]}" type veth peer name r0 netns "$RTR"
lab_ns sw ip link set swr master sw0 up
ip netns exec "$RTR" sysctl -qw net.ipv4.conf.all.arp_accept=0 net.ipv4.conf.default.arp_accept=0 \
    net.ipv6.conf.r0.disable_ipv6=0 net.ipv6.conf.r0.accept_dad=0
ip netns exec "$RTR" ip addr add 10.66.0.1/24 dev r0
ip netns exec "$RTR" ip addr add fd66::1/64 dev r0 nodad
ip netns exec "$RTR" ip link set lo up
ip netns exec "$RTR" ip link set r0 up
cleanup_router() { ip netns del "$RTR" 2>/dev/null; }
trap cleanup_router EXIT

cat >"$LAB_STATE/agent-ip.yaml" <<YAML
ip_announce:
  enabled: true
  gateways: [10.66.0.1, "fd66::1"]
  count: 2
  interval: 1.1s
  guest_announce: true
YAML
for h in a b; do lab_agent_start "$h"; done
sleep 1
for h in a b; do lab_agent_alive "$h" || abort "agent on $h exited at start"; done

# state of the router's entry for $1 ("" if none)
rneigh() { ip netns exec "$RTR" ip neigh show "$1" dev r0 | awk '{print $NF; exit}'; }

ip_migrate() { # dir
    local d=${1#*2} label="ip, pre-copy ${1/2/->}" cap poll cpid ppid lines
    ip netns exec "$RTR" ip neigh flush dev r0
    check "$label: router has no entry for $LAB_VM_IP / fd66::10 before" "/" "$(rneigh "$LAB_VM_IP")/$(rneigh fd66::10)"
    cap=$LAB_STATE/ip-$1-$(date +%H%M%S).pcap poll=$LAB_STATE/ip-$1-neigh.txt
    ip netns exec "${LAB_NETNS[sw]}" tcpdump -i "sw$d" -Q in -U -nn -w "$cap" "ether src $LAB_MAC" 2>"$cap.err" &
    cpid=$!
    for _ in $(seq 1 50); do grep -q '^listening' "$cap.err" && break; sleep 0.1; done
    # the router's neighbour state every 20 ms, stamped
    ( while :; do echo "$(date +%s.%N) v4:$(rneigh "$LAB_VM_IP") v6:$(rneigh fd66::10)"; sleep 0.02; done ) >"$poll" &
    ppid=$!
    migrate "$1" precopy
    sleep 1.5   # the second round of IP frames is due 1.1 s after the first
    kill "$ppid" "$cpid" 2>/dev/null; wait "$ppid" "$cpid" 2>/dev/null
    followed "$label"

    lines=$(tshark -r "$cap" -T fields -E separator='|' -e frame.time_epoch -e eth.type -e arp.opcode \
        -e arp.src.proto_ipv4 -e arp.dst.proto_ipv4 -e arp.dst.hw_mac -e icmpv6.type -e icmpv6.nd.na.flag.o \
        -e icmpv6.nd.na.flag.s -e icmpv6.nd.na.target_address -e ipv6.hlim -e ipv6.dst -e icmpv6.opt.linkaddr \
        -e icmpv6.checksum.status -e icmpv6.nd.ns.target_address -e eth.dst 2>/dev/null)
    echo "$lines" >"$cap.txt"
    # one summary line: first RARP, GARP times, bad GARPs, NA times, bad NAs, gateway ARPs, NSs, floating
    local sum
    sum=$(awk -F'|' -v ip="$LAB_VM_IP" -v mac="$LAB_MAC" '
        $2 == "0x8035" && !r { r = $1 }
        $2 == "0x0806" && $3 == "1" && $4 == ip && $5 == ip { g = g " " $1; if ($6 != "00:00:00:00:00:00" || $16 != "ff:ff:ff:ff:ff:ff") bg++ }
        $2 == "0x0806" && $3 == "1" && $4 == ip && $5 == "10.66.0.1" { ga++ }
        $2 == "0x86dd" && $7 == "136" { n = n " " $1; if ($8 != "1" || $9 != "0" || $10 != "fd66::10" || $11 != "255" || $12 != "ff02::1" || $13 != mac || $14 != "1") bn++ }
        $2 == "0x86dd" && $7 == "135" && $15 == "fd66::1" { ns++ }
        /203\.0\.113\.7/ { fl++ }
        END { printf "%s|%s|%d|%s|%d|%d|%d|%d\n", r, g, bg, n, bn, ga, ns, fl }' <<<"$lines")
    local rarp garps badg nas badn gwa gwn flo
    IFS='|' read -r rarp garps badg nas badn gwa gwn flo <<<"$sum"
    echo "     (capture $cap: first RARP $rarp; GARPs$garps; NAs$nas)"
    check "$label: GARP requests for $LAB_VM_IP from sw$d" 2 "$(wc -w <<<"$garps")"
    check "$label: GARP fields (tha 0, to broadcast)" 0 "$badg"
    check "$label: unsolicited NAs for fd66::10 from sw$d" 2 "$(wc -w <<<"$nas")"
    check "$label: NA fields (O=1 S=0 target, hop limit 255, ff02::1, tlla, checksum good)" 0 "$badn"
    check "$label: directed ARP to 10.66.0.1 / NS to fd66::1" "2/2" "$gwa/$gwn"
    check "$label: nothing for the floating IP" 0 "$flo"
    # shellcheck disable=SC2086
    check "$label: IP frames after the first RARP, repeats >= 1.1 s apart" ok "$(awk -v r="$rarp" -v g="$garps" -v n="$nas" 'BEGIN {
        ng = split(g, G, " "); nn = split(n, N, " ")
        if (r == "" || ng < 2 || nn < 2) { print "missing"; exit }
        if (G[1] < r || N[1] < r) { print "before the RARP"; exit }
        if (G[2] - G[1] < 1.1 || N[2] - N[1] < 1.1) { printf "%.3f/%.3f s apart\n", G[2]-G[1], N[2]-N[1]; exit }
        print "ok" }')"
    local first first6
    first=$(awk '$2 ~ /^v4:(REACHABLE|STALE|DELAY)$/ {print $1; exit}' "$poll")
    check "$label: router learned $LAB_VM_IP within 1 s of Resumed" ok "$(awk -v a="$resumed_ts" -v b="$first" 'BEGIN {
        if (b == "" || a == "") { print "never"; exit }
        if (b - a > 1.0) { printf "%.0f ms\n", (b-a)*1000; exit }
        print "ok" }')"
    echo "     (router entry $(awk -v a="$resumed_ts" -v b="$first" 'BEGIN{printf "%.0f ms", (b-a)*1000}') after the Resumed event, first RARP $(latency) after it)"
    # the guest (iPXE) has no IPv6 address: the router's entry later fails its NUD probes, so
    # what counts is that the NS created it, seen by the poller during the migration
    first6=$(awk '$3 ~ /^v6:(REACHABLE|STALE|DELAY)$/ {print $1; exit}' "$poll")
    check "$label: router learned fd66::10 within 1 s of Resumed" ok "$(awk -v a="$resumed_ts" -v b="$first6" 'BEGIN {
        if (b == "" || a == "") { print "never"; exit }
        if (b - a > 1.0) { printf "%.0f ms\n", (b-a)*1000; exit }
        print "ok" }')"
}

ip_migrate a2b
ip_migrate b2a
for h in a b; do
    echo "     (agent $h: rarp_announce_ip_frames_total garp_request sent $(lab_metric "$h" 'rarp_announce_ip_frames_total{kind="garp_request",result="sent"}'), addresses nova $(lab_metric "$h" 'rarp_announce_ip_addresses_total{source="nova"}'))"
done
# guest first: each landing also asked QEMU (QMP announce-self for net0, through libvirt's
# read-write socket); iPXE does not negotiate GUEST_ANNOUNCE, so QEMU sends a RARP for it
for h in a b; do
    check "agent on $h: QEMU asked once to make the guest announce itself" 1/0 \
        "$(lab_metric "$h" 'rarp_announce_ip_guest_announces_total{result="ok"}')/$(lab_metric "$h" 'rarp_announce_ip_guest_announces_total{result="failed"}')"
done
check "agent on b: 2 GARPs sent" 2 "$(lab_metric b 'rarp_announce_ip_frames_total{kind="garp_request",result="sent"}')"
check "agent on b: the floating IP was not taken from Nova's metadata" 2 "$(lab_metric b 'rarp_announce_ip_addresses_total{source="nova"}')"
cleanup_router
finish
