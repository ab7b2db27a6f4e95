package reconverge

import (
	"testing"

	"golang.org/x/sys/unix"

	"github.com/rarp-announce/rarp-announce/pkg/rarp"
)

// TestWatchIgnoresOutgoingInTheKernel: a watch's socket carries
// PACKET_IGNORE_OUTGOING, so the frames the host sends on the interface (the
// agent's own announces on an uplink) never reach its packet_rcv and filter
// (BenchmarkStorm: hundreds of watches per uplink made each announce cost
// hundreds of filter runs). That the filter drops them anyway is
// TestWatchCountsOnlyUnicastDeliveriesToTheMACs.
func TestWatchIgnoresOutgoingInTheKernel(t *testing.T) {
	host, _ := watchRig(t)
	ifi := host.Interface(t, "upl")
	var w *Watch
	if err := host.Do(func() (err error) {
		w, err = Open(ifi, To, []rarp.MAC{{0x52, 0x54, 0, 0, 0, 1}})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	rc, err := w.c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var v int
	var gerr error
	if err := rc.Control(func(fd uintptr) {
		v, gerr = unix.GetsockoptInt(int(fd), unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING)
	}); err != nil {
		t.Fatal(err)
	}
	if gerr != nil {
		t.Fatalf("getsockopt PACKET_IGNORE_OUTGOING: %v", gerr)
	}
	if v != 1 {
		t.Errorf("PACKET_IGNORE_OUTGOING = %d, want 1", v)
	}
}
