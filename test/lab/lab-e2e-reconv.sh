#!/bin/bash
# Did the network follow? (issue 16) The real agent on both hypervisors, QEMU's own announce
# suppressed, a client pinging the VM every 10 ms throughout. Prints PASS/FAIL lines and ends
# with "N passed, M failed"; exit 1 if anything failed. Run as root.
#
#   1. A->B->A->B within 60 s, move ledger limit 2 in 60 s: after each migration the
#      destination's rarp_announce_reconvergence_seconds has one more sample, its landing
#      record (a "migration record" JSON log line) carries every field, and RESUMED +
#      reconverged lies within 100 ms of the first ping reply the client got after RESUMED
#      (its own log, ping -D); exactly one burst enters the switch, from the destination only.
#      B's second landing (the third move) warns, counts and fires RarpAnnounceMACMovesOverLimit.
#   2. The agent on A stopped, B->A: nobody announces, the switch still points at B, the
#      client's pings keep arriving at B: B's rarp_announce_stale_deliveries_total rises, its
#      departure record says so, and RarpAnnounceStaleDeliveries fires in "promtool test
#      rules" fed with the values scraped before and after.
#
#   RARP_ANNOUNCE=path    the binary (default: rarp-announce on PATH, else ../../bin/)
#   LAB_E2E_BURST=5       frames one announce sends
#   LAB_KEEP=1            leave the lab up afterwards
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lab-env.sh"
. "$HERE/lab-e2e-lib.sh"
e2e_prepare
BURST=${LAB_E2E_BURST:-5}
LAB_AGENT='exec "$RARP_ANNOUNCE" run --config "$LAB_STATE/agent-reconv.yaml"'
lab_find_binary
PING_PID=""
stop_ping() { [ -n "$PING_PID" ] && kill "$PING_PID" 2>/dev/null; wait "$PING_PID" 2>/dev/null; PING_PID=""; }
trap stop_ping EXIT

# the newest migration record of kind $2 in hypervisor $1's log after byte $3, as JSON
record() {
    tail -c +$(($3 + 1)) "$LAB_STATE/agent-$1.log" | python3 -c '
import json, sys
out = ""
for line in sys.stdin:
    try: e = json.loads(line)
    except ValueError: continue
    if e.get("msg") == "migration record" and e["record"]["kind"] == sys.argv[1]:
        out = json.dumps(e["record"])
print(out)' "$2"
}
# waits up to $4 s for such a record
wait_record() {
    local r="" _
    for _ in $(seq 1 $(($4 * 10))); do r=$(record "$1" "$2" "$3"); [ -n "$r" ] && break; sleep 0.1; done
    echo "$r"
}
# the histogram's sample count on hypervisor $1
reconv_count() { lab_metric "$1" 'rarp_announce_reconvergence_seconds_count{strategy="host"}'; }
# every field of a landing record present (and NIC 0 reconverged): "ok" or what is missing
fields() {
    python3 -c '
import json, sys
r = json.loads(sys.argv[1])
miss = [k for k in ("kind", "domain", "uuid", "host", "event", "trigger", "received", "nics", "moves") if k not in r]
n = r["nics"][0] if r.get("nics") else {}
miss += ["nic." + k for k in ("mac", "strategy", "result", "port_ready", "fdb_repaired", "first_frame", "reconverged", "frames") if k not in n]
print("ok" if not miss else "missing " + ",".join(miss))' "$1"
}
# the client's first ping answered from the new host: the first reply whose request was sent
# after RESUMED (send time = reply time - rtt; earlier requests may wait inside the paused VM and
# be answered after it resumed, without having crossed the fabric since). Prints
# "|send - (RESUMED + reconverged)| in ms, reply - (RESUMED + reconverged) in ms".
vs_ping() {
    python3 -c '
import json, re, sys
from datetime import datetime
r = json.loads(sys.argv[1])
rec = datetime.fromisoformat(r["received"].replace("Z", "+00:00")).timestamp()
conv = rec + r["nics"][0]["reconverged"]
for line in open(sys.argv[2]):
    m = re.match(r"\[(\d+\.\d+)\] \d+ bytes from .* time=([\d.]+) ms", line)
    if m:
        reply = float(m.group(1)); sent = reply - float(m.group(2)) / 1000
        if sent > rec:
            print("%d %d" % (round(abs(sent - conv) * 1000), round((reply - conv) * 1000))); sys.exit()
print("none none")' "$1" "$LAB_STATE/ping.log"
}
# alert_test NAME METRIC VALUES ALERT: writes $LAB_STATE/promtool-NAME.yaml, a promtool rule
# test of the project's rules feeding METRIC{job="rarp-announce", instance="b"} with VALUES
# (one a minute) and expecting ALERT firing on b at 3 m
alert_test() {
    cat >"$LAB_STATE/promtool-$1.yaml" <<EOF
rule_files: [$HERE/../../deploy/prometheus/rarp-announce-rules.yaml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: '$2{job="rarp-announce", instance="b"}'
        values: '$3'
    promql_expr_test:
      - expr: count(ALERTS{alertname="$4", alertstate="firing", instance="b"})
        eval_time: 3m
        exp_samples: [{labels: '{}', value: 1}]
EOF
}

"$HERE/lab-up.sh" || abort "lab-up.sh"
check "lab up: client pings the VM on A" ok "$(lab_ping)"
cat >"$LAB_STATE/agent-reconv.yaml" <<'EOF'
# written by lab-e2e-reconv.sh
reconvergence:
  window: 10s
  stale_window: 4s
move_ledger:
  window: 60s
  limit: 2
log:
  level: info
  format: json
EOF
for h in a b; do lab_agent_start "$h"; done
sleep "${LAB_AGENT_STARTUP:-1}"
for h in a b; do lab_agent_alive "$h" || abort "agent on $h exited at start"; done

# the client pings every 10 ms, its replies timestamped (-D), until the end
lab_ns c ping -D -i 0.01 -W 1 "$LAB_VM_IP" >"$LAB_STATE/ping.log" 2>&1 &
PING_PID=$!
sleep 0.5

# ---- 1. A->B->A->B: reconvergence per migration, the ledger on the third move
T1=$(date +%s)
for d in a2b b2a a2b; do
    to=${d#*2} label="reconv ${d/2/->}"
    off=$(logsize "$to")
    before=$(reconv_count "$to")
    migrate "$d" precopy
    followed "$label"
    check "$label: one burst, from the destination only" "$BURST/0" "$rarp_from_dst/$rarp_other"
    rec=$(wait_record "$to" landing "$off" 12)
    [ -n "$rec" ] || { check "$label: landing record" present missing; continue; }
    check "$label: histogram samples on $to" "$((${before:-0} + 1))" "$(reconv_count "$to")"
    check "$label: landing record fields" ok "$(fields "$rec")"
    read -r ms reply_ms <<<"$(vs_ping "$rec")"
    check "$label: reconverged within 100 ms of the client's first ping answered from $to" yes "$( [ "$ms" != none ] && [ "$ms" -le 100 ] && echo yes || echo no)"
    echo "     (reconverged $(python3 -c 'import json,sys; print("%.3f" % json.loads(sys.argv[1])["nics"][0]["reconverged"])' "$rec") s after RESUMED; that ping was sent ${ms} ms apart, its reply came ${reply_ms} ms after)"
done
check "three migrations within 60 s" yes "$( [ $(($(date +%s) - T1)) -le 60 ] && echo yes || echo no)"
check "ledger: B warned on its second landing" 1 "$(lab_metric b rarp_announce_mac_moves_over_limit_total)"
check "ledger: A did not warn (one landing)" 0 "$(lab_metric a rarp_announce_mac_moves_over_limit_total)"
check "ledger: warning logged on B" 1 "$(grep -c '"msg":"MAC moved too often' "$LAB_STATE/agent-b.log")"
alert_test moves rarp_announce_mac_moves_over_limit_total \
    "0 0 $(lab_metric b rarp_announce_mac_moves_over_limit_total)x5" RarpAnnounceMACMovesOverLimit

# ---- 2. nobody announces B->A: the source sees the fabric's stale deliveries. The pings to
# the VM stop first: a VM answering them moves the switch itself the moment it resumes on A
# (its replies are frames from its MAC), before the source even gets STOPPED/MIGRATED. Instead
# the client sends 100 frames a second to the VM's MAC that the VM ignores (a local
# experimental EtherType), so the switch keeps pointing at B.
stop_ping
# the VM works off the requests it queued (iPXE under TCG answers 10 ms pings late): wait for
# a second with no frame from it
for _ in $(seq 1 15); do
    lab_ns c timeout 1 tcpdump -i cl0 -c 1 -nn "ether src $LAB_MAC" >/dev/null 2>&1 || break
done
lab_ns c python3 -c '
import socket, sys, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("cl0", 0))
dst = bytes.fromhex(sys.argv[1].replace(":", ""))
frame = dst + bytes.fromhex("02000000ee01") + b"\x88\xb5" + bytes(46)
for _ in range(2000):  # 20 s at most
    s.send(frame); time.sleep(0.01)
' "$LAB_MAC" &
PING_PID=$!
# The guest (iPXE) still sends a frame or two once it resumes on A, which would move the switch
# by itself: A's br0 drops what its taps send to the uplink (counted), standing in for a guest
# that stays silent. What the host sends (an agent's announce) is not touched.
lab_ns a nft -f - <<NFT
table bridge rarcv_silent {
    chain vmfwd {
        type filter hook forward priority 0; policy accept;
        iifname "vnet*" ether saddr $LAB_MAC counter drop
    }
}
NFT
stale_before=$(lab_metric b rarp_announce_stale_deliveries_total)
lab_agent_stop_one() { kill -TERM -- "-${LAB_AGENT_PID[$1]}" 2>/dev/null; wait "${LAB_AGENT_PID[$1]}" 2>/dev/null; unset "LAB_AGENT_PID[$1]"; }
lab_agent_stop_one a
off=$(logsize b)
migrate b2a precopy
check "no agent on A, b->a: no RARP at the switch" 0 "$((rarp_from_dst + rarp_other))"
dep=$(wait_record b departure "$off" 10)
echo "     (frames from the guest dropped on A's br0: $(lab_ns a nft list table bridge rarcv_silent | grep -o 'packets [0-9]*'); switch port now $(lab_fdbport))"
stale=$(lab_metric b rarp_announce_stale_deliveries_total)
check "b's stale deliveries rose" yes "$(python3 -c 'import sys; print("yes" if float(sys.argv[2] or 0) > float(sys.argv[1] or 0) else "no")' "${stale_before:-0}" "${stale:-0}")"
check "b's departure record counts them" yes "$(python3 -c 'import json,sys; r=json.loads(sys.argv[1] or "{}"); print("yes" if r.get("nics") and r["nics"][0].get("stale_deliveries",0) > 0 else "no")' "$dep")"
check "b logged the stale deliveries" 1 "$(grep -c '"msg":"stale deliveries after the domain left' "$LAB_STATE/agent-b.log")"
echo "     (stale deliveries on b: ${stale:-none} within the 4 s window)"
alert_test stale rarp_announce_stale_deliveries_total \
    "${stale_before:-0} ${stale_before:-0} ${stale:-0}x5" RarpAnnounceStaleDeliveries
# the alert is firing (ALERTS), whatever its annotations say
for f in moves stale; do
    out=$(promtool test rules "$LAB_STATE/promtool-$f.yaml" 2>&1)
    check "promtool test rules with the scraped $f values" SUCCESS "$(grep -o SUCCESS <<<"$out" | head -1)"
    grep -q SUCCESS <<<"$out" || echo "$out" | sed 's/^/    /'
done
stop_ping
finish
