#!/bin/sh
# /init of the kernel rig's initramfs (test/kernel/run.sh builds it): mounts
# what the tests need, loads the modules, runs each test binary listed in
# /rig/tests with -test.v, reports each exit status on a marker line the
# host reads from the serial console, and powers off. Busybox sh.
export PATH=/bin HOME=/root
# A marker line starts on a line of its own, whatever the console printed
# before it (firmware output, a test's last line without a newline).
mark() { printf '\n=== %s\n' "$*"; }
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
mount -t tmpfs run /run
mkdir -p /run/netns
mark "RIG-KERNEL $(uname -r) ($(nproc) CPUs, $(awk '/MemTotal/{print $2" kB"}' /proc/meminfo))"
# bonding: no bond0 made at load, tests create their own.
modprobe bonding max_bonds=0 || mark "RIG-MODPROBE-FAILED bonding"
for m in $(cat /rig/modules); do
	modprobe "$m" || mark "RIG-MODPROBE-FAILED $m"
done
ip link set lo up
# Variables the host passed on (KRIG_ENV), one NAME=value a line.
set -a
. /rig/env
set +a
rc=0
# /rig/tests: package directory, test binary, -test.run pattern.
while read -r dir bin run; do
	mark "RIG-PKG $dir"
	start=$(date +%s)
	(cd "/rig/src/$dir" && "/rig/bin/$bin" -test.v -test.count=1 -test.timeout="$RIG_TEST_TIMEOUT" -test.run "$run" </dev/null)
	r=$?
	mark "RIG-PKG-EXIT $dir $r $(( $(date +%s) - start ))s"
	[ "$r" = 0 ] || rc=1
done </rig/tests
mark "RIG-EXIT $rc"
sync
poweroff -f
