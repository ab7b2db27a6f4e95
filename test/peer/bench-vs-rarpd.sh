#!/usr/bin/env bash
# bench-vs-rarpd.sh - Debian rarpd and "rarp-announce serve" side by side, in one run.
#
# For each table size (TABLES, default "10 100000 1000000") it writes the table with
# peer-up.sh, which (re)starts rarpd -e on peer0 with it as /etc/ethers, starts
# rarp-announce serve on peer2 with the same file, both pinned to SRV_CPU (1), and runs
# rarpbench (pinned to CPU 0) closed loop with 1 and 64 requests in flight, alternating
# rarpd and rarp-announce (A B A B) for ROUNDS (3) rounds. Every reply is validated
# (op, tpa = the table's, sha/spa = the server's, unicast to the requester) and 20 unknown
# MACs are probed after each run. The summary is the median of the rounds per server,
# and the ratios.
#
# rarpd re-reads /etc/ethers for every request, so its runs use fewer requests on big
# tables (about 3 ms per reply at 100k entries, 30 ms at 1M); rarp-announce always gets
# the full count. Settings:
#   TABLES="10 100000 1000000"  ROUNDS=3  DISTINCT=400 (rarpd adds an ARP entry per
#   client; the kernel's neighbour table is shared and limited)  BIN=path/to/rarp-announce
#   (default: built from this tree into run/)  OURS_FLAGS="..." (extra serve flags)
# Output: results/vs-rarpd-<table>-c<inflight>-<server>-r<round>.json and, at the end,
# results/vs-rarpd-summary.txt.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd); RUN=${RUN:-$HERE/run}; RES=${RES:-$HERE/results}
export RUN
TABLES=${TABLES:-10 100000 1000000}; ROUNDS=${ROUNDS:-3}; DISTINCT=${DISTINCT:-400}
CLI_PIN=${CLI_PIN-taskset -c 0}
B=$HERE/rarpbench/rarpbench
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
mkdir -p "$RUN" "$RES"
(cd "$HERE/rarpbench" && go build -o rarpbench .)
if [ -z "${BIN:-}" ]; then
  BIN=$RUN/rarp-announce
  (cd "$HERE/../.." && CGO_ENABLED=0 go build -trimpath -o "$BIN" ./cmd/rarp-announce)
fi
rm -f "$RES"/vs-rarpd-*.json

stop_ours() {
  if [ -f "$RUN/ours.pid" ]; then
    local p; p=$(cat "$RUN/ours.pid")
    if [ "$(cat /proc/$p/comm 2>/dev/null)" = rarp-announce ]; then kill "$p"; fi
    for _ in $(seq 50); do [ -d /proc/$p ] || break; sleep 0.1; done
    rm -f "$RUN/ours.pid"
  fi
}
trap stop_ours EXIT

# bench LABEL IFACE PID SERVER_MAC SERVER_IP NAME rarpbench-args...
bench() {
  local label=$1 ifc=$2 pid=$3 smac=$4 sip=$5 name=$6; shift 6
  $CLI_PIN ip netns exec peercli "$B" -iface "$ifc" -label "$label" -cpu-pid "$pid" -macs "$RUN/table.txt" \
    -distinct "$DISTINCT" -unknown 20 -dst-check requester -server-mac "$smac" -server-ip "$sip" \
    -json-file "$RES/$name.json" "$@" | grep -v '^   server' || true
  ip -n peersrv neigh flush all
}

for M in $TABLES; do
  echo "=== table of $M entries"
  stop_ours
  M=$M SYSLOG=sink RARPD_OPTS="-e" SELFTEST=0 "$HERE/peer-up.sh" | sed 's/^/    /'
  rm -f "$RUN/ours.log"
  "$HERE/peer-srv-run.sh" ours "$BIN" serve --interface peer2 --ethers "$RUN/table.txt" --log-level warn ${OURS_FLAGS:-} | sed 's/^/    /'
  # ready when the table is loaded and the ring is open: a query is answered
  for _ in $(seq 100); do
    ip netns exec peercli "$BIN" query -i peer3 --mac 52:54:00:00:00:01 --timeout 200ms >/dev/null 2>&1 && break
    sleep 0.2
  done
  RARPD=$(cat "$RUN/rarpd.pid"); OURS=$(cat "$RUN/ours.pid")
  # rarpd's request counts, warmup and timeout: 64 requests queued at 30 ms each (1M
  # entries) wait up to 2 s, longer when another process takes the CPU.
  if [ "$M" -ge 1000000 ]; then RN1=200; RN64=300; RW=5; RT=20s
  elif [ "$M" -ge 10000 ]; then RN1=500; RN64=1000; RW=10; RT=5s
  else RN1=20000; RN64=50000; RW=100; RT=5s; fi
  for c in 1 64; do
    if [ "$c" = 1 ]; then RN=$RN1; ON=30000; else RN=$RN64; ON=200000; fi
    for r in $(seq "$ROUNDS"); do
      bench rarpd peer1 "$RARPD" 02:00:0a:63:ff:fe 10.99.255.254 "vs-rarpd-$M-c$c-rarpd-r$r" \
        -n "$RN" -warmup "$RW" -inflight "$c" -timeout "$RT"
      bench rarp-announce peer3 "$OURS" 02:00:0a:63:ff:fc 10.99.255.252 "vs-rarpd-$M-c$c-ours-r$r" \
        -n "$ON" -warmup 1000 -inflight "$c" -timeout 1s
    done
  done
done
stop_ours

{
  echo "rarpd (Debian $(dpkg-query -W -f '${Version}' rarpd 2>/dev/null || echo '?'), -e) vs rarp-announce serve ($("$BIN" version 2>/dev/null | head -1)),"
  echo "both pinned to CPU ${SRV_CPU:-1}, client on CPU 0, A B A B, median of $ROUNDS rounds; $(nproc) CPUs, kernel $(uname -r)"
  echo
  "$B" summary -a rarpd -b rarp-announce "$RES"/vs-rarpd-*.json
} | tee "$RES/vs-rarpd-summary.txt"
