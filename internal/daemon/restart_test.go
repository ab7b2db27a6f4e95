package daemon

import (
	"slices"
	"testing"

	"github.com/rarp-announce/rarp-announce/internal/config"
)

// A SIGHUP that changes a key the running daemon cannot apply logs that it
// needs a restart: the responder's answering rules and its table paths
// among them (found in review: a changed off_link, boot_dir or arp_advise
// was reported as reloaded and did nothing, and a new table path was read
// once and never watched).
func TestRestartOnly(t *testing.T) {
	base := func() *config.Config {
		c := config.Default()
		c.Responder = config.Responder{Enabled: true, Interfaces: []string{"br0"}, Ethers: "/etc/ethers"}
		return c
	}
	for _, c := range []struct {
		change func(*config.Config)
		want   []string
	}{
		{func(*config.Config) {}, nil},
		{func(c *config.Config) { c.Log.Level = "debug" }, nil}, // live
		{func(c *config.Config) { c.Responder.OffLink = true }, []string{"responder.off_link/boot_dir/arp_advise"}},
		{func(c *config.Config) { c.Responder.BootDir = "/tftpboot" }, []string{"responder.off_link/boot_dir/arp_advise"}},
		{func(c *config.Config) { c.Responder.ARPAdvise = true }, []string{"responder.off_link/boot_dir/arp_advise"}},
		{func(c *config.Config) { c.Responder.Ethers = "/srv/ethers" }, []string{"responder.ethers/map"}},
		{func(c *config.Config) { c.Responder.Map = "/srv/map.yaml" }, []string{"responder.ethers/map"}},
		{func(c *config.Config) { c.Responder.Interfaces = []string{"br1"} }, []string{"responder.enabled/interfaces"}},
		{func(c *config.Config) { c.Metrics.Address = "127.0.0.1:9999" }, []string{"metrics"}},
	} {
		b := base()
		c.change(b)
		if got := restartOnly(base(), b); !slices.Equal(got, c.want) {
			t.Errorf("restartOnly = %v, want %v", got, c.want)
		}
	}
}
