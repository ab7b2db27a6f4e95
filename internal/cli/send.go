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
	"time"

	"github.com/rarp-announce/rarp-announce/internal/caps"
	"github.com/rarp-announce/rarp-announce/pkg/announce"
	"github.com/rarp-announce/rarp-announce/pkg/rarp"
)

func init() {
	Register(&Command{Name: "send", Summary: "announce MACs on an interface now (by hand)", Run: runSend})
}

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
	lines := strings.Split(err.Error(), "\n")
	for i, l := range lines {
		lines[i] = "--" + l
	}
	return strings.Join(lines, "; ")
}

func runSend(ctx context.Context, env *Env, args []string) int {
	fs := flagSet(env, "send", "--interface IF --mac MAC [--mac MAC ...] [flags]", sendExamples)
	var (
		ifname   string
		macs     macList
		vlan     uint
		priority uint
		pcapPath string
		rate     float64
		quiet    bool
	)
	fs.StringVar(&ifname, "interface", "", "interface to send on: the bridge, macvtap or VLAN device (required)")
	fs.StringVar(&ifname, "i", "", "short for --interface")
	fs.Var(&macs, "mac", "MAC to announce; repeat or separate with commas (required)")
	fs.UintVar(&vlan, "vlan", 0, "802.1Q VLAN ID to tag the frames with, 1-4094 (default untagged)")
	fs.UintVar(&priority, "priority", 0, "802.1Q priority (PCP) of tagged frames, 0-7")
	sched := scheduleFlags(fs)
	fs.StringVar(&pcapPath, "pcap", "", "write the frames to this pcap file instead of the wire (dry run)")
	fs.Float64Var(&rate, "rate", announce.DefaultPacing().PerSecond, "at most this many frames per second on the interface")
	fs.BoolVar(&quiet, "quiet", false, "print only the summary")
	if code, ok := parse(env, fs, args); !ok {
		return code
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })

	switch {
	case ifname == "":
		return usageErr(env, "send", "--interface is required")
	case len(macs) == 0:
		return usageErr(env, "send", "--mac is required")
	case set["vlan"] && (vlan < 1 || vlan > 4094):
		return usageErr(env, "send", fmt.Sprintf("--vlan: %d is not a VLAN ID (1-4094)", vlan))
	case priority > 7:
		return usageErr(env, "send", fmt.Sprintf("--priority: %d is not 0-7", priority))
	case set["priority"] && !set["vlan"]:
		return usageErr(env, "send", "--priority needs --vlan")
	case rate <= 0:
		return usageErr(env, "send", "--rate: must be > 0")
	}
	if err := sched.Validate(); err != nil {
		return usageErr(env, "send", flagged(err))
	}
	tag := rarp.VLAN{ID: uint16(vlan), Priority: uint8(priority)}

	open := announce.OpenPacket
	if pcapPath != "" {
		f, err := os.Create(pcapPath)
		if err != nil {
			return failure(env, "send", err)
		}
		defer f.Close()
		open = announce.NewPcapWriter(f).Opener()
	} else if err := caps.Check(caps.SendNeed); err != nil {
		return failure(env, "send", err)
	} else if _, err := announce.CheckInterface(ifname); err != nil {
		return failure(env, "send", fmt.Errorf("interface %w", err))
	}

	var mu sync.Mutex
	var first time.Time
	a := announce.New(announce.Options{
		Open:   open,
		Pacing: announce.Pacing{PerSecond: rate, Burst: max(int(rate/10), 1)},
		OnFrame: func(s announce.Sent) {
			mu.Lock()
			defer mu.Unlock()
			if first.IsZero() && s.Err == nil {
				first = s.Time
			}
			if quiet && s.Err == nil {
				return
			}
			fmt.Fprintln(env.Stdout, formatSent(s, sched.Rounds))
		},
	})
	start := time.Now()
	var handles []*announce.Handle
	for _, m := range macs {
		h, err := a.Announce(announce.Request{MAC: m, Interface: ifname, VLAN: tag, Schedule: *sched, Reason: "manual"})
		if err != nil {
			a.Close()
			return usageErr(env, "send", err.Error())
		}
		handles = append(handles, h)
	}
	interrupted := false
	for _, h := range handles {
		select {
		case <-h.Done():
		case <-ctx.Done():
			interrupted = true
		}
		if interrupted {
			break
		}
	}
	a.Close()

	sent, failed := 0, 0
	var firstErr error
	for _, h := range handles {
		sent += h.Sent()
		failed += h.Failed()
		if firstErr == nil && h.Err() != nil {
			firstErr = h.Err()
		}
	}
	where := ifname
	if pcapPath != "" {
		where = pcapPath
	}
	summary := fmt.Sprintf("sent %d frames for %d MAC(s) on %s in %s", sent, len(macs), where, time.Since(start).Round(time.Millisecond))
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
