#!/bin/bash
# The OVN variant of the lab (see lab-ovn-env.sh and README.md, "OVN"): lab-up.sh's networks and
# libvirtds, plus on each hypervisor Open vSwitch (userspace datapath) and ovn-controller, the
# OVN databases and northd on A, and the VM on A plugged into br-int as Nova/os-vif plugs it
# for ML2/OVN. QEMU's own announce is suppressed unless LAB_QEMU_ANNOUNCE=1.
# Tears down any previous lab first; lab-down.sh tears this one down too.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lab-env.sh"
lab_close_inherited_fds
. "$HERE/lab-ovn-env.sh"
[ "$(id -u)" = 0 ] || die "must run as root"
missing=()
for c in ovsdb-server ovs-vswitchd ovs-vsctl ovs-ofctl ovsdb-tool ovn-controller ovn-northd ovn-nbctl ovn-sbctl; do
    command -v "$c" >/dev/null || missing+=("$c")
done
[ ${#missing[@]} = 0 ] || die "missing commands: ${missing[*]} (Debian packages openvswitch-switch, ovn-central, ovn-host)"
for f in /usr/share/openvswitch/vswitch.ovsschema /usr/share/ovn/ovn-nb.ovsschema /usr/share/ovn/ovn-sb.ovsschema; do
    [ -f "$f" ] || die "missing $f (Debian packages openvswitch-common, ovn-common)"
done

T0=$(date +%s.%N)
LAB_NO_VM=1 LAB_NORARP=0 "$HERE/lab-up.sh"

# ---------------------------------------------------------------- OVN central on A
C=$OVN_CENTRAL
mkdir -p "$C"
ovsdb-tool create "$C/nb.db" /usr/share/ovn/ovn-nb.ovsschema
ovsdb-tool create "$C/sb.db" /usr/share/ovn/ovn-sb.ovsschema
lab_ns a ovsdb-server "$C/nb.db" --remote="punix:$C/nb.sock" --pidfile="$C/nb.pid" --unixctl="$C/nb.ctl" \
    --log-file="$C/nb.log" --detach --no-chdir
lab_ns a ovsdb-server "$C/sb.db" --remote="punix:$C/sb.sock" --remote="ptcp:6642:${LAB_MIGIP[a]}" \
    --pidfile="$C/sb.pid" --unixctl="$C/sb.ctl" --log-file="$C/sb.log" --detach --no-chdir
lab_ns a env OVN_RUNDIR="$C" ovn-northd --ovnnb-db="unix:$C/nb.sock" --ovnsb-db="unix:$C/sb.sock" \
    --pidfile="$C/northd.pid" --log-file="$C/northd.log" --detach --no-chdir

# ---------------------------------------------------------------- OVS + ovn-controller per hypervisor
for h in a b; do
    d=$LAB_STATE/$h
    mkdir -p "$d/ovs-run" "$d/ovn-run" "$d/ovs"
    # The mount points are created in the host's /run if missing (empty directories); the
    # mounts themselves stay inside the hypervisor's mount namespace.
    mkdir -p /run/openvswitch /run/ovn
    lab_exec "$h" mount --bind "$d/ovs-run" /run/openvswitch
    lab_exec "$h" mount --bind "$d/ovn-run" /run/ovn
    ovsdb-tool create "$d/ovs/conf.db" /usr/share/openvswitch/vswitch.ovsschema
    lab_exec "$h" ovsdb-server "$d/ovs/conf.db" --remote=punix:/run/openvswitch/db.sock \
        --pidfile --log-file="$d/ovs/ovsdb-server.log" --detach --no-chdir
    lab_vsctl "$h" --no-wait init
    lab_exec "$h" ovs-vswitchd --pidfile --log-file="$d/ovs/ovs-vswitchd.log" --detach --no-chdir
    # the uplink leaves the Linux bridge for OVN's provider bridge (localnet "physnet")
    lab_ns "$h" ip link set "up$h" nomaster
    lab_vsctl "$h" -- --may-exist add-br br-ex -- set bridge br-ex datapath_type=netdev \
        -- --may-exist add-port br-ex "up$h"
    lab_vsctl "$h" set open . external_ids:system-id="${LAB_CHASSIS[$h]}" \
        external_ids:hostname="${LAB_CHASSIS[$h]}" \
        external_ids:ovn-remote="tcp:${LAB_MIGIP[a]}:6642" external_ids:ovn-encap-type=geneve \
        external_ids:ovn-encap-ip="${LAB_MIGIP[$h]}" external_ids:ovn-bridge-datapath-type=netdev \
        external_ids:ovn-bridge-mappings=physnet:br-ex
    lab_exec "$h" ovn-controller --pidfile --log-file="$d/ovs/ovn-controller.log" --detach --no-chdir
done
for h in a b; do
    for _ in $(seq 1 100); do lab_vsctl "$h" br-exists br-int 2>/dev/null && break; sleep 0.1; done
    lab_vsctl "$h" br-exists br-int || die "ovn-controller on $h did not create br-int (see $LAB_STATE/$h/ovs/ovn-controller.log)"
done
log "OVS + ovn-controller up on both hypervisors ($(since "$T0")s)"

# ---------------------------------------------------------------- the logical network
lab_nbctl ls-add "$LAB_LS" \
    -- lsp-add "$LAB_LS" "$LAB_LSP" -- lsp-set-addresses "$LAB_LSP" "$LAB_MAC $LAB_VM_IP" \
    -- lsp-set-options "$LAB_LSP" requested-chassis=cha \
    -- lsp-add "$LAB_LS" ln-physnet -- lsp-set-type ln-physnet localnet \
    -- lsp-set-addresses ln-physnet unknown -- lsp-set-options ln-physnet network_name=physnet
for _ in $(seq 1 100); do [ "$(lab_sbctl --bare --columns=name list Chassis | grep -c .)" = 2 ] && break; sleep 0.1; done
[ "$(lab_sbctl --bare --columns=name list Chassis | grep -c .)" = 2 ] || die "both chassis did not register in the SB"

[ "${LAB_NO_VM:-0}" = 1 ] && { log "OVN lab up without VM in $(since "$T0")s"; exit 0; }

# ---------------------------------------------------------------- the VM
LAB_QEMU_ANNOUNCE=${LAB_QEMU_ANNOUNCE:-0} lab_vm_start "<interface type='bridge'>
      <source bridge='br-int'/>
      <virtualport type='openvswitch'>
        <parameters interfaceid='$LAB_LSP'/>
      </virtualport>
      <mac address='$LAB_MAC'/>
      <model type='virtio'/>
    </interface>"
for _ in $(seq 1 100); do
    [ "$(lab_installed a)" = true ] && break
    sleep 0.1
done
for _ in $(seq 1 60); do
    lab_ns c ping -c1 -W1 "$LAB_VM_IP" >/dev/null 2>&1 && break
done
[ "$(lab_fdbport)" = swa ] || die "the guest never answered ping at $LAB_VM_IP (QEMU log: $LAB_STATE/a/log/libvirt/qemu/$LAB_VM.log, binding: $(lab_binding))"
log "OVN lab up in $(since "$T0")s: VM answers ping through A's localnet port, switch port swa"
