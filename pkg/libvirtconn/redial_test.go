package libvirtconn

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/rarp-announce/rarp-announce/internal/libvirtfake"
)

// The Redialer dials on first use, once for concurrent callers; a call that
// times out costs only its own connection, and the next call dials again;
// after Close every call fails with ErrClosed. Another connection to the
// same libvirtd (the watcher's, in the daemon) is not disturbed.
func TestFakeRedialer(t *testing.T) {
	libvirtfake.CheckLeaks(t)
	s := libvirtfake.Start(t)
	vm := libvirtfake.AddTestDomain(t, s, 1, StateRunning, 1, 1)
	ref := DomainRef{Name: vm.Name, UUID: vm.UUID}
	m := NewMetrics(nil)
	cfg := Config{Socket: s.Path(), URI: "test:///default", RPCTimeout: 300 * time.Millisecond, Metrics: m}
	other, err := Dial(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	opens := func() int { return len(s.URIs()) }
	base := opens()

	r := NewRedialer(cfg)
	if got := opens(); got != base {
		t.Fatalf("NewRedialer dialed: %d connections opened", got-base)
	}
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := r.QEMUMonitorCommand(ctx, ref, `{"execute":"query-status"}`)
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("monitor command: %v", err)
		}
	}
	if got := opens() - base; got != 1 {
		t.Errorf("8 concurrent calls opened %d connections, want 1", got)
	}

	s.Hang(libvirtfake.ProgramQEMU, libvirtfake.ProcQEMUDomainMonitorCommand, true)
	if _, err := r.QEMUMonitorCommand(ctx, ref, `{"execute":"query-status"}`); !errors.Is(err, ErrTimeout) {
		t.Fatalf("hung monitor command: %v, want ErrTimeout", err)
	}
	s.Hang(libvirtfake.ProgramQEMU, libvirtfake.ProcQEMUDomainMonitorCommand, false)
	if _, err := r.QEMUMonitorCommand(ctx, ref, `{"execute":"query-status"}`); err != nil {
		t.Fatalf("after the timeout: %v", err)
	}
	if got := opens() - base; got != 2 {
		t.Errorf("after a timeout: %d connections opened in all, want 2", got)
	}
	select {
	case <-other.Done():
		t.Error("the other connection was closed by the Redialer's timeout")
	default:
	}
	if _, err := other.DomainXML(ctx, ref); err != nil {
		t.Errorf("the other connection after the Redialer's timeout: %v", err)
	}
	if got := testutil.ToFloat64(m.rpcTimeouts.WithLabelValues(procMonitorCommand)); got != 1 {
		t.Errorf("rpc_timeouts{domain_qemu_monitor_command} = %v, want 1", got)
	}

	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := r.QEMUMonitorCommand(ctx, ref, `{"execute":"query-status"}`); !errors.Is(err, ErrClosed) {
		t.Errorf("after Close: %v, want ErrClosed", err)
	}
}
