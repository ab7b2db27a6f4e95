#!/usr/bin/env bash
# The full-kernel test rig: runs the project's kernel-rig tests (test files
# with the "kernelrig" build tag) on Debian's own kernel under QEMU, for what
# the host's kernel may lack: 802.1Q sub-interfaces, VLAN-filtering bridges,
# bonds, dummy links. See README.md in this directory.
#
#   test/kernel/run.sh [-C REPO_DIR] [PKG_DIR...]
#
# PKG_DIR (e.g. pkg/fdb): only these packages; default every package with a
# kernelrig test file. Exit status: 0 every test passed (none skipped), 1 a
# test failed or skipped, the guest hung (KRIG_TIMEOUT) or panicked, 2 usage.
#
# Environment: KRIG_CACHE (default /var/cache/rarp-announce-kernel), KRIG_MEM
# (MiB, 1024), KRIG_SMP (2), KRIG_TIMEOUT (guest wall clock, 300 s),
# KRIG_TEST_TIMEOUT (per test binary, 4m), KRIG_ENV (space-separated NAME=value
# passed to the tests inside), KRIG_KEEP=1 (keep the work directory),
# KRIG_LOCK (a file to flock around the boot only).
# Needs: root is not required for building, but apt-get download needs
# apt's lists (apt-get update); qemu-system-x86, cpio, kmod (depmod), go.
set -euo pipefail
export PATH="$PATH:/usr/local/go/bin:/usr/sbin:/sbin"

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
usage() { echo "usage: $0 [-C REPO_DIR] [PKG_DIR...]" >&2; exit 2; }
while getopts C:h o; do
	case $o in
	C) repo=$(cd "$OPTARG" && pwd) || usage ;;
	*) usage ;;
	esac
done
shift $((OPTIND - 1))
for t in apt-get apt-cache dpkg-deb depmod cpio gzip qemu-system-x86_64 go timeout ldd; do
	command -v "$t" >/dev/null || { echo "rig: $t not found" >&2; exit 1; }
done

cache=${KRIG_CACHE:-/var/cache/rarp-announce-kernel}
mem=${KRIG_MEM:-1024} smp=${KRIG_SMP:-2} timeout=${KRIG_TIMEOUT:-300}
# Modules the tests need beyond the kernel's built-ins (bonding is loaded
# on its own, with max_bonds=0). Their dependencies come from modules.dep.
# xfrm_user and nfnetlink: the netlink library's handles open NETLINK_XFRM
# and NETLINK_NETFILTER sockets, which Debian builds as modules.
modules="veth bridge 8021q dummy tun macvlan macvtap xfrm_user nfnetlink"

# --- the base image: kernel, modules, busybox, iproute2, cached by version.
candidate() { apt-cache policy "$1" | awk '/Candidate:/{print $2; exit}'; }
kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
[ -n "$kpkg" ] || { echo "rig: apt resolves no linux-image-amd64 (run apt-get update)" >&2; exit 1; }
pkgs=("$kpkg" busybox-static iproute2)
pinned=() key=""
for p in "${pkgs[@]}"; do
	v=$(candidate "$p")
	[ -n "$v" ] && [ "$v" != "(none)" ] || { echo "rig: apt has no candidate for $p" >&2; exit 1; }
	pinned+=("$p=$v")
	key+="${key:+_}$p=$v"
done
# The module list and the image's layout shape it too: bump format when
# the build below changes.
format=2
key=$(echo "$key" | tr ':~+' '--.')-$(echo "$format $modules" | sha256sum | cut -c1-12)
mkdir -p "$cache"
cache=$(cd "$cache" && pwd)
base=$cache/$key
exec 9>"$cache/.lock"
flock 9
if [ ! -f "$base/initrd-base.cpio.gz" ]; then
	echo "rig: building base image $key"
	b=$(mktemp -d "$cache/.build.XXXXXX")
	(
		cd "$b"
		# The packages, kept by version in $cache/debs. apt-get download
		# writes into the current directory; _apt cannot write there, so
		# it downloads unsandboxed (a warning, filtered out).
		mkdir -p "$cache/debs" debs
		for i in "${!pkgs[@]}"; do
			p=${pkgs[$i]} v=${pinned[$i]#*=}
			f=$(ls "$cache/debs/${p}_${v#*:}_"*.deb "$cache/debs/${p}_${v/:/%3a}_"*.deb 2>/dev/null | head -1 || true)
			if [ -z "$f" ]; then
				(cd "$cache/debs" && apt-get download -q "${pinned[$i]}" 2>&1 | grep -v -i unsandboxed || true)
				f=$(ls "$cache/debs/${p}_${v#*:}_"*.deb "$cache/debs/${p}_${v/:/%3a}_"*.deb 2>/dev/null | head -1 || true)
			fi
			[ -n "$f" ] || { echo "rig: apt-get download ${pinned[$i]} failed" >&2; exit 1; }
			ln -s "$f" debs/
		done
		mkdir k bb ipr
		dpkg-deb -x debs/"$kpkg"_*.deb k
		dpkg-deb -x debs/busybox-static_*.deb bb
		dpkg-deb -x debs/iproute2_*.deb ipr
		kv=$(ls k/lib/modules | head -1)
		depmod -b k "$kv"
		r=root
		mkdir -p $r/{bin,proc,sys,dev,tmp,run,root,etc,lib/modules/$kv}
		mkdir -p $r/var
		ln -s ../run $r/var/run
		cp bb/bin/busybox $r/bin/
		for a in $(bb/bin/busybox --list); do
			[ "$a" = busybox ] || ln -sf busybox "$r/bin/$a"
		done
		# Busybox's ip knows no bridge VLANs or bonds: the real iproute2,
		# with the shared libraries it links (resolved on this host,
		# which runs the same Debian release).
		for t in ip bridge; do
			src=ipr/sbin/$t
			[ -x "$src" ] || src=ipr/bin/$t
			rm -f "$r/bin/$t"
			cp "$src" "$r/bin/$t"
			for l in $(ldd "$src" | grep -oE '/[^ ]+\.so[^ ]*'); do
				mkdir -p "$r$(dirname "$l")"
				cp -L "$l" "$r$l"
			done
		done
		printf 'root:x:0:0:root:/root:/bin/sh\n' >$r/etc/passwd
		printf 'root:x:0:\n' >$r/etc/group
		cp k/lib/modules/"$kv"/modules.* $r/lib/modules/"$kv"/
		for m in $modules bonding; do
			line=$(grep -E "/$m\.ko(\.[gx]z|\.zst)?:" k/lib/modules/"$kv"/modules.dep) ||
				{ echo "rig: module $m not in $kpkg" >&2; exit 1; }
			for p in $(echo "$line" | tr -d ':'); do
				mkdir -p "$r/lib/modules/$kv/$(dirname "$p")"
				cp k/lib/modules/"$kv"/"$p" "$r/lib/modules/$kv/$p"
			done
		done
		(cd $r && find . | cpio -o -H newc --quiet | gzip -1) >initrd-base.cpio.gz
		mkdir out
		mv initrd-base.cpio.gz out/
		cp k/boot/vmlinuz-"$kv" out/vmlinuz
		echo "$kv" >out/kernel-release
	) || { rm -rf "$b"; echo "rig: building the base image failed" >&2; exit 1; }
	# Images and packages of other versions go: the cache holds one set.
	keep=$(readlink -f "$b"/debs/*.deb)
	for f in "$cache"/debs/*.deb; do
		grep -qxF "$f" <<<"$keep" || rm -f "$f"
	done
	for d in "$cache"/*/; do
		case ${d%/} in "$cache/debs" | "$base") ;; *) rm -rf "$d" ;; esac
	done
	rm -rf "$base"
	mv "$b/out" "$base"
	rm -rf "$b"
fi
flock -u 9

# --- the tests: every package with a kernelrig test file, built static.
w=$(mktemp -d -t rarp-krig.XXXXXX)
[ "${KRIG_KEEP:-0}" = 1 ] || trap 'rm -rf "$w"' EXIT
ov=$w/overlay
mkdir -p "$ov/rig/bin" "$ov/rig/src"
cd "$repo"
if [ $# -gt 0 ]; then
	dirs=("$@")
else
	mapfile -t dirs < <(grep -rlE --include='*_test.go' --exclude-dir=.git --exclude-dir=testdata '^//go:build .*\bkernelrig\b' . 2>/dev/null |
		grep -v '^\./\.' | xargs -r -n1 dirname | sed 's|^\./||' | sort -u)
fi
[ ${#dirs[@]} -gt 0 ] || { echo "rig: no kernelrig tests found" >&2; exit 1; }
: >"$ov/rig/tests"
for d in "${dirs[@]}"; do
	d=${d#./}; d=${d%/}
	files=$(grep -lE '^//go:build .*\bkernelrig\b' "$d"/*_test.go 2>/dev/null) ||
		{ echo "rig: $d has no kernelrig test file" >&2; exit 2; }
	# Only the kernelrig files' tests run in the rig: the package's
	# others run on the host (scripts/test.sh).
	names=$(grep -hoE '^func (Test[A-Za-z0-9_]+)\(' $files | sed -E 's/^func (.*)\($/\1/' | sort -u | paste -sd'|')
	[ -n "$names" ] || { echo "rig: $d: kernelrig files hold no Test function" >&2; exit 1; }
	bin=$(echo "$d" | tr / _).test
	echo "rig: go test -c -tags kernelrig ./$d ($names)"
	CGO_ENABLED=0 go test -c -tags kernelrig -trimpath -o "$ov/rig/bin/$bin" "./$d"
	mkdir -p "$ov/rig/src/$d"
	[ -d "$d/testdata" ] && cp -a "$d/testdata" "$ov/rig/src/$d/"
	echo "$d $bin ^($names)\$" >>"$ov/rig/tests"
done
echo "$modules" >"$ov/rig/modules"
{
	echo "RARP_REQUIRE_PRIVILEGED=1"
	echo "RARP_KERNEL_RIG=1"
	echo "RIG_TEST_TIMEOUT=${KRIG_TEST_TIMEOUT:-4m}"
	for kv in ${KRIG_ENV:-}; do echo "$kv"; done
} >"$ov/rig/env"
cp "$here/init.sh" "$ov/init"
chmod +x "$ov/init"
(cd "$ov" && find . | cpio -o -H newc --quiet | gzip -1) >"$w/overlay.cpio.gz"
# The kernel unpacks concatenated archives in order: the tests over the base.
cat "$base/initrd-base.cpio.gz" "$w/overlay.cpio.gz" >"$w/initrd.gz"

# --- boot. The console is the serial port; the marker lines from init.sh
# carry the results. A guest that hangs is killed by timeout.
log=$w/console.log
# KRIG_LOCK: a lock file held around the boot only (on a shared machine,
# the heavy-job lock), so building the tests does not hold it.
lock=()
[ -z "${KRIG_LOCK:-}" ] || lock=(flock "$KRIG_LOCK")
echo "rig: booting $(cat "$base/kernel-release")${lock:+ once $KRIG_LOCK is free} (QEMU TCG, ${smp} vCPUs, ${mem} MiB, timeout ${timeout}s)"
start=$SECONDS
set +e
"${lock[@]}" timeout --foreground -k 5 "$timeout" qemu-system-x86_64 -accel tcg -m "$mem" -smp "$smp" \
	-nographic -no-reboot -nodefaults -serial stdio -display none \
	-kernel "$base/vmlinuz" -initrd "$w/initrd.gz" \
	-append "console=ttyS0 quiet panic=-1 oops=panic" </dev/null 2>&1 |
	tr -d '\r' | sed -u -E 's/\x1b(\[[0-9;?]*[a-zA-Z]|c)//g' | tee "$log"
qrc=${PIPESTATUS[0]}
set -e
up=$(sed -nE 's/^\[ *([0-9]+)\.[0-9]+\] reboot: Power down.*/\1/p' "$log" | tail -1)
echo "rig: guest powered off after ${up:-?}s of uptime; boot and tests took $((SECONDS - start))s${lock:+ including the wait for $KRIG_LOCK} (qemu exit $qrc)"

fail=0
if [ "$qrc" = 124 ] || [ "$qrc" = 137 ]; then
	echo "rig: FAIL: the guest did not finish within ${timeout}s (hang)"
	fail=1
elif [ "$qrc" != 0 ]; then
	echo "rig: FAIL: qemu exited $qrc"
	fail=1
fi
if grep -qE '(^|\] )(Kernel panic|BUG:|Oops:)' "$log"; then
	echo "rig: FAIL: the guest kernel panicked or oopsed"
	fail=1
fi
# Markers are matched anywhere on a line: the serial console may join
# one to what came before (init.sh starts each on a new line too).
grep -q '=== RIG-KERNEL ' "$log" || { echo "rig: FAIL: init never ran"; fail=1; }
if grep -q '=== RIG-MODPROBE-FAILED' "$log"; then
	echo "rig: FAIL: modules missing:"; grep '=== RIG-MODPROBE-FAILED' "$log"; fail=1
fi
while read -r d _; do
	line=$(grep -o "=== RIG-PKG-EXIT $d .*" "$log" || true)
	case $line in
	"=== RIG-PKG-EXIT $d 0 "*) echo "rig: ok   $d (${line##* })" ;;
	"") echo "rig: FAIL $d: no result (guest died during its tests)"; fail=1 ;;
	*) echo "rig: FAIL $d: exit $(echo "$line" | awk '{print $4}')"; fail=1 ;;
	esac
done <"$ov/rig/tests"
# Inside the rig every feature is there: a skip is a failure.
if grep -qE '^\s*--- SKIP' "$log"; then
	echo "rig: FAIL: tests skipped inside the rig:"; grep -E '^\s*--- SKIP' "$log"; fail=1
fi
if ! grep -q '=== RIG-EXIT 0$' "$log"; then
	fail=1
fi
n=$(grep -cE '^\s*--- PASS' "$log" || true)
if [ "$fail" = 0 ]; then
	echo "rig: PASS: $n tests and subtests on $(cat "$base/kernel-release"), ${SECONDS}s in all"
else
	echo "rig: FAILED"
fi
exit "$fail"
