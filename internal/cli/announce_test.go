package cli

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rarp-announce/rarp-announce/internal/config"
	"github.com/rarp-announce/rarp-announce/internal/daemon"
	"github.com/rarp-announce/rarp-announce/pkg/plan"
)

// announce --domain opens libvirt's read-write socket only for QMP, and
// only at the first QMP command: a domain with no NIC on the qemu strategy
// never dials it (issue 10). Without qemu in the config or --strategy,
// there is no QMP at all.
func TestAnnounceDialsReadWriteOnlyForQMP(t *testing.T) {
	cfg := config.Default()
	cfg.Libvirt.Socket = filepath.Join(t.TempDir(), "absent-sock")
	rw := &lazyConn{cfg: daemon.QMPConfig(cfg, nil, nil)}
	defer rw.Close()
	if rw.cfg.ReadOnly {
		t.Fatal("the QMP connection's config is read-only")
	}
	env := &Env{}
	if o := announceOptions(env, cfg, "", nil, rw); (o.Monitor != nil) != cfg.UsesQEMU() {
		t.Errorf("default config (qemu used: %v): monitor set %v", cfg.UsesQEMU(), o.Monitor != nil)
	}
	if rw.conn != nil {
		t.Fatal("dialed before any QMP command")
	}
	cfg.Strategies.VhostUser, cfg.Strategies.Ethernet = config.StrategySkip, config.StrategySkip
	if cfg.UsesQEMU() {
		t.Fatal("this config still uses qemu somewhere")
	}
	if o := announceOptions(env, cfg, "", nil, rw); o.Monitor != nil {
		t.Error("no NIC kind on qemu: QMP monitor set anyway")
	}
	o := announceOptions(env, cfg, plan.QEMU, nil, rw)
	if o.Monitor == nil {
		t.Fatal("--strategy qemu: no QMP monitor")
	}
	// The first QMP command dials (here: fails, the socket is absent).
	if _, err := o.Monitor(context.Background(), "uuid", `{"execute":"query-status"}`); err == nil || !strings.Contains(err.Error(), "read-write") {
		t.Errorf("first QMP command: %v, want a read-write dial error", err)
	}
}
