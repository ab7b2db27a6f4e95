package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rarp-announce/rarp-announce/internal/app"
	"github.com/rarp-announce/rarp-announce/internal/caps"
	"github.com/rarp-announce/rarp-announce/internal/config"
	"github.com/rarp-announce/rarp-announce/pkg/announce"
	"github.com/rarp-announce/rarp-announce/pkg/rarp"
)

const sendExamples = `  # The switches still send 52:54:00:aa:bb:cc to the old host: tell them it is here.
  rarp-announce send --interface br0 --mac 52:54:00:aa:bb:cc

  # Two NICs of one VM, on VLAN 100 of a trunk, with Nova's workaround: 3 bursts 1 s apart.
  rarp-announce send -i br0 --mac 52:54:00:aa:bb:cc --mac 52:54:00:aa:bb:cd --vlan 100 \
      --bursts 3 --burst-interval 1s

  # Dry run: write the frames to a file instead of the wire, then read them back.
  rarp-announce send -i br0 --mac 52:54:00:aa:bb:cc --pcap /tmp/announce.pcap
  tcpdump -nn -e -r /tmp/announce.pcap
`

// macList collects repeated --mac flags.
type macList []rarp.MAC

func (l *macList) String() string {
	s := make([]string, len(*l))
	for i, m := range *l {
		s[i] = m.String()
	}
	return strings.Join(s, ",")
}

func (l *macList) Set(v string) error {
	for _, p := range strings.Split(v, ",") {
		m, err := rarp.ParseMAC(strings.TrimSpace(p))
		if err != nil {
			return err
		}
		if err := m.ValidateUnicast(); err != nil {
			return err
		}
		*l = append(*l, m)
	}
	return nil
}

// scheduleFlags binds the schedule flags shared by send and announce.
func scheduleFlags(fs *flag.FlagSet) *announce.Schedule {
	s := announce.DefaultSchedule()
	fs.DurationVar(&s.Initial, "initial", s.Initial, "gap after the first frame (QEMU's announce-initial)")
	fs.DurationVar(&s.Step, "step", s.Step, "how much each further gap grows (announce-step)")
	fs.IntVar(&s.Rounds, "rounds", s.Rounds, "frames per burst (announce-rounds)")
	fs.DurationVar(&s.Max, "max", s.Max, "longest gap between frames (announce-max)")
	fs.IntVar(&s.Bursts, "bursts", s.Bursts, "repeat the whole burst this many times (Nova's count)")
	fs.DurationVar(&s.BurstInterval, "burst-interval", s.BurstInterval, "time between the starts of bursts (Nova's interval)")
	return &s
}

// flagged prefixes a Validate error with "--" so it names the flag.
func flagged(err error) string {
	fes := announce.FieldErrors(err)
	if len(fes) == 0 {
		return err.Error()
	}
	lines := make([]string, len(fes))
	for i, fe := range fes {
		lines[i] = "--" + fe.Error()
	}
	return strings.Join(lines, "; ")
}

// sendFlags are send's flags.
type sendFlags struct {
	ifname         string
	macs           macList
	vlan, priority uint
	sched          *announce.Schedule
	pcapPath       string
	rate           config.Rate
	quiet          bool
	set            map[string]bool // flags given on the command line
}

func (f *sendFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.ifname, "interface", "", "interface to send on: the bridge, macvtap or VLAN device (required)")
	fs.StringVar(&f.ifname, "i", "", "short for --interface")
	fs.Var(&f.macs, "mac", "MAC to announce; repeat or separate with commas (required)")
	fs.UintVar(&f.vlan, "vlan", 0, "802.1Q VLAN ID to tag the frames with, 1-4094 (default untagged)")
	fs.UintVar(&f.priority, "priority", 0, "802.1Q priority (PCP) of tagged frames, 0-7")
	f.sched = scheduleFlags(fs)
	fs.StringVar(&f.pcapPath, "pcap", "", "write the frames to this pcap file instead of the wire (dry run)")
	fs.Var(&f.rate, "rate", "at most this many frames per second on the interface (1 to 1e6)")
	fs.BoolVar(&f.quiet, "quiet", false, "print only the summary")
}

// check returns what is wrong with the flags, or "".
func (f *sendFlags) check() string {
	switch {
	case f.ifname == "":
		return "--interface is required"
	case len(f.macs) == 0:
		return "--mac is required"
	case f.set["vlan"] && (f.vlan < 1 || f.vlan > 4094):
		return fmt.Sprintf("--vlan: %d is not a VLAN ID (1-4094)", f.vlan)
	case f.priority > 7:
		return fmt.Sprintf("--priority: %d is not 0-7", f.priority)
	case f.set["priority"] && !f.set["vlan"]:
		return "--priority needs --vlan"
	}
	if err := f.sched.Validate(); err != nil {
		return flagged(err)
	}
	return ""
}

// opener is where the frames go: the pcap file, created exclusively, or
// the interface, which must exist and be up.
func (f *sendFlags) opener() (announce.Opener, func(), error) {
	if f.pcapPath == "" {
		if err := caps.Check(caps.SendNeed); err != nil {
			return nil, nil, err
		}
		if _, err := announce.CheckInterface(f.ifname); err != nil {
			return nil, nil, fmt.Errorf("interface %w", err)
		}
		return announce.OpenPacket, func() {}, nil
	}
	// Created, never reused: an existing file (or a symlink planted where
	// the capture goes) is refused rather than truncated or followed, and
	// the capture is readable by its owner only.
	file, err := os.OpenFile(f.pcapPath, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, nil, fmt.Errorf("pcap: %w (the file must not exist yet)", err)
	}
	return announce.NewPcapWriter(file).Opener(), func() { _ = file.Close() }, nil
}

func runSend(ctx context.Context, env *Env, args []string) int {
	fs := flagSet(env, "send", "--interface IF --mac MAC [--mac MAC ...] [flags]", sendExamples)
	f := sendFlags{set: map[string]bool{}, rate: config.Rate(announce.DefaultPacing().PerSecond)}
	f.register(fs)
	if code, ok := parse(env, fs, args); !ok {
		return code
	}
	fs.Visit(func(fl *flag.Flag) { f.set[fl.Name] = true })
	if msg := f.check(); msg != "" {
		return usageErr(env, "send", msg)
	}
	open, closeOut, err := f.opener()
	if err != nil {
		return failure(env, "send", err)
	}
	defer closeOut()

	var mu sync.Mutex
	var first time.Time
	a := app.NewAnnouncer(announce.Pacing{PerSecond: float64(f.rate), Burst: max(int(f.rate/10), 1)}, app.Options{
		Open: open,
		OnFrame: func(s announce.Sent) {
			mu.Lock()
			defer mu.Unlock()
			if first.IsZero() && s.Err == nil {
				first = s.Time
			}
			if !f.quiet || s.Err != nil {
				fmt.Fprintln(env.Stdout, formatSent(s, f.sched.Rounds))
			}
		},
	})
	start := time.Now()
	tag := rarp.VLAN{ID: uint16(f.vlan), Priority: uint8(f.priority)}
	var handles []*announce.Handle
	for _, m := range f.macs {
		h, err := a.Announce(announce.Request{MAC: m, Interface: f.ifname, VLAN: tag, Schedule: *f.sched, Reason: announce.TriggerManual.String()})
		if err != nil {
			a.Close()
			return usageErr(env, "send", err.Error())
		}
		handles = append(handles, h)
	}
	interrupted := waitAll(ctx, handles)
	a.Close()
	where := f.ifname
	if f.pcapPath != "" {
		where = f.pcapPath
	}
	return sendSummary(env, handles, len(f.macs), where, start, first, interrupted)
}

// waitAll waits for every handle; true if ctx ended first.
func waitAll(ctx context.Context, handles []*announce.Handle) bool {
	for _, h := range handles {
		select {
		case <-h.Done():
		case <-ctx.Done():
			return true
		}
	}
	return false
}

// sendSummary prints what was sent and returns the exit code.
func sendSummary(env *Env, handles []*announce.Handle, macs int, where string, start, first time.Time, interrupted bool) int {
	sent, failed := 0, 0
	var firstErr error
	for _, h := range handles {
		sent += h.Sent()
		failed += h.Failed()
		if firstErr == nil && h.Err() != nil {
			firstErr = h.Err()
		}
	}
	summary := fmt.Sprintf("sent %d frames for %d MAC(s) on %s in %s", sent, macs, where, time.Since(start).Round(time.Millisecond))
	if !first.IsZero() {
		summary += fmt.Sprintf(" (first frame %s after start)", first.Sub(start).Round(time.Microsecond))
	}
	fmt.Fprintln(env.Stdout, summary)
	switch {
	case interrupted:
		fmt.Fprintln(env.Stderr, "rarp-announce send: interrupted")
		return ExitFailure
	case failed > 0:
		if errors.Is(firstErr, announce.ErrInterfaceDown) || errors.Is(firstErr, announce.ErrNoInterface) {
			firstErr = fmt.Errorf("interface %w", firstErr)
		}
		return failure(env, "send", fmt.Errorf("%d frame(s) failed: %w", failed, firstErr))
	}
	return ExitOK
}

// formatSent is one line per frame: time, interface, MAC, VLAN, position.
func formatSent(s announce.Sent, rounds int) string {
	vlan := "untagged"
	if s.VLAN.Tagged() {
		vlan = "vlan=" + strconv.Itoa(int(s.VLAN.ID))
	}
	pos := "refresh"
	if !s.Refresh {
		pos = fmt.Sprintf("burst=%d round=%d/%d", s.Slot.Burst, s.Slot.Round, rounds)
	}
	status := "sent"
	if s.Err != nil {
		status = "FAILED: " + s.Err.Error()
	}
	return fmt.Sprintf("%s %s %s %s %s %s", s.Time.Format("2006-01-02T15:04:05.000000Z07:00"), s.Interface, s.MAC, vlan, pos, status)
}
