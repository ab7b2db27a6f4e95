# shellcheck shell=bash
# Helpers shared by the end-to-end tests (lab-e2e.sh, lab-e2e-qemu.sh). Source it after
# lab-env.sh; it runs nothing (each test calls e2e_prepare itself). Counts go to $pass and
# $fail; finish prints the summary line "N passed, M failed" that lab_test.go reads, and exits
# 1 on any failure.

T0=$(date +%s.%N)
pass=0 fail=0
# set by each migration (lab-migrate.sh's result.env)
# shellcheck disable=SC2034
dst="" wall_s="" fdb_after="" dst_events="" rarp_from_dst=0 rarp_other=0 first_rarp_ts="" resumed_ts=""

# e2e_prepare [TOOL...]: what a test that only the agent may announce in checks and sets first:
# root, each TOOL on PATH (its Debian package of the same name), and QEMU's own announce
# suppressed (migration.announce-rounds=0, no nft drop); LAB_STATE exported, as the agents the
# test starts inside the hypervisors read their config from it ($LAB_AGENT names it)
e2e_prepare() {
    [ "$(id -u)" = 0 ] || die "must run as root"
    local tool
    for tool; do command -v "$tool" >/dev/null || die "$tool is needed (apt-get install $tool)"; done
    export LAB_QEMU_ANNOUNCE=0 LAB_NORARP=0 LAB_STATE
}
# has TEXT STRING: yes if a line of TEXT contains STRING, else no (a here-string, not `| grep -q`:
# with pipefail, the writer's SIGPIPE would turn a match into "no")
has() { grep -qF -- "$2" <<<"$1" && echo yes || echo no; }
logsize() { stat -c %s "$LAB_STATE/agent-$1.log" 2>/dev/null || echo 0; } # h: bytes of its agent log

check() { # name want got
    if [ "$2" = "$3" ]; then pass=$((pass + 1)); echo "PASS $1 ($3)"
    else fail=$((fail + 1)); echo "FAIL $1: want '$2', got '$3'"; fi
}
finish() {
    lab_agent_stop
    if [ "$fail" != 0 ]; then
        for h in a b; do
            [ -f "$LAB_STATE/agent-$h.log" ] || continue
            echo "---- agent log, hypervisor $h ($LAB_STATE/agent-$h.log)"
            sed 's/^/    /' "$LAB_STATE/agent-$h.log"
        done
        echo "---- migration runs: $LAB_STATE/runs (after lab-down: $LAB_DIR/last-logs/runs)"
    fi
    [ "${LAB_KEEP:-0}" = 1 ] || "$LAB_HERE/lab-down.sh"
    echo "e2e took $(since "$T0")s"
    echo "$pass passed, $fail failed"
    [ "$fail" = 0 ]; exit
}
abort() { fail=$((fail + 1)); echo "FAIL $*"; finish; }
# migrate DIR MODE: runs lab-migrate.sh, loads its result.env; aborts the test if it failed
migrate() {
    local out
    out=$LAB_STATE/e2e-$(date +%H%M%S%N)-$1-$2.txt
    if ! "$LAB_HERE/lab-migrate.sh" "$1" "$2" >"$out" 2>&1; then
        sed 's/^/    /' "$out"; abort "migration $1 ($2)"
    fi
    # shellcheck disable=SC1091
    . "$LAB_STATE/runs/last.env"
}
latency() {
    if [ -z "$first_rarp_ts" ] || [ -z "$resumed_ts" ]; then echo "no frame"; return; fi
    awk -v a="$resumed_ts" -v b="$first_rarp_ts" 'BEGIN{printf "%.0f ms", (b-a)*1000}'
}
# after an announced migration: the switch follows, the client reaches the VM
followed() { # label
    check "$1: switch port" "sw$dst" "$(lab_wait_fdb "sw$dst" 3)"
    check "$1: client pings the VM" ok "$(lab_ping)"
    echo "     (migration ${wall_s}s; $rarp_from_dst RARP from sw$dst, first $(latency) after the Resumed event)"
}
