package qmp

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

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
	m := NewMetrics()
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
	s.Bursts, s.BurstInterval = 3, 30*time.Millisecond
	if err := a.AnnounceSelf(context.Background(), "u-1", []string{"net0"}, s); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for {
		mu.Lock()
		n := len(calls)
		mu.Unlock()
		if n == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d announce-self calls, want 3 bursts", n)
		}
		time.Sleep(5 * time.Millisecond)
	}
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
