package qmp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/rarp-announce/rarp-announce/internal/netnstest"
	"github.com/rarp-announce/rarp-announce/pkg/announce"
)

func TestAnnounceSelfCommand(t *testing.T) {
	got, err := AnnounceSelfCommand([]string{"net0", "net1"}, announce.DefaultSchedule(), "rarp-announce")
	if err != nil {
		t.Fatal(err)
	}
	want := `{"execute":"announce-self","arguments":{"initial":50,"max":550,"rounds":5,"step":100,"interfaces":["net0","net1"],"id":"rarp-announce"}}`
	if got != want {
		t.Fatalf("\n got %s\nwant %s", got, want)
	}
	if _, err := AnnounceSelfCommand(nil, announce.DefaultSchedule(), ""); err == nil {
		t.Fatal("no aliases accepted")
	}
}

// A burst's announce-self goes BurstInterval after the previous one, but
// not before QEMU sent the previous burst's last round (plus burstGap):
// the same timer id would replace the rounds it has left.
func TestBurstStarts(t *testing.T) {
	s := announce.DefaultSchedule() // 5 rounds: the last at 800 ms
	s.Bursts = 3
	for _, c := range []struct {
		interval time.Duration
		want     []time.Duration
	}{
		{2 * time.Second, []time.Duration{0, 2 * time.Second, 4 * time.Second}},
		{30 * time.Millisecond, []time.Duration{0, 850 * time.Millisecond, 1700 * time.Millisecond}},
	} {
		s.BurstInterval = c.interval
		if got := burstStarts(s); !slices.Equal(got, c.want) {
			t.Errorf("interval %v: bursts start at %v, want %v", c.interval, got, c.want)
		}
	}
	s.Bursts = 1
	if got := burstStarts(s); !slices.Equal(got, []time.Duration{0}) {
		t.Errorf("one burst: %v", got)
	}
}

// Each announcer's timer id names its NICs: QEMU replaces a timer whose
// id is reused, so announces of other NICs or from another announcer must
// not share one (TestAnnounceSelfRealQEMU shows what QEMU does with them).
func TestAnnouncerTimerIDs(t *testing.T) {
	var ids []string
	record := func(_ context.Context, _, cmd string) (string, error) {
		var c command
		if err := json.Unmarshal([]byte(cmd), &c); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, c.Arguments.ID)
		return `{"return":{}}`, nil
	}
	landing := &Announcer{Monitor: record, Metrics: NewMetrics(nil)}
	guest := &Announcer{Monitor: record, Metrics: NewMetrics(nil), Name: "rarp-announce-guest"}
	for _, c := range []struct {
		a       *Announcer
		aliases []string
	}{{landing, []string{"net0", "net1"}}, {landing, []string{"net2"}}, {guest, []string{"net1"}}} {
		if err := c.a.AnnounceSelf(context.Background(), "u-1", c.aliases, announce.DefaultSchedule()); err != nil {
			t.Fatal(err)
		}
	}
	want := []string{"rarp-announce:net0,net1", "rarp-announce:net2", "rarp-announce-guest:net1"}
	if !slices.Equal(ids, want) {
		t.Errorf("timer ids %q, want %q", ids, want)
	}
}

func TestParseReply(t *testing.T) {
	cases := []struct {
		in   string
		want error
		msg  string
	}{
		{`{"return":{},"id":"libvirt-25"}`, nil, ""},
		{`{"id":"libvirt-26","error":{"class":"GenericError","desc":"No netdev found for 'net9'"}}`, ErrQMP, "GenericError: No netdev found for 'net9'"},
		{`{"error":{"class":"CommandNotFound","desc":"The command announce-self has not been found"}}`, ErrQMP, "CommandNotFound"},
		{`{"id":"libvirt-27"}`, ErrReply, ""},
		{`not json`, ErrReply, "not json"},
		{``, ErrReply, ""},
	}
	for _, c := range cases {
		err := ParseReply(c.in)
		if !errors.Is(err, c.want) || (c.want == nil) != (err == nil) {
			t.Errorf("%q: %v, want %v", c.in, err, c.want)
		}
		if err != nil && !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%q: %v does not say %q", c.in, err, c.msg)
		}
	}
}

func TestAnnouncerBurstsAndErrors(t *testing.T) {
	var mu sync.Mutex
	var calls []time.Time
	replies := []string{`{"return":{}}`, `{"return":{}}`, `{"return":{}}`}
	m := NewMetrics(nil)
	a := &Announcer{Metrics: m, Monitor: func(_ context.Context, uuid, cmd string) (string, error) {
		mu.Lock()
		defer mu.Unlock()
		if uuid != "u-1" || !strings.Contains(cmd, `"interfaces":["net0"]`) {
			t.Errorf("called with %s %s", uuid, cmd)
		}
		calls = append(calls, time.Now())
		return replies[len(calls)-1], nil
	}}
	s := announce.DefaultSchedule()
	s.Rounds = 1 // a burst of one frame: the bursts go 50 ms apart (burstGap)
	s.Bursts, s.BurstInterval = 3, 30*time.Millisecond
	if err := a.AnnounceSelf(context.Background(), "u-1", []string{"net0"}, s); err != nil {
		t.Fatal(err)
	}
	netnstest.Eventually(t, 2*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		if n := len(calls); n != 3 {
			return fmt.Errorf("%d announce-self calls, want 3 bursts", n)
		}
		return nil
	})
	if v := testutil.ToFloat64(m.calls.WithLabelValues("ok")); v != 3 {
		t.Fatalf("ok calls %v", v)
	}

	bad := &Announcer{Metrics: m, Monitor: func(context.Context, string, string) (string, error) {
		return `{"error":{"class":"GenericError","desc":"no such device"}}`, nil
	}}
	if err := bad.AnnounceSelf(context.Background(), "u-1", []string{"net0"}, announce.DefaultSchedule()); !errors.Is(err, ErrQMP) {
		t.Fatalf("QMP error not reported: %v", err)
	}
	slow := &Announcer{Metrics: m, Monitor: func(ctx context.Context, _, _ string) (string, error) {
		<-ctx.Done()
		return "", ctx.Err()
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := slow.AnnounceSelf(ctx, "u-1", []string{"net0"}, announce.DefaultSchedule()); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("timeout not reported: %v", err)
	}
	if testutil.ToFloat64(m.calls.WithLabelValues("qmp_error")) != 1 || testutil.ToFloat64(m.calls.WithLabelValues("timeout")) != 1 {
		t.Fatal("errors not counted by reason")
	}
}

// timeoutErr is a timeout as libvirtconn reports it: its own error value
// with a Timeout method, not context.DeadlineExceeded.
type timeoutErr struct{}

func (timeoutErr) Error() string { return "libvirt did not answer in time" }
func (timeoutErr) Timeout() bool { return true }

// Every way a call can end is counted under its own result, whatever the
// monitor made of QEMU's reply.
func TestAnnouncerCountsResults(t *testing.T) {
	qmpErr := `{"id":"libvirt-14","error":{"class":"GenericError","desc":"Parameter 'id' is unexpected"}}`
	cases := []struct {
		name   string
		reply  string
		err    error
		result string
		is     error  // the error AnnounceSelf returns matches it
		says   string // and says this
	}{
		{"ok", `{"return":{},"id":"libvirt-13"}`, nil, "ok", nil, ""},
		{"QMP error, plain reply", qmpErr, nil, "qmp_error", ErrQMP, "GenericError: Parameter 'id' is unexpected"},
		// a monitor that reports the QMP error besides the reply
		{"QMP error, also reported by the monitor", qmpErr, errors.New("QMP error GenericError: Parameter 'id' is unexpected"), "qmp_error", ErrQMP, "GenericError: Parameter 'id' is unexpected"},
		{"command QEMU lacks", `{"error":{"class":"CommandNotFound","desc":"The command announce-self has not been found"}}`, nil, "qmp_error", ErrQMP, "CommandNotFound"},
		{"not a reply", `{"timestamp":{"seconds":1},"event":"STOP"}`, nil, "bad_reply", ErrReply, "event"},
		{"libvirt timeout", "", fmt.Errorf("libvirt domain_qemu_monitor_command: %w (5s; connection closed)", timeoutErr{}), "timeout", timeoutErr{}, "did not answer"},
		{"deadline", "", context.DeadlineExceeded, "timeout", context.DeadlineExceeded, ""},
		{"cancelled", "", context.Canceled, "cancelled", context.Canceled, ""},
		{"read-only socket", "", errors.New("libvirt domain_qemu_monitor_command: operation forbidden: read only access prevents virDomainQemuMonitorCommand"), "rpc_error", nil, "read only"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := NewMetrics(nil)
			a := &Announcer{Metrics: m, Monitor: func(context.Context, string, string) (string, error) { return c.reply, c.err }}
			err := a.AnnounceSelf(context.Background(), "u-1", []string{"net0"}, announce.DefaultSchedule())
			if (c.result == "ok") != (err == nil) {
				t.Fatalf("AnnounceSelf: %v", err)
			}
			if c.is != nil && !errors.Is(err, c.is) {
				t.Errorf("AnnounceSelf: %v, want %v", err, c.is)
			}
			if err != nil && !strings.Contains(err.Error(), c.says) {
				t.Errorf("AnnounceSelf: %v does not say %q", err, c.says)
			}
			for _, r := range []string{"ok", "qmp_error", "bad_reply", "timeout", "cancelled", "rpc_error"} {
				want := 0.0
				if r == c.result {
					want = 1
				}
				if got := testutil.ToFloat64(m.calls.WithLabelValues(r)); got != want {
					t.Errorf("result %q counted %v times, want %v", r, got, want)
				}
			}
		})
	}
}

func FuzzParseReply(f *testing.F) {
	f.Add(`{"return":{}}`)
	f.Add(`{"error":{"class":"GenericError","desc":"x"}}`)
	f.Fuzz(func(t *testing.T, s string) {
		err := ParseReply(s)
		if err != nil && !errors.Is(err, ErrQMP) && !errors.Is(err, ErrReply) {
			t.Fatalf("unclassified error %v", err)
		}
	})
}
