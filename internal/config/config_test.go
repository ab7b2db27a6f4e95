package config

import (
	"fmt"
	"math"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestEmptyFileIsDefaults(t *testing.T) {
	for _, data := range []string{"", "\n# nothing\n", "{}"} {
		c, err := Parse("empty.yaml", []byte(data))
		if err != nil {
			t.Fatalf("%q: %v", data, err)
		}
		if !reflect.DeepEqual(c, Default()) {
			t.Fatalf("%q: %+v", data, c)
		}
	}
}

// host.frame_mark takes a mark in hex or decimal; 0 turns marking off.
func TestFrameMark(t *testing.T) {
	for in, want := range map[string]uint32{"0x10": 16, "4294967295": math.MaxUint32, "0": 0} {
		c, err := Parse("c.yaml", []byte("host:\n  frame_mark: "+in+"\n"))
		if err != nil {
			t.Fatalf("%s: %v", in, err)
		}
		if c.Host.FrameMark != want {
			t.Errorf("frame_mark %s = %#x, want %#x", in, c.Host.FrameMark, want)
		}
	}
	if Default().Host.FrameMark != DefaultFrameMark {
		t.Errorf("default frame_mark %#x", Default().Host.FrameMark)
	}
}

// The example config documents every key with its default: it must parse
// to exactly the defaults and name every field of Config.
func TestExampleConfigIsCompleteAndDefault(t *testing.T) {
	data, err := os.ReadFile("../../deploy/rarp-announce.yaml")
	if err != nil {
		t.Fatal(err)
	}
	c, err := Parse("rarp-announce.yaml", data)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(c, Default()) {
		t.Fatalf("example differs from defaults:\n%+v\n%+v", c, Default())
	}
	for _, key := range keys(reflect.TypeOf(Config{}), "") {
		if lineOf(mustNode(t, data), key) == 0 {
			t.Errorf("example config does not document %s", key)
		}
	}
}

// Each class of problem, as the operator reads it and as a caller gets
// it: the typed Error's line, key and class.
func TestErrorsNameFileLineAndKey(t *testing.T) {
	type want struct {
		line  int
		key   string
		class Class
		text  string // the whole line as printed
	}
	cases := []struct {
		name, yaml string
		want       []want
	}{
		{"unknown top-level key", "libvirt:\n  uri: qemu:///system\nschedul:\n  rounds: 3\n",
			[]want{{3, "schedul", ClassUnknownKey, "c.yaml:3: schedul: unknown key"}}},
		{"unknown nested key", "schedule:\n  rounds: 3\n  intial: 10ms\n",
			[]want{{3, "schedule.intial", ClassUnknownKey, "c.yaml:3: schedule.intial: unknown key"}}},
		{"bad duration", "schedule:\n  initial: soon\n",
			[]want{{2, "schedule.initial", ClassType, `c.yaml:2: schedule.initial: "soon" is not a duration (such as 50ms or 2s)`}}},
		{"duration as a list", "readiness:\n  timeout: [1s]\n",
			[]want{{2, "readiness.timeout", ClassType, "c.yaml:2: readiness.timeout: expected a duration such as 50ms or 2s, found a list"}}},
		{"empty duration", "readiness:\n  timeout:\n",
			[]want{{2, "readiness.timeout", ClassType, "c.yaml:2: readiness.timeout: no value: expected a duration such as 50ms or 2s"}}},
		{"bad strategy", "strategies:\n  bridge: teleport\n",
			[]want{{2, "strategies.bridge", ClassValue, `c.yaml:2: strategies.bridge: "teleport" is not a strategy (host, qemu, ovs or skip)`}}},
		{"out of range", "schedule:\n  rounds: 0\npacing:\n  frames_per_second: -1\n",
			[]want{{2, "schedule.rounds", ClassValue, "c.yaml:2: schedule.rounds: 0 is outside 1 to 100"},
				{4, "pacing.frames_per_second", ClassValue, "c.yaml:4: pacing.frames_per_second: -1 is outside 1 to 1000000"}}},
		{"wrong type", "schedule:\n  rounds: many\n",
			[]want{{2, "schedule.rounds", ClassType, `c.yaml:2: schedule.rounds: expected a whole number, found "many"`}}},
		{"float for an integer", "schedule:\n  rounds: 5.5\n",
			[]want{{2, "schedule.rounds", ClassType, "c.yaml:2: schedule.rounds: 5.5 is not a whole number"}}},
		{"float for burst", "pacing:\n  burst: 1e3\n",
			[]want{{2, "pacing.burst", ClassType, "c.yaml:2: pacing.burst: 1e3 is not a whole number"}}},
		{"string for a bool", "fdb_repair: yes\n",
			[]want{{1, "fdb_repair", ClassType, `c.yaml:1: fdb_repair: expected true or false, found "yes"`}}},
		{"scalar for a list", "responder:\n  interfaces: br0\n",
			[]want{{2, "responder.interfaces", ClassType, `c.yaml:2: responder.interfaces: expected a list, found "br0"`}}},
		{"mapping for a section", "schedule: 5\n",
			[]want{{1, "schedule", ClassType, `c.yaml:1: schedule: expected a mapping of keys, found "5"`}}},
		{"NaN rate", "pacing:\n  frames_per_second: .nan\n",
			[]want{{2, "pacing.frames_per_second", ClassValue, "c.yaml:2: pacing.frames_per_second: .nan is not a finite number"}}},
		{"infinite rate", "pacing:\n  frames_per_second: .inf\n",
			[]want{{2, "pacing.frames_per_second", ClassValue, "c.yaml:2: pacing.frames_per_second: .inf is not a finite number"}}},
		{"tiny rate", "pacing:\n  frames_per_second: 1e-300\n",
			[]want{{2, "pacing.frames_per_second", ClassValue, "c.yaml:2: pacing.frames_per_second: 1e-300 is outside 1 to 1000000"}}},
		{"metrics port out of range", "metrics:\n  address: 0.0.0.0:99999\n",
			[]want{{2, "metrics.address", ClassValue, `c.yaml:2: metrics.address: "0.0.0.0:99999": port "99999" is not 0 to 65535`}}},
		{"bad interface names", "responder:\n  enabled: true\n  interfaces: [eth0, this-name-is-too-long, a/b]\n",
			[]want{{3, "responder.interfaces", ClassValue, `c.yaml:3: responder.interfaces: "this-name-is-too-long" is longer than 15 bytes, the kernel's limit`},
				{3, "responder.interfaces", ClassValue, `c.yaml:3: responder.interfaces: "a/b" contains '/', ':' or white space`}}},
		{"duplicate key", "schedule:\n  rounds: 3\n  rounds: 4\n",
			[]want{{3, "schedule.rounds", ClassDuplicateKey, "c.yaml:3: schedule.rounds: given twice (first on line 2)"}}},
		{"duplicate section", "schedule:\n  rounds: 3\nschedule:\n  rounds: 4\n",
			[]want{{3, "schedule", ClassDuplicateKey, "c.yaml:3: schedule: given twice (first on line 1)"}}},
		{"duplicate section's own problems", "schedule:\n  rounds: 3\nschedule:\n  rouns: 4\n  initial: soon\n",
			[]want{{3, "schedule", ClassDuplicateKey, "c.yaml:3: schedule: given twice (first on line 1)"},
				{4, "schedule.rouns", ClassUnknownKey, "c.yaml:4: schedule.rouns: unknown key"},
				{5, "schedule.initial", ClassType, `c.yaml:5: schedule.initial: "soon" is not a duration (such as 50ms or 2s)`}}},
		{"second document", "schedule:\n  rounds: 3\n---\nschedule:\n  rounds: 4\n",
			[]want{{3, "", ClassDocuments, "c.yaml:3: a second YAML document: the file must hold one (remove the ---)"}}},
		{"bad send_on", "fdb_repair: true\nhost:\n  send_on: bond0\n",
			[]want{{3, "host.send_on", ClassValue, `c.yaml:3: host.send_on: "bond0" is not uplinks or bridge`}}},
		{"empty send_on", "host:\n  send_on: \"\"\n",
			[]want{{2, "host.send_on", ClassValue, `c.yaml:2: host.send_on: "" is not uplinks or bridge`}}},
		{"negative frame_mark", "host:\n  frame_mark: -1\n",
			[]want{{2, "host.frame_mark", ClassValue, "c.yaml:2: host.frame_mark: -1 is not from 0 to 0xffffffff"}}},
		{"frame_mark over 32 bits", "host:\n  frame_mark: 0x100000000\n",
			[]want{{2, "host.frame_mark", ClassValue, "c.yaml:2: host.frame_mark: 0x100000000 is not from 0 to 0xffffffff"}}},
		{"frame_mark text", "host:\n  frame_mark: rarp\n",
			[]want{{2, "host.frame_mark", ClassType, `c.yaml:2: host.frame_mark: expected a whole number from 0 to 0xffffffff, found "rarp"`}}},
		{"ovs on a bridge", "strategies:\n  bridge: ovs\n",
			[]want{{2, "strategies.bridge", ClassValue, "c.yaml:2: strategies.bridge: ovs applies only to openvswitch ports"}}},
		{"vhostuser host", "strategies:\n  vhostuser: host\n",
			[]want{{2, "strategies.vhostuser", ClassValue, "c.yaml:2: strategies.vhostuser: vhost-user ports have no kernel device: use qemu or skip"}}},
		{"responder without interfaces", "responder:\n  enabled: true\n",
			[]want{{1, "responder.interfaces", ClassValue, "c.yaml:1: responder.interfaces: at least one interface is needed when the responder is enabled"}}},
		{"hold-down too short", "failover:\n  hold_down: 10ms\n",
			[]want{{2, "failover.hold_down", ClassValue, "c.yaml:2: failover.hold_down: 10ms is outside 100ms to 10m0s"}}},
		{"trigger not a bool", "triggers:\n  restore: sometimes\n",
			[]want{{2, "triggers.restore", ClassType, `c.yaml:2: triggers.restore: expected true or false, found "sometimes"`}}},
		{"unknown trigger", "triggers:\n  reboot: true\n",
			[]want{{2, "triggers.reboot", ClassUnknownKey, "c.yaml:2: triggers.reboot: unknown key"}}},
		{"bad address", "metrics:\n  address: localhost\n",
			[]want{{2, "metrics.address", ClassValue, `c.yaml:2: metrics.address: "localhost" is not host:port`}}},
		{"empty address", "metrics:\n  address: \"\"\n",
			[]want{{2, "metrics.address", ClassValue, "c.yaml:2: metrics.address: empty: the agent serves /metrics, /healthz and /readyz on host:port (default 127.0.0.1:9798)"}}},
		{"backoff order", "libvirt:\n  backoff_min: 5s\n  backoff_max: 1s\n",
			[]want{{3, "libvirt.backoff_max", ClassValue, "c.yaml:3: libvirt.backoff_max: must be >= backoff_min (5s)"}}},
		{"bursts without interval", "schedule:\n  bursts: 3\n",
			[]want{{1, "schedule.burst_interval", ClassValue, "c.yaml:1: schedule.burst_interval: must be > 0 when bursts > 1"}}},
		{"ip_announce gateway", "ip_announce:\n  enabled: true\n  gateways: [10.0.0.1, 224.0.0.1]\n",
			[]want{{3, "ip_announce.gateways", ClassValue, `c.yaml:3: ip_announce.gateways: entry 2: "224.0.0.1" is not a unicast IPv4 or IPv6 address`}}},
		{"ip_announce interval under locktime", "ip_announce:\n  enabled: true\n  interval: 50ms\n",
			[]want{{3, "ip_announce.interval", ClassValue, "c.yaml:3: ip_announce.interval: 50ms is outside 1.1s (Linux's neighbour locktime is 1 s) to 1m"}}},
		{"ip_announce count", "ip_announce:\n  enabled: true\n  count: 0\n",
			[]want{{3, "ip_announce.count", ClassValue, "c.yaml:3: ip_announce.count: 0 is outside 1 to 20"}}},
		{"ip_announce carry without learning", "ip_announce:\n  enabled: true\n  carry_learned: true\n",
			[]want{{3, "ip_announce.carry_learned", ClassValue, "c.yaml:3: ip_announce.carry_learned: needs ip_announce.sources.learned: true (nothing is learned to carry)"}}},
		{"ip_announce learned_max_age", "ip_announce:\n  enabled: true\n  sources: {learned: true}\n  learned_max_age: 30s\n",
			[]want{{4, "ip_announce.learned_max_age", ClassValue, "c.yaml:4: ip_announce.learned_max_age: 30s is outside 1m to 168h"}}},
		{"ip_announce carry_every", "ip_announce:\n  enabled: true\n  sources: {learned: true}\n  carry_learned: true\n  carry_every: 100ms\n",
			[]want{{5, "ip_announce.carry_every", ClassValue, "c.yaml:5: ip_announce.carry_every: 100ms is outside 1s to 1h"}}},
		{"negative reconvergence window", "reconvergence:\n  window: -1s\n",
			[]want{{2, "reconvergence.window", ClassValue, "c.yaml:2: reconvergence.window: -1s is outside 0 to 10m0s"}}},
		{"webhook not a URL", "reconvergence:\n  webhook: ftp://x\n",
			[]want{{2, "reconvergence.webhook", ClassValue, `c.yaml:2: reconvergence.webhook: "ftp://x" is not an http:// or https:// URL`}}},
		{"ledger limit of one", "move_ledger:\n  window: 1m\n  limit: 1\n",
			[]want{{3, "move_ledger.limit", ClassValue, "c.yaml:3: move_ledger.limit: must be >= 2 (every landing is one move)"}}},
		{"syntax", "schedule:\n  rounds: [\n",
			[]want{{2, "", ClassSyntax, "c.yaml:2: YAML syntax: did not find expected node content"}}},
		{"top level not a mapping", "- a\n- b\n",
			[]want{{1, "", ClassType, "c.yaml:1: expected a mapping of keys (libvirt:, schedule:, ...), found a list"}}},
		// Four problems of four classes: all reported, in line order.
		{"every problem at once",
			"schedule:\n  rounds: 5.5\n  initial: soon\nlog:\n  levle: debug\npacing:\n  frames_per_second: .nan\nfdb_repair: true\nfdb_repair: false\nmetrics:\n  address: nowhere\n",
			[]want{
				{2, "schedule.rounds", ClassType, "c.yaml:2: schedule.rounds: 5.5 is not a whole number"},
				{3, "schedule.initial", ClassType, `c.yaml:3: schedule.initial: "soon" is not a duration (such as 50ms or 2s)`},
				{5, "log.levle", ClassUnknownKey, "c.yaml:5: log.levle: unknown key"},
				{7, "pacing.frames_per_second", ClassValue, "c.yaml:7: pacing.frames_per_second: .nan is not a finite number"},
				{9, "fdb_repair", ClassDuplicateKey, "c.yaml:9: fdb_repair: given twice (first on line 8)"},
				{11, "metrics.address", ClassValue, `c.yaml:11: metrics.address: "nowhere" is not host:port`},
			}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := Parse("c.yaml", []byte(c.yaml))
			if err == nil {
				t.Fatalf("accepted: %+v", cfg)
			}
			errs := AsErrors(err)
			var got []want
			for _, e := range errs {
				if e.File != "c.yaml" {
					t.Errorf("file %q", e.File)
				}
				got = append(got, want{e.Line, e.Key, e.Class, e.Error()})
			}
			if !reflect.DeepEqual(got, c.want) {
				t.Errorf("got\n%s\nwant\n%s", fmtWants(got), fmtWants(c.want))
			}
			lines := strings.Split(err.Error(), "\n")
			if len(lines) != len(c.want) {
				t.Errorf("printed %d lines, want %d:\n%v", len(lines), len(c.want), err)
			}
		})
	}
}

func fmtWants[T any](ws []T) string {
	var b strings.Builder
	for _, w := range ws {
		fmt.Fprintf(&b, "  %+v\n", w)
	}
	return b.String()
}

// Validate (a config built in code, flags applied) returns the same
// typed errors; a missing file is ClassFile.
func TestValidateAndFileErrorsAreTyped(t *testing.T) {
	c := Default()
	c.Pacing.FramesPerSecond = math.NaN()
	c.Log.Level = "loud"
	errs := AsErrors(c.Validate("command line"))
	if len(errs) != 2 || errs[0].Key != "log.level" || errs[1].Key != "pacing.frames_per_second" || errs[0].File != "command line" {
		t.Fatalf("%v", errs)
	}
	errs = AsErrors(func() error { _, err := Load("/nonexistent/r.yaml"); return err }())
	if len(errs) != 1 || errs[0].Class != ClassFile {
		t.Fatalf("%v", errs)
	}
}

func TestRateFlag(t *testing.T) {
	for _, s := range []string{"NaN", "nan", "Inf", "-Inf", "1e-300", "0", "-5", "2e6", "fast"} {
		var r Rate
		if err := r.Set(s); err == nil {
			t.Errorf("--rate %s accepted as %v", s, r)
		}
	}
	for s, want := range map[string]Rate{"1": 1, "4000": 4000, "1e6": 1e6, "2.5": 2.5} {
		var r Rate
		if err := r.Set(s); err != nil || r != want {
			t.Errorf("--rate %s: %v %v", s, r, err)
		}
	}
}

func TestOverrides(t *testing.T) {
	c, err := Parse("c.yaml", []byte("schedule:\n  rounds: 3\n  bursts: 2\n  burst_interval: 1s\nstrategies:\n  vhostuser: skip\n  bridge: qemu\n"))
	if err != nil {
		t.Fatal(err)
	}
	s := c.Schedule.Announce()
	if s.Rounds != 3 || s.Bursts != 2 || s.BurstInterval != time.Second || s.Initial != 50*time.Millisecond {
		t.Fatalf("%+v", s)
	}
	if !c.UsesQEMU() {
		t.Fatal("bridge: qemu must need the QMP path")
	}
	if noQMP, _ := Parse("c.yaml", []byte("strategies:\n  vhostuser: skip\n")); noQMP.UsesQEMU() {
		t.Fatal("no qemu strategy left, yet UsesQEMU")
	}
	if c.Strategies.VhostUser != StrategySkip || c.Strategies.Bridge != StrategyQEMU {
		t.Fatalf("%+v", c.Strategies)
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load("/nonexistent/rarp.yaml")
	if err == nil || !strings.HasPrefix(err.Error(), "/nonexistent/rarp.yaml: ") {
		t.Fatalf("%v", err)
	}
}

func FuzzParse(f *testing.F) {
	data, _ := os.ReadFile("../../deploy/rarp-announce.yaml")
	f.Add(data)
	f.Add([]byte("schedule:\n  rounds: 0\n"))
	f.Add([]byte("a: [\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Parse("f.yaml", b)
		if err == nil {
			// Whatever is accepted must be valid.
			if errs := c.validate(); len(errs) > 0 {
				t.Fatalf("accepted an invalid config: %v", errs[0])
			}
			return
		}
		if !strings.HasPrefix(err.Error(), "f.yaml") {
			t.Fatalf("error without the file name: %v", err)
		}
	})
}

func TestTriggersDisabled(t *testing.T) {
	if off := Default().Triggers.Disabled(); len(off) != 0 {
		t.Fatalf("defaults disable %v", off)
	}
	c, err := Parse("c.yaml", []byte("triggers:\n  snapshot: false\n  carrier_up: false\n"))
	if err != nil {
		t.Fatal(err)
	}
	off := c.Triggers.Disabled()
	if !off["snapshot"] || !off["carrier_up"] || len(off) != 2 {
		t.Fatalf("disabled %v, want snapshot and carrier_up", off)
	}
	if !c.Triggers.Uplinks() {
		t.Fatal("bond_failover and port_added still need the uplink watcher")
	}
}
