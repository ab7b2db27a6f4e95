package responder

import (
	"context"
	"net"
	"time"

	"github.com/vishvananda/netlink"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// neighbour is one client to add to the neighbour table (ARPAdvise).
type neighbour struct {
	ifindex int32
	ip      [4]byte
	mac     [6]byte
}

// adviseLoop writes answered clients into the neighbour table, as rarpd's
// arp_advise does (SIOCSARP with ATF_COM: a complete, not permanent entry,
// which netlink calls NUD_REACHABLE). The same client is written again
// only after a minute, so a client asking repeatedly costs one netlink
// message, not one per request.
func (r *Responder) adviseLoop(ctx context.Context) {
	recent := map[neighbour]time.Time{}
	var lastErr time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case n := <-r.advise:
			now := time.Now()
			if t, ok := recent[n]; ok && now.Sub(t) < time.Minute {
				continue
			}
			if len(recent) > 65536 {
				clear(recent)
			}
			recent[n] = now
			err := r.nl.NeighSet(&netlink.Neigh{
				LinkIndex:    int(n.ifindex),
				Family:       unix.AF_INET,
				State:        netlink.NUD_REACHABLE,
				IP:           net.IP(n.ip[:]),
				HardwareAddr: net.HardwareAddr(n.mac[:]),
			})
			if err != nil && now.Sub(lastErr) > time.Second {
				lastErr = now
				r.log.Warn("client not added to the neighbour table", zap.Stringer("ip", addr4(n.ip)), zap.Error(err))
			}
		}
	}
}
