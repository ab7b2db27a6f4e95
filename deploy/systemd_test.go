// Package deploy holds no code: its tests check the deployment files in
// this directory (systemd unit, packages, container recipes, manifests).
package deploy

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/rarp-announce/rarp-announce/internal/netnstest"
)

const (
	unitPath    = "systemd/rarp-announce.service"
	dropInPath  = "systemd/no-fdb-repair.conf"
	unitBinary  = "/usr/bin/rarp-announce"
	maxExposure = 2.0 // the goal of issue 6
)

// unitFile is a parsed systemd unit: section -> key -> values in order,
// with systemd's rule that an empty assignment resets the list.
type unitFile map[string]map[string][]string

func parseUnit(t *testing.T, texts ...string) unitFile {
	t.Helper()
	u := unitFile{}
	for _, text := range texts {
		section := ""
		sc := bufio.NewScanner(strings.NewReader(text))
		for n := 1; sc.Scan(); n++ {
			line := strings.TrimSpace(sc.Text())
			switch {
			case line == "" || line[0] == '#' || line[0] == ';':
			case line[0] == '[' && line[len(line)-1] == ']':
				section = line[1 : len(line)-1]
				if u[section] == nil {
					u[section] = map[string][]string{}
				}
			default:
				k, v, ok := strings.Cut(line, "=")
				if !ok || section == "" {
					t.Fatalf("line %d: not a key=value in a section: %q", n, line)
				}
				k, v = strings.TrimSpace(k), strings.TrimSpace(v)
				if v == "" {
					u[section][k] = nil
					continue
				}
				u[section][k] = append(u[section][k], v)
			}
		}
	}
	return u
}

// words returns the space-separated words of every assignment of key.
func (u unitFile) words(section, key string) []string {
	var w []string
	for _, v := range u[section][key] {
		w = append(w, strings.Fields(v)...)
	}
	slices.Sort(w)
	return w
}

func (u unitFile) last(section, key string) string {
	v := u[section][key]
	if len(v) == 0 {
		return ""
	}
	return v[len(v)-1]
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestSystemdUnitDirectives checks the settings the agent's least-privilege
// design depends on, so an edit that weakens them fails here and not only
// in the exposure score.
func TestSystemdUnitDirectives(t *testing.T) {
	u := parseUnit(t, readFile(t, unitPath))
	want := map[string]string{
		"User":                    "rarp-announce",
		"Group":                   "rarp-announce",
		"NoNewPrivileges":         "yes",
		"ProtectSystem":           "strict",
		"ProtectHome":             "yes",
		"PrivateTmp":              "yes",
		"PrivateDevices":          "yes",
		"ProtectKernelTunables":   "yes",
		"ProtectKernelModules":    "yes",
		"ProtectKernelLogs":       "yes",
		"ProtectControlGroups":    "yes",
		"ProtectClock":            "yes",
		"ProtectHostname":         "yes",
		"ProtectProc":             "invisible",
		"ProcSubset":              "pid",
		"RestrictNamespaces":      "yes",
		"RestrictRealtime":        "yes",
		"RestrictSUIDSGID":        "yes",
		"LockPersonality":         "yes",
		"MemoryDenyWriteExecute":  "yes",
		"SystemCallArchitectures": "native",
		"ExecReload":              "/bin/kill -HUP $MAINPID",
	}
	for k, v := range want {
		if got := u.last("Service", k); got != v {
			t.Errorf("%s=%q, want %q", k, got, v)
		}
	}
	caps := []string{"CAP_NET_ADMIN", "CAP_NET_RAW"}
	for _, k := range []string{"AmbientCapabilities", "CapabilityBoundingSet"} {
		if got := u.words("Service", k); !slices.Equal(got, caps) {
			t.Errorf("%s=%v, want exactly %v", k, got, caps)
		}
	}
	fams := []string{"AF_INET", "AF_INET6", "AF_NETLINK", "AF_PACKET", "AF_UNIX"}
	if got := u.words("Service", "RestrictAddressFamilies"); !slices.Equal(got, fams) {
		t.Errorf("RestrictAddressFamilies=%v, want %v", got, fams)
	}
	// The agent must see the host's interfaces and hold its capabilities in
	// the host's user namespace.
	for _, k := range []string{"PrivateNetwork", "PrivateUsers", "DynamicUser", "NetworkNamespacePath"} {
		if v := u.last("Service", k); v != "" && v != "no" {
			t.Errorf("%s=%s would cut the agent off the host's network", k, v)
		}
	}
	exec := strings.Fields(u.last("Service", "ExecStart"))
	if len(exec) < 2 || exec[0] != unitBinary || exec[1] != "run" {
		t.Errorf("ExecStart=%v, want %s run ...", exec, unitBinary)
	}

	// The drop-in documented for FDB repair off leaves CAP_NET_RAW alone.
	d := parseUnit(t, readFile(t, unitPath), readFile(t, dropInPath))
	for _, k := range []string{"AmbientCapabilities", "CapabilityBoundingSet"} {
		if got := d.words("Service", k); !slices.Equal(got, []string{"CAP_NET_RAW"}) {
			t.Errorf("with %s: %s=%v, want [CAP_NET_RAW]", dropInPath, k, got)
		}
	}
}

// verifyUnit runs systemd-analyze verify on a copy of the unit whose
// ExecStart points at an executable stub (the real binary is not installed
// where the unit expects it until the package is: the package test verifies
// the installed unit as it is).
func verifyUnit(t *testing.T, text string) {
	t.Helper()
	dir := t.TempDir()
	stub := filepath.Join(dir, "rarp-announce")
	if err := os.WriteFile(stub, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	unit := filepath.Join(dir, "rarp-announce.service")
	text = strings.ReplaceAll(text, unitBinary, stub)
	if err := os.WriteFile(unit, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("systemd-analyze", "verify", "--man=no", unit).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		// verify exits 0 on unknown keys but prints them: both count.
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}

func TestSystemdUnitVerifies(t *testing.T) {
	netnstest.RequireTools(t, "systemd-analyze")
	verifyUnit(t, readFile(t, unitPath))
	// The drop-in has the same meaning as the [Service] section appended.
	verifyUnit(t, readFile(t, unitPath)+"\n"+readFile(t, dropInPath))
}

var exposureRE = regexp.MustCompile(`Overall exposure level for \S+: ([0-9]+\.[0-9]+)`)

// exposure returns the overall exposure of a unit text with
// systemd-analyze security --offline, and the per-setting results.
func exposure(t *testing.T, text string) (float64, map[string]bool) {
	t.Helper()
	unit := filepath.Join(t.TempDir(), "rarp-announce.service")
	if err := os.WriteFile(unit, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("systemd-analyze", "security", "--no-pager", "--offline=true", unit).CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-analyze security: %v\n%s", err, out)
	}
	m := exposureRE.FindSubmatch(out)
	if m == nil {
		t.Fatalf("no overall exposure in:\n%s", out)
	}
	score, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil {
		t.Fatal(err)
	}
	js, err := exec.Command("systemd-analyze", "security", "--no-pager", "--offline=true", "--json=short", unit).Output()
	if err != nil {
		t.Fatalf("systemd-analyze security --json: %v", err)
	}
	var checks []struct {
		Set  bool   `json:"set"`
		Name string `json:"name"`
	}
	if err := json.Unmarshal(js, &checks); err != nil {
		t.Fatalf("security JSON: %v\n%s", err, js)
	}
	set := map[string]bool{}
	for _, c := range checks {
		set[c.Name] = c.Set
	}
	return score, set
}

func TestSystemdUnitExposure(t *testing.T) {
	netnstest.RequireTools(t, "systemd-analyze")
	score, set := exposure(t, readFile(t, unitPath))
	t.Logf("systemd-analyze security --offline=true %s: overall exposure %.1f", unitPath, score)
	if score > maxExposure {
		t.Errorf("exposure %.1f > %.1f", score, maxExposure)
	}
	for _, name := range []string{"ProtectSystem=", "NoNewPrivileges=", "User=/DynamicUser=",
		"CapabilityBoundingSet=~CAP_SYS_ADMIN", "RestrictAddressFamilies=~…", "SystemCallFilter=~@privileged"} {
		if ok, found := set[name]; !found || !ok {
			t.Errorf("security check %q: found %v, passed %v", name, found, ok)
		}
	}
	if set["CapabilityBoundingSet=~CAP_NET_ADMIN"] {
		t.Error("the unit keeps CAP_NET_ADMIN for FDB repair, yet the check says it has none")
	}

	dropped, set := exposure(t, readFile(t, unitPath)+"\n"+readFile(t, dropInPath))
	t.Logf("with %s: overall exposure %.1f", dropInPath, dropped)
	if !set["CapabilityBoundingSet=~CAP_NET_ADMIN"] {
		t.Errorf("with %s the unit still has CAP_NET_ADMIN", dropInPath)
	}
	if dropped > score {
		t.Errorf("dropping CAP_NET_ADMIN raised the exposure: %.1f > %.1f", dropped, score)
	}
}

// The drop-ins shipped next to the unit, applied in the order systemd
// reads them (alphabetical), and the capabilities each combination leaves:
// the lab's setpriv runs (test/lab/lab-privileges.sh) use the same sets.
var dropInSets = []struct {
	files []string
	caps  []string
	user  string
}{
	{nil, []string{"CAP_NET_ADMIN", "CAP_NET_RAW"}, "rarp-announce"},
	{[]string{"systemd/no-fdb-repair.conf"}, []string{"CAP_NET_RAW"}, "rarp-announce"},
	{[]string{"systemd/ovs.conf"}, []string{"CAP_NET_ADMIN", "CAP_NET_RAW"}, "root"},
	{[]string{"systemd/no-fdb-repair.conf", "systemd/ovs.conf"}, []string{"CAP_NET_RAW"}, "root"},
}

func withDropIns(t *testing.T, files []string) []string {
	texts := []string{readFile(t, unitPath)}
	for _, f := range files {
		texts = append(texts, readFile(t, f))
	}
	return texts
}

// Each drop-in combination keeps the exposure at most 2.0, verifies, and
// grants exactly the capabilities and user documented for it.
func TestSystemdDropIns(t *testing.T) {
	netnstest.RequireTools(t, "systemd-analyze")
	for _, ds := range dropInSets {
		name := strings.Join(ds.files, "+")
		if name == "" {
			name = "unit alone"
		}
		t.Run(name, func(t *testing.T) {
			texts := withDropIns(t, ds.files)
			u := parseUnit(t, texts...)
			for _, k := range []string{"AmbientCapabilities", "CapabilityBoundingSet"} {
				if got := u.words("Service", k); !slices.Equal(got, ds.caps) {
					t.Errorf("%s=%v, want %v", k, got, ds.caps)
				}
			}
			if got := u.last("Service", "User"); got != ds.user {
				t.Errorf("User=%q, want %q", got, ds.user)
			}
			if u.last("Service", "SecureBits") != "noroot-locked" || u.last("Service", "NoNewPrivileges") != "yes" {
				t.Error("root must not regain capabilities at exec: SecureBits=noroot-locked and NoNewPrivileges=yes")
			}
			all := strings.Join(texts, "\n")
			verifyUnit(t, all)
			score, _ := exposure(t, all)
			t.Logf("overall exposure %.1f", score)
			if score > maxExposure {
				t.Errorf("exposure %.1f > %.1f", score, maxExposure)
			}
		})
	}
}

// Type=notify with a watchdog, ordered after libvirt's sockets (its
// daemons are socket-activated) and Open vSwitch; the user is in no group
// unless the libvirt opt-in is installed.
func TestSystemdNotifyOrderingAndGroups(t *testing.T) {
	u := parseUnit(t, readFile(t, unitPath))
	if u.last("Service", "Type") != "notify" || u.last("Service", "NotifyAccess") != "main" || u.last("Service", "WatchdogSec") == "" {
		t.Errorf("Type=%q NotifyAccess=%q WatchdogSec=%q", u.last("Service", "Type"), u.last("Service", "NotifyAccess"), u.last("Service", "WatchdogSec"))
	}
	after := u.words("Unit", "After")
	for _, want := range []string{"virtqemud.socket", "virtqemud-ro.socket", "libvirtd.socket", "libvirtd-ro.socket", "openvswitch-switch.service", "ovs-vswitchd.service"} {
		if !slices.Contains(after, want) {
			t.Errorf("After= lacks %s: %v", want, after)
		}
	}
	for _, w := range append(u.words("Unit", "Requires"), u.words("Unit", "Wants")...) {
		if strings.Contains(w, "libvirt") || strings.Contains(w, "virtqemud") || strings.Contains(w, "openvswitch") {
			t.Errorf("the unit pulls in %s; ordering only is wanted", w)
		}
	}
	if strings.Contains(readFile(t, "systemd/rarp-announce.sysusers"), "libvirt\n") {
		t.Error("the packaged sysusers file puts the user in the libvirt group (root-equivalent)")
	}
	if !strings.Contains(readFile(t, "systemd/rarp-announce-libvirt.sysusers"), "\nm rarp-announce libvirt\n") {
		t.Error("the libvirt opt-in does not add the group")
	}
	if strings.Contains(readFile(t, "packaging/postinstall.sh"), "--groups libvirt") {
		t.Error("postinstall puts the user in the libvirt group")
	}
}
