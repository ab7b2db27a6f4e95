#!/bin/bash
# Build the lab from scratch and start the VM on hypervisor A (tears down any previous lab
# first). Installs nothing: missing packages are named and the script stops.
#
#   LAB_QEMU_ANNOUNCE=0  QEMU sends no RARP after an incoming migration
#                        (-global migration.announce-rounds=0), so only an agent can move the
#                        switch. Default 1: QEMU's own 5 RARPs (0, 50, 200, 450, 800 ms).
#   LAB_NORARP=1         QEMU announces, but an nft rule on both hypervisors' br0 drops RARP
#                        coming out of VM taps (the frames are lost as on a port that is not wired
#                        yet); frames the host sends on br0 itself, an agent's, still get out.
#   LAB_VIRT=qemu|kvm    domain type (default qemu = TCG; see README.md)
#   LAB_NO_VM=1          networks and daemons only
#   LAB_VM_METADATA=xml  the domain's <metadata> content (e.g. Nova's, lab-e2e-ip.sh)
#   LAB_VM_TAP=name      the NIC's <target dev> (default: libvirt's vnetN)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lab-env.sh"
[ "$(id -u)" = 0 ] || die "must run as root"

# ---------------------------------------------------------------- what must be installed
# package:probe, probe = a command or a file (glob). Checked, never installed: CI installs them
# (.ci/run); a developer runs the apt-get line printed below.
need=(libvirt-daemon:libvirtd libvirt-clients:virsh
      "libvirt-daemon-driver-qemu:/usr/lib/*/libvirt/connection-driver/libvirt_driver_qemu.so"
      qemu-system-x86:qemu-system-x86_64 seabios:/usr/share/seabios/bios-256k.bin
      ipxe-qemu:/usr/lib/ipxe/qemu/efi-virtio.rom ipxe:/boot/ipxe.lkrn
      iproute2:ip iproute2:bridge tcpdump:tcpdump iputils-ping:ping
      util-linux:nsenter util-linux:unshare util-linux:setsid util-linux:mountpoint)
[ "${LAB_NORARP:-0}" = 1 ] && need+=(nftables:nft)
missing=()
for n in "${need[@]}"; do
    pkg=${n%%:*} probe=${n#*:}
    if [[ $probe == /* ]]; then compgen -G "$probe" >/dev/null && continue
    else command -v "$probe" >/dev/null && continue; fi
    [[ " ${missing[*]} " == *" $pkg "* ]] || missing+=("$pkg")
done
[ ${#missing[@]} = 0 ] || die "missing packages: ${missing[*]}
    install them with: apt-get install --no-install-recommends ${missing[*]}"

"$HERE/lab-down.sh"
T0=$(date +%s.%N)

# ---------------------------------------------------------------- networks
for n in sw a b c; do
    ip netns add "${LAB_NETNS[$n]}"
    lab_ns "$n" ip link set lo up
    # no IPv6: no DAD, router solicitations or MLD reports in captures and MAC tables
    lab_ns "$n" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
done
# the upstream switch: 300 s ageing like a real one, no STP, no forwarding delay
lab_ns sw ip link add sw0 type bridge stp_state 0 forward_delay 0 ageing_time 30000
lab_ns sw ip link set sw0 up
for h in a b; do
    # veths are created straight inside the namespaces: no name ever exists in the root netns
    ip link add "sw$h" netns "${LAB_NETNS[sw]}" type veth peer name "up$h" netns "${LAB_NETNS[$h]}"
    lab_ns sw ip link set "sw$h" master sw0 up
    lab_ns "$h" ip link add br0 type bridge stp_state 0 forward_delay 0
    lab_ns "$h" ip link set br0 up
    lab_ns "$h" ip link set "up$h" master br0 up
done
# libvirt RPC and the QEMU migration stream use their own A<->B link, never the switch
ip link add mga netns "${LAB_NETNS[a]}" type veth peer name mgb netns "${LAB_NETNS[b]}"
for h in a b; do
    lab_ns "$h" ip addr add "${LAB_MIGIP[$h]}/24" dev "mg$h"
    lab_ns "$h" ip link set "mg$h" up
done
ip link add swc netns "${LAB_NETNS[sw]}" type veth peer name cl0 netns "${LAB_NETNS[c]}"
lab_ns sw ip link set swc master sw0 up
lab_ns c ip addr add "$LAB_CLIENT_IP/24" dev cl0
lab_ns c ip link set cl0 up
# A static neighbour entry: the client never broadcasts an ARP request for the VM. Such a
# broadcast would reach the VM wherever it is, its reply would teach the switch, and a test of
# "without an agent the switch stays stale" would pass or fail by the client's ARP timers.
lab_ns c ip neigh replace "$LAB_VM_IP" lladdr "$LAB_MAC" dev cl0 nud permanent
log "networks up ($(since "$T0")s)"

# ---------------------------------------------------------------- hypervisors
mkdir -p "$LAB_STATE/ns"
# a persistent mount namespace is a bind mount of /proc/PID/ns/mnt onto a file, which must sit
# on a private mount (else it would propagate, and the namespace would pin itself)
mount --bind "$LAB_STATE/ns" "$LAB_STATE/ns"
mount --make-private "$LAB_STATE/ns"
for h in a b; do
    d=$LAB_STATE/$h ip=${LAB_MIGIP[$h]}
    # /var/cache/libvirt survives lab-down: libvirt's QEMU capabilities cache (probing QEMU
    # costs 3-4 s per daemon; libvirt revalidates the cache itself). LAB_PURGE=1 lab-down.sh.
    mkdir -p "$d/etc/libvirt/qemu" "$d/run/libvirt" "$d/lib/libvirt" "$d/log/libvirt" "$LAB_DIR/cache/$h"
    cat > "$d/etc/libvirt/libvirtd.conf" <<CONF
# lab hypervisor $h: TCP without auth only on the private migration link
host_uuid = "${LAB_UUID[$h]}"
listen_tls = 0
listen_tcp = 1
listen_addr = "$ip"
auth_tcp = "none"
auth_unix_ro = "none"
auth_unix_rw = "none"
log_outputs = "3:file:/var/log/libvirt/libvirtd.log"
CONF
    cat > "$d/etc/libvirt/qemu.conf" <<CONF
# QEMU as root without cgroups or a security driver: two daemons share this machine's cgroups
# and SELinux/AppArmor labels, which would otherwise collide
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
cgroup_controllers = [ ]
# the destination QEMU listens here, and the source is told to connect here (both "hosts" have
# the same hostname)
migration_address = "$ip"
migration_host = "$ip"
# QEMU's stderr straight to /var/log/libvirt/qemu/<vm>.log: no virtlogd needed
stdio_handler = "file"
CONF
    # libvirtd looks up its compiled-in QEMU account (libvirt-qemu) before it reads
    # qemu.conf. Debian's libvirt-daemon-system creates it, but that package starts services.
    # When the host lacks it, the hypervisor gets private /etc/passwd and /etc/group with it.
    passwd=""
    if [ "${LAB_PRIVATE_PASSWD:-auto}" = 1 ] || ! getent passwd libvirt-qemu >/dev/null; then
        cp /etc/passwd "$d/passwd"; cp /etc/group "$d/group"
        grep -q '^libvirt-qemu:' "$d/group" || echo 'libvirt-qemu:x:64055:' >>"$d/group"
        grep -q '^libvirt-qemu:' "$d/passwd" ||
            echo 'libvirt-qemu:x:64055:64055:lab:/var/lib/libvirt:/usr/sbin/nologin' >>"$d/passwd"
        passwd="mount --bind '$d/passwd' /etc/passwd; mount --bind '$d/group' /etc/group"
    fi
    touch "$LAB_STATE/ns/$h.mnt"
    # Populated from inside the hypervisor's netns, so that the fresh sysfs shows its devices.
    # The lazy umount of /sys also drops the host's cgroup mounts: libvirt runs without cgroups.
    unshare --mount="$LAB_STATE/ns/$h.mnt" --propagation slave \
        nsenter --net="/run/netns/${LAB_NETNS[$h]}" -- sh -ec "
        mkdir -p /etc/libvirt /run/libvirt /var/lib/libvirt /var/log/libvirt /var/cache/libvirt
        mount --bind '$d/etc/libvirt'    /etc/libvirt
        mount --bind '$d/run/libvirt'    /run/libvirt
        mount --bind '$d/lib/libvirt'    /var/lib/libvirt
        mount --bind '$d/log/libvirt'    /var/log/libvirt
        mount --bind '$LAB_DIR/cache/$h' /var/cache/libvirt
        $passwd
        umount -l /sys
        mount -t sysfs sysfs /sys"
done
for h in a b; do lab_libvirtd_start "$h"; done
log "libvirtd A pid $(lab_libvirtd_pid a), B pid $(lab_libvirtd_pid b) ($(since "$T0")s)"
# both daemons probe QEMU now, in parallel; otherwise B would do it inside the first migration
lab_virsh a domcapabilities --virttype "$LAB_VIRT" >/dev/null & w=$!
lab_virsh b domcapabilities --virttype "$LAB_VIRT" >/dev/null
wait $w
log "QEMU capabilities known ($(since "$T0")s)"

if [ "${LAB_NORARP:-0}" = 1 ]; then
    for h in a b; do
        # forward hook: frames from a tap to the uplink. What the host itself sends on br0 goes
        # through the output hook and is not touched.
        lab_ns "$h" nft -f - <<'NFT'
table bridge ralab_norarp {
    chain vmfwd {
        type filter hook forward priority 0; policy accept;
        iifname "vnet*" ether type 0x8035 counter drop
    }
}
NFT
    done
    log "RARP from VM taps is dropped on both hypervisors (nft table bridge ralab_norarp)"
fi

[ "${LAB_NO_VM:-0}" = 1 ] && { log "lab up without VM in $(since "$T0")s"; exit 0; }

# ---------------------------------------------------------------- the VM
lab_vm_start "<interface type='bridge'>
      <source bridge='br0'/>
      <mac address='$LAB_MAC'/>
      ${LAB_VM_TAP:+<target dev='$LAB_VM_TAP'/>}
      <model type='virtio'/>
    </interface>"
# answering ping = booted; the ARP request it sends to answer the first one teaches the switch
for _ in $(seq 1 60); do
    lab_ns c ping -c1 -W1 "$LAB_VM_IP" >/dev/null 2>&1 && break
done
[ "$(lab_fdbport)" = swa ] || die "the guest never answered ping at $LAB_VM_IP (QEMU log: $LAB_STATE/a/log/libvirt/qemu/$LAB_VM.log)"
log "lab up in $(since "$T0")s: VM answers ping, switch port swa; A: $(lab_uri a)  B: $(lab_uri b)"
