#!/bin/bash
# EVPN rig: two "hypervisor" namespaces running Debian's FRR (zebra + bgpd)
# with iBGP l2vpn evpn between them, one VXLAN (VNI 100) in a bridge with
# neigh_suppress on, and a silent "VM" namespace on hypervisor B's bridge.
# Used by evpn_test.go to show which frames make B advertise the VM's
# MAC+IP (EVPN type-2) route.
#
#   rig.sh up | down | macip HV | vtysh HV CMD...
#
# EVPN_PREFIX (namespace prefix, default "ev") and EVPN_DIR (config, state
# and logs, default /tmp/rarp-evpn) keep several rigs apart. FRR runs with
# its own config, sockets and pid files under EVPN_DIR: the host's
# /etc/frr and frr.service are never touched.
#
#  [ns ${P}vmb: eth0 52:54:00:66:00:10 ]
#        | veth (vmport on B)
#  [ns ${P}hvb: br100 (SVI 10.66.0.2/24 fd66::2/64) + vxlan100, zebra, bgpd, ul 192.168.50.2]
#        | veth
#  [ns ${P}ul: bridge ul0 (the underlay)]
#        | veth
#  [ns ${P}hva: br100 (SVI 10.66.0.3/24 fd66::3/64) + vxlan100, zebra, bgpd, ul 192.168.50.1]
set -euo pipefail

P=${EVPN_PREFIX:-ev}
D=${EVPN_DIR:-/tmp/rarp-evpn}
VM_MAC=${EVPN_VM_MAC:-52:54:00:66:00:10}
FRR=/usr/lib/frr

ns() { ip netns exec "$1" "${@:2}"; }

hv_up() { # name underlay-ip svi-ip svi-ip6
    local hv=$1 ul=$2 svi=$3 svi6=$4 n=${P}$1
    ip netns add "$n"
    ns "$n" ip link set lo up
    ip link add ul0 netns "$n" type veth peer name "ul-$hv" netns "${P}ul"
    ns "${P}ul" ip link set "ul-$hv" master ul0 up
    ns "$n" ip addr add "$ul/24" dev ul0
    ns "$n" ip link set ul0 up
    # One VNI in a plain (not VLAN-aware) bridge: the bridge is the SVI.
    # learning off on the VXLAN port: remote MACs come from BGP, not from
    # data-plane learning; neigh_suppress on: ARP/ND are answered locally
    # from the EVPN-learned table instead of flooded over the fabric.
    ns "$n" ip link add br100 type bridge stp_state 0 forward_delay 0
    ns "$n" ip link add vxlan100 type vxlan id 100 local "$ul" dstport 4789 nolearning
    ns "$n" ip link set vxlan100 master br100 addrgenmode none
    ns "$n" bridge link set dev vxlan100 neigh_suppress on learning off
    ns "$n" ip addr add "$svi/24" dev br100
    ns "$n" ip addr add "$svi6/64" dev br100 nodad
    ns "$n" ip link set vxlan100 up
    ns "$n" ip link set br100 up
    # Linux's defaults: a GARP or an unsolicited NA creates no neighbour.
    # forwarding=1 on the SVI, as on any EVPN gateway (IRB): the kernel
    # applies accept_untracked_na only on a forwarding interface.
    ns "$n" sysctl -qw net.ipv4.conf.br100.arp_accept=0 net.ipv6.conf.br100.accept_untracked_na=0 \
        net.ipv6.conf.br100.forwarding=1

    local d=$D/$hv
    mkdir -p "$d"
    chown -R frr:frr "$d"
    local peer=192.168.50.1
    [ "$ul" = 192.168.50.1 ] && peer=192.168.50.2
    cat >"$d/zebra.conf" <<EOF
hostname $hv
log file $d/zebra.log
EOF
    cat >"$d/bgpd.conf" <<EOF
hostname $hv
log file $d/bgpd.log
router bgp 65000
 bgp router-id $ul
 no bgp default ipv4-unicast
 no bgp ebgp-requires-policy
 neighbor $peer remote-as 65000
 neighbor $peer timers 1 3
 neighbor $peer timers connect 1
 address-family l2vpn evpn
  neighbor $peer activate
  advertise-all-vni
 exit-address-family
EOF
    chown frr:frr "$d"/*.conf
    ns "$n" "$FRR/zebra" -d -f "$d/zebra.conf" -i "$d/zebra.pid" -z "$d/zserv.api" --vty_socket "$d" -A 127.0.0.1 -P 0
    ns "$n" "$FRR/bgpd" -d -f "$d/bgpd.conf" -i "$d/bgpd.pid" -z "$d/zserv.api" --vty_socket "$d" -A 127.0.0.1 -P 0 -l "$ul"
}

up() {
    down >/dev/null 2>&1 || true
    mkdir -p "$D"
    ip netns add "${P}ul"
    ns "${P}ul" ip link set lo up
    ns "${P}ul" ip link add ul0 type bridge stp_state 0 forward_delay 0
    ns "${P}ul" ip link set ul0 up
    hv_up hva 192.168.50.1 10.66.0.3 fd66::3
    hv_up hvb 192.168.50.2 10.66.0.2 fd66::2
    # The VM, on B, silent: IPv6 off so its kernel sends nothing by itself.
    ip netns add "${P}vmb"
    ns "${P}vmb" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
    ip link add eth0 netns "${P}vmb" address "$VM_MAC" type veth peer name vmport netns "${P}hvb"
    ns "${P}hvb" ip link set vmport master br100 up
    ns "${P}vmb" ip link set eth0 up
    # Wait for the iBGP session (timers 1 3, connect 1).
    for _ in $(seq 100); do
        vtysh hvb 'show bgp l2vpn evpn summary json' 2>/dev/null | grep -q '"state":"Established"' && break
        sleep 0.2
    done
    vtysh hvb 'show bgp l2vpn evpn summary json' | grep -q '"state":"Established"' || {
        echo "rig.sh: BGP session did not come up" >&2
        vtysh hvb 'show bgp l2vpn evpn summary' >&2 || true
        exit 1
    }
}

down() {
    for hv in hva hvb; do
        for dm in bgpd zebra; do
            f=$D/$hv/$dm.pid
            if [ -s "$f" ]; then
                kill "$(cat "$f")" 2>/dev/null || true
            fi
        done
    done
    sleep 0.3
    for n in vmb hva hvb ul; do
        ip netns del "${P}$n" 2>/dev/null || true
    done
    rm -rf "$D"
}

vtysh() { # hv cmd...
    local hv=$1
    shift
    ns "${P}$hv" /usr/bin/vtysh --vty_socket "$D/$hv" -c "$*"
}

case "${1:-}" in
up) up ;;
down) down ;;
macip) vtysh "$2" 'show bgp l2vpn evpn route type macip' ;;
vtysh) vtysh "$2" "${@:3}" ;;
*)
    echo "usage: $0 up|down|macip HV|vtysh HV CMD" >&2
    exit 2
    ;;
esac
