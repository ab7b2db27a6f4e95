// Command ovnready prints what pkg/ovs's OVNReadiness reads from the local
// OVSDB about the OVS interface of an OVN logical port: the OVN lab
// (test/lab/lab-e2e-ovn.sh) runs it on each migration's destination to check
// the readiness code against a real ovn-controller.
//
//	ovnready -iface-id LSP [-db unix:/run/openvswitch/db.sock] [-timeout 2s]
//
// It prints one line, "interface=vnet1 ofport=5 iface-id=LSP installed=true
// ready=true", and exits 0 once the port is ready, 1 if it is not (or not
// found) within the timeout, 2 on bad usage.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/rarp-announce/rarp-announce/pkg/ovs"
)

func main() {
	id := flag.String("iface-id", "", "the OVN logical port (external_ids:iface-id)")
	db := flag.String("db", "", "OVSDB socket (default: unix:$OVS_RUNDIR/db.sock)")
	timeout := flag.Duration("timeout", 2*time.Second, "how long to wait for ovn-installed")
	flag.Parse()
	if *id == "" || flag.NArg() != 0 {
		fmt.Fprintln(os.Stderr, "usage: ovnready -iface-id LSP [-db SOCKET] [-timeout D]")
		os.Exit(2)
	}
	ctx := context.Background()
	r := &ovs.OVNReadiness{Socket: *db}
	defer r.Close()
	p, err := r.PortByIfaceID(ctx, *id)
	if err == nil {
		p, err = r.Wait(ctx, p.Interface, *timeout)
	}
	fmt.Printf("interface=%s ofport=%d iface-id=%s installed=%v ready=%v\n", p.Interface, p.OFPort, p.IfaceID, p.Installed, p.Ready())
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
