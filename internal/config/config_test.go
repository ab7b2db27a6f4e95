package config

import (
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

func TestErrorsNameFileLineAndKey(t *testing.T) {
	cases := []struct {
		name, yaml string
		want       []string
	}{
		{"unknown top-level key", "libvirt:\n  uri: qemu:///system\nschedul:\n  rounds: 3\n",
			[]string{"c.yaml:3: schedul: unknown key"}},
		{"unknown nested key", "schedule:\n  rounds: 3\n  intial: 10ms\n",
			[]string{"c.yaml:3: schedule.intial: unknown key"}},
		{"bad duration", "schedule:\n  initial: soon\n",
			[]string{`c.yaml:2: "soon" is not a duration`}},
		{"bad strategy", "strategies:\n  bridge: teleport\n",
			[]string{`c.yaml:2: "teleport" is not a strategy`}},
		{"out of range", "schedule:\n  rounds: 0\npacing:\n  frames_per_second: -1\n",
			[]string{"c.yaml:2: schedule.rounds: 0 is outside 1 to 100", "c.yaml:4: pacing.frames_per_second: must be > 0"}},
		{"wrong type", "schedule:\n  rounds: many\n",
			[]string{"c.yaml:2: cannot unmarshal !!str `many` into int"}},
		{"ovs on a bridge", "strategies:\n  bridge: ovs\n",
			[]string{"c.yaml:2: strategies.bridge: ovs applies only to openvswitch ports"}},
		{"vhostuser host", "strategies:\n  vhostuser: host\n",
			[]string{"c.yaml:2: strategies.vhostuser: vhost-user ports have no kernel device"}},
		{"responder without interfaces", "responder:\n  enabled: true\n",
			[]string{"c.yaml:1: responder.interfaces: at least one interface"}},
		{"bad address", "metrics:\n  address: localhost\n",
			[]string{`c.yaml:2: metrics.address: "localhost" is not host:port`}},
		{"backoff order", "libvirt:\n  backoff_min: 5s\n  backoff_max: 1s\n",
			[]string{"c.yaml:3: libvirt.backoff_max: must be >= backoff_min (5s)"}},
		{"bursts without interval", "schedule:\n  bursts: 3\n",
			[]string{"schedule.burst_interval: must be > 0 when bursts > 1"}},
		{"syntax", "schedule:\n  rounds: [\n",
			[]string{"c.yaml:"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse("c.yaml", []byte(c.yaml))
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
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
