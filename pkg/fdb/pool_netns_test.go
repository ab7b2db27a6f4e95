package fdb

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/vishvananda/netns"

	"github.com/rarp-announce/rarp-announce/internal/netnstest"
	"github.com/rarp-announce/rarp-announce/pkg/rarp"
)

// A Pool repairs many VMs at once, each repair removing exactly its VM's
// stale entry, as a landing storm needs.
func TestPoolRepairsConcurrently(t *testing.T) {
	rig, _ := landed(t)
	const vms = 64
	macs := make([]rarp.MAC, vms)
	for i := range macs {
		macs[i] = rarp.MAC{0x52, 0x54, 0x00, 0x9f, 0x00, byte(i)}
		netnstest.Learn(t, rig.Old, netnstest.RigOldPort, macs[i].String())
	}
	netnstest.Eventually(t, 5*time.Second, func() error {
		fdb := rig.Host.FDB(t, netnstest.RigHostBridge)
		n := 0
		for _, m := range macs {
			if fdb[m.String()] == netnstest.RigHostUplink {
				n++
			}
		}
		if n == vms {
			return nil
		}
		return fmt.Errorf("br0 learned %d of %d MACs on its uplink", n, vms)
	})

	h, err := netns.GetFromName(rig.Host.Name)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	m := NewMetrics(nil)
	p, err := NewPool(&h, m, 4)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()

	var wg sync.WaitGroup
	errs := make([]error, vms)
	for i, mac := range macs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			removed, err := p.Repair(netnstest.RigHostBridge, mac, vmPort)
			if err == nil && (len(removed) != 1 || removed[0].Port != netnstest.RigHostUplink) {
				err = fmt.Errorf("removed %+v, want the uplink entry", removed)
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("%s: %v", macs[i], err)
		}
	}
	fdb := rig.Host.FDB(t, netnstest.RigHostBridge)
	for _, mac := range macs {
		if port, ok := fdb[mac.String()]; ok {
			t.Errorf("br0 still has %s on %s", mac, port)
		}
	}
	if got := testutil.ToFloat64(m.removedTotal); got != vms {
		t.Errorf("entries removed = %v, want %d", got, vms)
	}
}
