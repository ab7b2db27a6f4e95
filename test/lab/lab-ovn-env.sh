# shellcheck shell=bash
# Settings and helpers of the OVN variant of the lab (lab-ovn-up.sh, lab-e2e-ovn.sh). Source it
# after lab-env.sh; it runs nothing.
#
# Each hypervisor runs, next to its libvirtd, its own Open vSwitch (ovsdb-server and
# ovs-vswitchd, userspace datapath) and ovn-controller, with every path the packaged default
# inside the hypervisor's mount namespace: /run/openvswitch and /run/ovn are private bind
# mounts of $LAB_STATE/<h>/ovs-run and ovn-run. libvirtd's own ovs-vsctl, the agent and an
# operator's ovs-vsctl (lab_exec h ovs-vsctl ...) all find the same OVSDB.
# The OVN NB and SB databases and ovn-northd run on A (sockets in $LAB_STATE/ovn-central; the
# SB also listens on tcp:10.77.0.1:6642 for both ovn-controllers).
#
# The logical network: one logical switch with the VM's port ($LAB_LSP, named like a Neutron
# port UUID, plugged by libvirt with <virtualport type='openvswitch'><parameters
# interfaceid='$LAB_LSP'/>) and a localnet port to "physnet", which each chassis maps to its
# bridge br-ex whose port is the hypervisor's uplink to the lab's switch (upa/upb). The client
# (ralab-c) is on that switch: it reaches the VM through the localnet port of whichever
# chassis hosts it, and the switch's MAC table shows where the VM's frames came from.

LAB_LSP=${LAB_LSP:-3f1c2a8e-7d4b-4e0a-9b61-5c2d8f0e1a17}
LAB_LS=${LAB_LS:-lab-net}
OVN_CENTRAL=$LAB_STATE/ovn-central
declare -A LAB_CHASSIS=([a]=cha [b]=chb)

lab_nbctl() { ovn-nbctl --db="unix:$OVN_CENTRAL/nb.sock" "$@"; }
lab_sbctl() { ovn-sbctl --db="unix:$OVN_CENTRAL/sb.sock" "$@"; }
# ovs-vsctl / ovs-ofctl on hypervisor $1 (default paths inside it)
lab_vsctl() { local h=$1; shift; lab_exec "$h" ovs-vsctl --timeout=10 "$@"; }
lab_ofctl() { local h=$1; shift; lab_exec "$h" ovs-ofctl "$@"; }
# the VM port's SB Port_Binding: chassis, additional_chassis and options, one line
lab_binding() {
    lab_sbctl --bare --columns=chassis,additional_chassis,options find Port_Binding logical_port="$LAB_LSP" |
        paste -sd' ' - | tr -s ' '
}
# the chassis name (cha, chb) of a Chassis record UUID
lab_chassis_name() { [ -n "$1" ] && lab_sbctl --bare --columns=name list Chassis "$1"; }
# additional-chassis-activated from the Port_Binding's options (empty: not activated)
lab_activated() {
    lab_sbctl --bare --columns=options find Port_Binding logical_port="$LAB_LSP" |
        tr ' ' '\n' | sed -n 's/^additional-chassis-activated=//p'
}
# "true" when ovn-controller on hypervisor $1 has installed the VM port's flows (the
# Interface's external_ids:ovn-installed), else empty
lab_installed() {
    lab_vsctl "$1" --bare --columns=external_ids find Interface "external_ids:iface-id=$LAB_LSP" 2>/dev/null |
        tr ' ' '\n' | sed -n 's/^ovn-installed=//p' | tr -d '"'
}
# the flows on hypervisor $1's br-int that hold the port until a RARP activates it: OVN's
# table-0 "rarp, in_port=<port> -> controller" (the activation flow) and the drops around it
lab_blocking_flows() {
    local ofport
    ofport=$(lab_vsctl "$1" --bare --columns=ofport find Interface "external_ids:iface-id=$LAB_LSP" 2>/dev/null)
    [ -n "$ofport" ] || { echo 0; return; }
    lab_ofctl "$1" dump-flows br-int "table=0,in_port=$ofport,rarp" 2>/dev/null | grep -c 'controller' || true
}
# Neutron's options on the VM's logical port during a live migration from $1 to $2
lab_migrating() {
    lab_nbctl lsp-set-options "$LAB_LSP" requested-chassis="${LAB_CHASSIS[$1]},${LAB_CHASSIS[$2]}" activation-strategy=rarp
}
# ... and after it (Nova's post-live-migration port update): only the destination
lab_migrated() {
    lab_nbctl lsp-set-options "$LAB_LSP" requested-chassis="${LAB_CHASSIS[$1]}"
}
