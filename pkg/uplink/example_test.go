package uplink_test

import (
	"errors"
	"log"
	"time"

	"github.com/rarp-announce/rarp-announce/pkg/rarp"
	"github.com/rarp-announce/rarp-announce/pkg/uplink"
)

// How the host strategy sends a VM's announce: out of the bridge's uplinks
// on the VM port's VLAN, nothing on an isolated bridge, the bridge device
// when the topology cannot say.
func ExampleResolver_Targets() {
	r, err := uplink.Open(uplink.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer r.Close()
	vm := rarp.MAC{0x52, 0x54, 0x00, 0x12, 0x34, 0x56}
	targets, err := r.Targets("br0", "vnet3", nil) // XML VLANs, if libvirt has them, instead of nil
	var fb *uplink.FallbackError
	switch {
	case errors.Is(err, uplink.ErrNoUplink):
		log.Printf("not announcing %s: %v", vm, err) // count by (*NoUplinkError).Reason
		return
	case errors.As(err, &fb):
		log.Printf("%v", err) // count by fb.Reason
		targets = []uplink.Target{{Uplink: uplink.Port{Name: "br0"}}}
	}
	for _, t := range targets {
		f := rarp.Announce(vm, t.VLAN)
		frame, _ := f.MarshalBinary()
		_ = frame // write it with announce.OpenPacket(t.Uplink.Name), paced per uplink
	}
}

// How the agent re-announces after an uplink event: every running local
// domain's NIC behind ev.Uplink, out of that uplink.
func ExampleWatcher() {
	r, err := uplink.Open(uplink.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer r.Close()
	w := r.Watch(uplink.WatchConfig{HoldDown: time.Second})
	defer w.Close()
	w.WatchBridge("br0")         // a bridge with VM taps
	w.WatchDevice("eth1")        // a macvtap's lower device
	w.WatchDevice("bond0")       // an Open vSwitch bridge's physical port
	for ev := range w.Events() { // metric label: ev.Reason.String()
		log.Printf("%v: re-announcing the NICs behind %s", ev, ev.Uplink.Name)
	}
}
