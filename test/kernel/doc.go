// Package kernel is the full-kernel test rig (run.sh, see README.md): it
// runs every test file carrying the "kernelrig" build tag on Debian's own
// kernel under QEMU, for the kernel objects the host's kernel may lack
// (802.1Q sub-interfaces, VLAN-filtering bridges, bonds, dummy links).
// Its own kernelrig tests, in this package, check that the rig's kernel
// has them and that netlink shows what the announce path will read.
package kernel
