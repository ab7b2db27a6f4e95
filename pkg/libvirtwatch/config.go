package libvirtwatch

import (
	"time"

	"go.uber.org/zap"

	"github.com/rarp-announce/rarp-announce/pkg/libvirtconn"
)

// Defaults for the zero values of Config.
const (
	DefaultBackoffMin = 200 * time.Millisecond
	DefaultBackoffMax = 10 * time.Second
	DefaultPingEvery  = 30 * time.Second
)

// Config configures a Watcher.
type Config struct {
	// Conn is how to reach libvirt (socket, URI, RPC timeout); the socket
	// is looked up again at every (re)connect. A call that times out
	// closes the connection, and the Watcher reconnects. Conn.Logger and
	// Conn.Metrics default to Logger and Metrics.RPC.
	Conn libvirtconn.Config
	// BackoffMin and BackoffMax bound the wait between reconnect attempts
	// (doubling from min to max; back to min after a successful
	// connection). Defaults 200 ms and 10 s.
	BackoffMin, BackoffMax time.Duration
	// PingEvery is how often a connected Watcher asks libvirt for its
	// version (bounded by Conn.RPCTimeout) to notice a libvirtd that still
	// holds the socket open but no longer answers: go-libvirt has no
	// keepalive, and without calls a wedged libvirtd would go unnoticed.
	// Default 30 s; negative disables.
	PingEvery time.Duration
	// AnnounceOnResync makes every (re)connect emit Landed for running
	// domains whose state reason is MIGRATED, POSTCOPY or POSTCOPY_FAILED
	// (they may have landed while nobody watched), once per QEMU process:
	// see Tracker.Resync. The agent wants this on.
	AnnounceOnResync bool
	// ReportConnection makes Run also send Disconnected when a working
	// connection is lost and Resynced after every resync's decisions: the
	// agent suspends refresh announces in between (a long libvirtd outage
	// must not keep broadcasting MACs of VMs an HA controller rebuilt
	// elsewhere). Off, the output carries only Landed, Cancel and Other.
	ReportConnection bool
	// Logger; nil = no logging.
	Logger *zap.Logger
	// Metrics; nil = not counted.
	Metrics *Metrics
}

func (c Config) withDefaults() Config {
	if c.BackoffMin <= 0 {
		c.BackoffMin = DefaultBackoffMin
	}
	if c.BackoffMax <= 0 {
		c.BackoffMax = DefaultBackoffMax
	}
	if c.BackoffMax < c.BackoffMin {
		c.BackoffMax = c.BackoffMin
	}
	if c.PingEvery == 0 {
		c.PingEvery = DefaultPingEvery
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	if c.Metrics == nil {
		c.Metrics = NewMetrics(nil) // counted, not exported
	}
	if c.Conn.Logger == nil {
		c.Conn.Logger = c.Logger
	}
	if c.Conn.Metrics == nil {
		c.Conn.Metrics = c.Metrics.RPC
	}
	c.Conn = c.Conn.WithDefaults()
	return c
}
