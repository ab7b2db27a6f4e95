#!/bin/bash
# The one-command demo: watch a VM's live migration leave the network behind, then watch the
# agent fix it. As root, from anywhere:   sudo test/lab/demo.sh
#
# Builds rarp-announce, brings up the lab (two libvirt+QEMU hypervisors, a switch, a client;
# see README.md) with QEMU's own announce switched off, as when its frames get lost, migrates
# the VM without and then with the agent, and tears everything down. About a minute.
#
#   DEMO_AGENT='command'  the agent, run on each hypervisor by `sh -c` with $RARP_ANNOUNCE,
#                         $LAB_HV and $LAB_STATE set. Default: the real agent,
#                         'exec "$RARP_ANNOUNCE" run --config "$LAB_STATE/demo-agent.yaml"' (the
#                         built-in defaults, console log); it finds its hypervisor's libvirtd in
#                         that hypervisor's /run/libvirt. DEMO_AGENT=standin: the shell stand-in
#                         lab-standin-agent.sh (rarp-announce send on each libvirt event).
#   DEMO_PAUSE=1          wait for Enter between steps
#   DEMO_KEEP=1           leave the lab up at the end (then: test/lab/lab-down.sh)
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lab-env.sh"
[ "$(id -u)" = 0 ] || { echo "demo.sh must run as root (it creates namespaces and runs libvirtd): sudo $0" >&2; exit 1; }
ROOT=$(cd "$HERE/../.." && pwd)

step() {
    echo
    if [ "${DEMO_PAUSE:-0}" = 1 ]; then read -r -p "[Enter] " _ </dev/tty; fi
    printf '==> %s\n' "$*"
}
say() { printf '    %s\n' "$*"; }
switch_says() {
    local p; p=$(lab_fdbport)
    case $p in
        swa) say "switch MAC table: $LAB_MAC -> port swa (hypervisor A)" ;;
        swb) say "switch MAC table: $LAB_MAC -> port swb (hypervisor B)" ;;
        *)   say "switch MAC table: $LAB_MAC -> ${p:-unknown}" ;;
    esac
}
ping_says() {
    if [ "$(lab_ping)" = ok ]; then say "client ping $LAB_CLIENT_IP -> $LAB_VM_IP: replies"
    else say "client ping $LAB_CLIENT_IP -> $LAB_VM_IP: NO REPLY"; fi
}
migrate() { # dir
    "$HERE/lab-migrate.sh" "$1" 2>/dev/null | sed -n 's/^migration /migrated /p; s/^  RARP/RARP/p' | sed 's/^/    /'
    # shellcheck disable=SC1091
    . "$LAB_STATE/runs/last.env"
}
cleanup() {
    lab_agent_stop
    if [ "${DEMO_KEEP:-0}" = 1 ]; then
        echo; echo "The lab is still up (DEMO_KEEP=1). Look around:"
        echo "  virsh -c '$(lab_uri a)' list"
        echo "  ip netns exec ${LAB_NETNS[sw]} bridge fdb show br sw0"
        echo "  $HERE/lab-migrate.sh        # migrate again"
        echo "  $HERE/lab-down.sh           # tear down"
    else
        "$HERE/lab-down.sh"
        echo; echo "Lab torn down. Logs of this run: $LAB_DIR/last-logs"
    fi
}

step "Building rarp-announce"
GO=$(command -v go || echo /usr/local/go/bin/go)
[ -x "$GO" ] || { echo "Go is needed to build rarp-announce (https://go.dev/dl/)" >&2; exit 1; }
mkdir -p "$LAB_DIR/bin"
(cd "$ROOT" && "$GO" build -o "$LAB_DIR/bin/rarp-announce" ./cmd/rarp-announce) || exit 1
export RARP_ANNOUNCE=$LAB_DIR/bin/rarp-announce
say "$RARP_ANNOUNCE"

step "Building the lab: two hypervisors, each its own libvirtd + QEMU, behind one switch"
cat <<EOF
      client $LAB_CLIENT_IP ── swc ─┐
                            switch sw0  (a Linux bridge: its MAC table is what we watch)
      hypervisor A ── br0 ── swa ─┘ └─ swb ── br0 ── hypervisor B
    The VM ($LAB_MAC, $LAB_VM_IP) starts on A; migrations use a separate A<->B link.
    QEMU's own RARP announce is off (-global migration.announce-rounds=0), as when its frames
    are lost because the destination port is not wired yet (Nova bug 1815989).
EOF
trap cleanup EXIT
LAB_QEMU_ANNOUNCE=0 "$HERE/lab-up.sh" 2>&1 | sed 's/^/    /'
[ "${PIPESTATUS[0]}" = 0 ] || exit 1
switch_says
ping_says

step "Live-migrating the VM from A to B, with no agent running"
migrate a2b
switch_says
say "The VM runs on B, but the switch still sends its traffic to A: a switch learns where a"
say "MAC is only from frames that MAC sends, and this VM sends nothing until spoken to."
ping_says

step "Bringing the VM back to A, still without agent (the switch happens to be right again)"
migrate b2a
ping_says

step "Starting the agent on both hypervisors"
export LAB_STATE
printf '# written by demo.sh: the defaults, logs for people\nlog:\n  format: console\n' >"$LAB_STATE/demo-agent.yaml"
# shellcheck disable=SC2016 # expanded by the agent's shell, inside the hypervisor
LAB_AGENT=${DEMO_AGENT:-'exec "$RARP_ANNOUNCE" run --config "$LAB_STATE/demo-agent.yaml"'}
if [ "$LAB_AGENT" = standin ]; then
    LAB_AGENT=""
    say "lab-standin-agent.sh: on libvirt's event 'Resumed Migrated', rarp-announce send --interface br0 --mac <VM MAC>"
else
    say "$LAB_AGENT"
fi
for h in a b; do lab_agent_start "$h"; done
# Ready when subscribed to libvirt's events (/readyz), as a readiness probe would see it.
for h in a b; do
    for _ in $(seq 1 100); do
        lab_agent_alive "$h" || { echo "the agent on ${h^^} exited:" >&2; tail -n 20 "$LAB_STATE/agent-$h.log" >&2; exit 1; }
        if [ -n "${DEMO_AGENT:-}" ] ||
            ip netns exec "${LAB_NETNS[$h]}" curl -sf -o /dev/null "http://127.0.0.1:9798/readyz" 2>/dev/null; then
            break
        fi
        sleep 0.1
    done
    [ -n "${DEMO_AGENT:-}" ] || say "agent on ${h^^}: $(ip netns exec "${LAB_NETNS[$h]}" curl -s "http://127.0.0.1:9798/readyz" 2>&1)"
done
# At start the agent on A announces the VM running there (announce_on_resync, harmless): let
# that burst (0.8 s) end, so the frames below are the migration's only.
sleep 1

for d in a2b b2a; do
    src=${d%2*} dst=${d#*2}
    step "Live-migrating the VM from ${src^^} to ${dst^^}, with the agent"
    migrate "$d"
    switch_says
    ping_says
    say "the frames that moved it, as the switch received them on sw$dst:"
    # shellcheck disable=SC2154
    awk -v p="sw$dst" '$2 == p && $3 != "Out" {
        t = $1; if (!t0) t0 = t
        sub(/.*length [0-9]+: /, "")
        printf "      +%6.1f ms  %s  %s\n", (t - t0) * 1000, p, $0 }' "$run/switch-rarp.txt"
    say "the agent on ${dst^^} (last lines of $LAB_STATE/agent-$dst.log):"
    tail -n 8 "$LAB_STATE/agent-$dst.log" | cut -c1-140 | sed 's/^/      /'
done

step "Done: without the agent the switch kept sending to the old host; with it, it followed the VM."
