package libvirtconn

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rarp-announce/rarp-announce/internal/libvirtfake"
	"github.com/rarp-announce/rarp-announce/internal/netnstest"
	"github.com/rarp-announce/rarp-announce/pkg/domxml"
)

// Tests against libvirtfake (a fake libvirtd); pkg/libvirtwatch tests the
// calls again through its Watcher, and against a real libvirtd.

// Dial is the one-shot client (the CLI's announce --domain): connect,
// look up, read the XML, close.
func TestFakeDialOneShot(t *testing.T) {
	libvirtfake.CheckLeaks(t)
	s := libvirtfake.Start(t)
	libvirtfake.AddTestDomain(t, s, 7, StateRunning, ReasonRunningMigrated, 2)
	ctx := context.Background()
	c, err := Dial(ctx, Config{Socket: s.Path(), URI: "test:///default", RPCTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	d, err := c.LookupDomain(ctx, "vm7")
	if err != nil {
		t.Fatal(err)
	}
	xml, err := c.DomainXML(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	if dom, err := domxml.Parse(xml); err != nil || len(dom.Interfaces) != 2 {
		t.Fatalf("Parse: %+v %v", dom, err)
	}
	active, err := c.ActiveDomains(ctx)
	if err != nil || len(active) != 1 || active[0].Reason != ReasonRunningMigrated || active[0].ID != 7 {
		t.Fatalf("ActiveDomains = %+v, %v", active, err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.Done():
	default:
		t.Error("Done not closed after Close")
	}
	if _, err := c.DomainXML(ctx, d); !errors.Is(err, ErrConnectionLost) {
		t.Errorf("DomainXML after Close: %v, want ErrConnectionLost", err)
	}
	if s.Calls(libvirtfake.ProgramRemote, libvirtfake.ProcConnectClose) != 1 {
		t.Error("Close did not send CONNECT_CLOSE")
	}
	netnstest.WaitFor(t, "the server to see the connection closed", func() bool { return s.Connections() == 0 })
}

func TestDialNoSocket(t *testing.T) {
	_, err := Dial(context.Background(), Config{Socket: filepath.Join(t.TempDir(), "none")})
	if err == nil || !strings.Contains(err.Error(), "none") {
		t.Errorf("Dial to a missing socket: %v", err)
	}
	old := DefaultSockets
	DefaultSockets = []string{filepath.Join(t.TempDir(), "a"), filepath.Join(t.TempDir(), "b")}
	defer func() { DefaultSockets = old }()
	if _, err := Dial(context.Background(), Config{}); !errors.Is(err, ErrNoSocket) {
		t.Errorf("Dial without any default socket: %v, want ErrNoSocket", err)
	}
}

func TestConfigSocketPath(t *testing.T) {
	dir := t.TempDir()
	old := DefaultSockets
	defer func() { DefaultSockets = old }()
	DefaultSockets = []string{filepath.Join(dir, "virtqemud-sock"), filepath.Join(dir, "libvirt-sock")}
	if err := os.WriteFile(DefaultSockets[1], nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if p, err := (Config{}).SocketPath(); err != nil || p != DefaultSockets[1] {
		t.Errorf("SocketPath = %q, %v; want the monolithic socket", p, err)
	}
	if err := os.WriteFile(DefaultSockets[0], nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if p, _ := (Config{}).SocketPath(); p != DefaultSockets[0] {
		t.Errorf("SocketPath = %q; want virtqemud's first", p)
	}
	if p, _ := (Config{Socket: "/x"}).SocketPath(); p != "/x" {
		t.Errorf("explicit Socket ignored: %q", p)
	}
}
