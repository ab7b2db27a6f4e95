# shellcheck shell=bash
# Settings and helpers shared by the lab scripts. Source it; it runs nothing.
#
# The rig: two hypervisors (A, B), each its own real libvirtd + QEMU, an upstream "physical
# switch" (a Linux bridge whose MAC table says where it thinks each MAC lives) and a client.
# Each piece is a network namespace named "$LAB_NS_PREFIX-<role>":
#
#   ralab-sw : bridge sw0, the upstream switch; ports swa -> A, swb -> B, swc -> client
#   ralab-a  : hypervisor A: bridge br0 (uplink upa, VM taps vnetN), migration link mga 10.77.0.1
#   ralab-b  : hypervisor B: bridge br0 (uplink upb, VM taps vnetN), migration link mgb 10.77.0.2
#   ralab-c  : client cl0 10.66.0.100, pings the VM (10.66.0.10) through the switch
#
# Each hypervisor's libvirtd also lives in a persistent mount namespace ($LAB_STATE/ns/<h>.mnt)
# where /etc/libvirt, /run/libvirt, /var/lib/libvirt, /var/log/libvirt are private bind mounts
# and /sys shows the hypervisor's own network devices. Inside it (lab_exec) every path is the
# default one (qemu:///system, /run/libvirt/libvirt-sock, br0): an agent runs there unmodified.
#
# The names differ from ../../shared/lab (lab*, /tmp/rarp-lab) so both can run side by side;
# a second copy of this lab needs another LAB_NS_PREFIX and LAB_DIR.

LAB_NS_PREFIX=${LAB_NS_PREFIX:-ralab}
LAB_DIR=${LAB_DIR:-/tmp/rarp-announce-lab}
LAB_STATE=$LAB_DIR/state        # wiped by lab-down.sh (last logs kept in $LAB_DIR/last-logs)
LAB_VM=${LAB_VM:-labvm}
LAB_MAC=${LAB_MAC:-52:54:00:aa:bb:cc}
LAB_VM_IP=${LAB_VM_IP:-10.66.0.10}
LAB_CLIENT_IP=${LAB_CLIENT_IP:-10.66.0.100}
# libvirt domain type: qemu (TCG) by default; see README.md before trying kvm
LAB_VIRT=${LAB_VIRT:-qemu}

declare -A LAB_NETNS=([sw]=$LAB_NS_PREFIX-sw [a]=$LAB_NS_PREFIX-a [b]=$LAB_NS_PREFIX-b [c]=$LAB_NS_PREFIX-c)
# shellcheck disable=SC2034  # used by the scripts that source this
declare -A LAB_MIGIP=([a]=10.77.0.1 [b]=10.77.0.2)
# libvirt refuses to migrate to "the same host": each daemon needs its own host UUID
# shellcheck disable=SC2034
declare -A LAB_UUID=([a]=72616c61-0000-4000-8000-00000000000a [b]=72616c61-0000-4000-8000-00000000000b)

log() { printf '%s [lab] %s\n' "$(date +%H:%M:%S.%3N)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
# lab_close_inherited_fds: close every descriptor but 0-2 (and bash's 255) in this shell. The
# daemons a script starts (libvirtd, QEMU, OVS, OVN) must not inherit them: run as
# `flock /tmp/rarp-heavy.lock <script>`, a kept lab's daemons would hold the lock forever.
lab_close_inherited_fds() {
    local f n
    for f in /proc/$$/fd/*; do n=${f##*/}; case $n in 0|1|2|255) ;; *) eval "exec $n>&-" 2>/dev/null ;; esac; done
}
other() { if [ "$1" = a ]; then echo b; else echo a; fi; }
# seconds since $1 (a `date +%s.%N` value), 2 decimals
since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN{printf "%.2f", b-a}'; }

# run a command inside network namespace $1 (sw, a, b, c)
lab_ns() { local n=$1; shift; ip netns exec "${LAB_NETNS[$n]}" "$@"; }
# libvirt URI of hypervisor $1 from the host (its socket, reached through the state dir)
lab_uri() { echo "qemu+unix:///system?socket=$LAB_STATE/$1/run/libvirt/libvirt-sock"; }
lab_virsh() { local h=$1; shift; virsh -q -c "$(lab_uri "$h")" "$@"; }
# run a command "on hypervisor $1": in its network and mount namespaces, where its libvirtd is
lab_exec() {
    local h=$1; shift
    nsenter --mount="$LAB_STATE/ns/$h.mnt" --net="/run/netns/${LAB_NETNS[$h]}" -- "$@"
}
lab_libvirtd_pid() { cat "$LAB_STATE/$1/libvirtd.pid" 2>/dev/null; }
# start hypervisor $1's libvirtd (daemonized; returns when it answers)
lab_libvirtd_start() {
    local h=$1 _
    lab_exec "$h" libvirtd -d --listen -p "$LAB_STATE/$h/libvirtd.pid" -f /etc/libvirt/libvirtd.conf
    for _ in $(seq 1 100); do lab_virsh "$h" uri >/dev/null 2>&1 && return 0; sleep 0.1; done
    die "libvirtd $h did not come up; see $LAB_STATE/$h/log/libvirt/libvirtd.log"
}
# where the VM runs: a, b or none
lab_where() {
    local h
    for h in a b; do
        [ "$(lab_virsh "$h" domstate "$LAB_VM" 2>/dev/null)" = running ] && { echo "$h"; return; }
    done
    echo none
}
# the switch port the upstream switch would send the VM's frames to (empty: unknown)
lab_fdbport() {
    lab_ns sw bridge fdb show br sw0 2>/dev/null | awk -v m="$LAB_MAC" '$1==m && !/permanent/ {print $3; exit}'
}
# wait up to $2 s for the switch to point the VM's MAC at port $1; prints the port it ends at
lab_wait_fdb() {
    local _
    for _ in $(seq 1 $(($2 * 10))); do [ "$(lab_fdbport)" = "$1" ] && break; sleep 0.1; done
    lab_fdbport
}
# the port hypervisor $1's br0 would send the VM's frames to (empty: unknown)
lab_brport() {
    lab_ns "$1" bridge fdb show br br0 2>/dev/null | awk -v m="$LAB_MAC" '$1==m && !/permanent/ {print $3; exit}'
}
# the VM's tap on hypervisor $1 (empty: the VM does not run there)
lab_tap() {
    lab_virsh "$1" domiflist "$LAB_VM" 2>/dev/null | awk -v m="$LAB_MAC" '$5==m {print $1; exit}'
}
# the value of one sample of the agent's metrics on hypervisor $1 (127.0.0.1:9798 in its
# network namespace), e.g. lab_metric a 'rarp_announce_qmp_announce_self_total{result="ok"}'
lab_metric() {
    lab_ns "$1" python3 -c '
import sys, urllib.request
for line in urllib.request.urlopen("http://127.0.0.1:9798/metrics", timeout=3).read().decode().splitlines():
    name, _, value = line.rpartition(" ")
    if name == sys.argv[1]:
        print(value)
' "$2" 2>/dev/null
}
# "ok" if the client gets at least one ping reply from the VM, else "fail"
lab_ping() {
    lab_ns c ping -c3 -i 0.3 -W1 "$LAB_VM_IP" >/dev/null 2>&1 && echo ok || echo fail
}

# ------------------------------------------------------------------ agents
# LAB_AGENT is a command run by `sh -c` inside each hypervisor (lab_exec), with LAB_HV=a|b and
# RARP_ANNOUNCE (the binary) in its environment; its stdout+stderr go to $LAB_STATE/agent-<h>.log.
# Unset: the shell stand-in (lab-standin-agent.sh) driving `$RARP_ANNOUNCE send`.
LAB_HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
lab_find_binary() {
    if [ -n "${RARP_ANNOUNCE:-}" ]; then :
    elif command -v rarp-announce >/dev/null; then RARP_ANNOUNCE=$(command -v rarp-announce)
    elif [ -x "$LAB_HERE/../../bin/rarp-announce" ]; then RARP_ANNOUNCE=$(cd "$LAB_HERE/../../bin" && pwd)/rarp-announce
    else die "no rarp-announce binary: run 'make build' or set RARP_ANNOUNCE=/path/to/rarp-announce"
    fi
    [ -x "$RARP_ANNOUNCE" ] || die "RARP_ANNOUNCE=$RARP_ANNOUNCE is not executable"
    export RARP_ANNOUNCE
}
declare -A LAB_AGENT_PID=()
lab_agent_start() { # h
    local h=$1
    [ -n "${LAB_AGENT:-}" ] || LAB_AGENT="exec '$LAB_HERE/lab-standin-agent.sh'"
    lab_find_binary
    # setsid: the agent and whatever it spawns get their own process group, stopped as one
    LAB_HV=$h setsid nsenter --mount="$LAB_STATE/ns/$h.mnt" --net="/run/netns/${LAB_NETNS[$h]}" -- \
        sh -c "$LAB_AGENT" >>"$LAB_STATE/agent-$h.log" 2>&1 </dev/null &
    LAB_AGENT_PID[$h]=$!
}
lab_agent_alive() { kill -0 "${LAB_AGENT_PID[$1]:-0}" 2>/dev/null; }
lab_agent_stop() {
    local h
    for h in "${!LAB_AGENT_PID[@]}"; do kill -TERM -- "-${LAB_AGENT_PID[$h]}" 2>/dev/null; done
    for h in "${!LAB_AGENT_PID[@]}"; do wait "${LAB_AGENT_PID[$h]}" 2>/dev/null; unset "LAB_AGENT_PID[$h]"; done
    return 0
}

# lab_vm_start IFACE_XML: define the lab VM on A with IFACE_XML as its NIC and start it.
# iPXE (Debian package ipxe) booted as a kernel runs its command line as a script: static IP,
# then sleep. While sleeping it answers ARP and ping but sends nothing unprompted, so after a
# migration the switch can learn where it went only from an announce. LAB_QEMU_ANNOUNCE=0
# (default 1) turns QEMU's own announce off; LAB_VM_METADATA goes into <metadata>.
lab_vm_start() {
    local iface=$1 qemu_ns="" qemu_args=""
    if [ "${LAB_QEMU_ANNOUNCE:-1}" = 0 ]; then
        # Migration parameters are not migrated: the destination QEMU's own value counts, and
        # libvirt starts it from the same XML, so both ends run with rounds=0.
        qemu_ns=" xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'"
        qemu_args="<qemu:commandline><qemu:arg value='-global'/><qemu:arg value='migration.announce-rounds=0'/></qemu:commandline>"
    fi
    cat > "$LAB_STATE/$LAB_VM.xml" <<XML
<domain type='$LAB_VIRT'$qemu_ns>
  <name>$LAB_VM</name>
  <uuid>72616c61-766d-4000-8000-000000000001</uuid>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>/boot/ipxe.lkrn</kernel>
    <cmdline>ifopen net0 &amp;&amp; set net0/ip $LAB_VM_IP &amp;&amp; set net0/netmask 255.255.255.0 &amp;&amp; sleep 2000000000</cmdline>
  </os>
  ${LAB_VM_METADATA:+<metadata>$LAB_VM_METADATA</metadata>}
  <on_poweroff>destroy</on_poweroff>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    $iface
    <serial type='pty'/>
    <memballoon model='none'/>
  </devices>
  $qemu_args
</domain>
XML
    lab_virsh a define "$LAB_STATE/$LAB_VM.xml" >/dev/null
    lab_virsh a start "$LAB_VM" >/dev/null
    log "VM $LAB_VM started on A ($(since "$T0")s)"
}
