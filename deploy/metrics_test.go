package deploy

import (
	"bytes"
	"flag"
	"fmt"
	"github.com/rarp-announce/rarp-announce/internal/netnstest"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
)

var update = flag.Bool("update", false, "rewrite the metrics reference in README.md from the binary's scrape")

// promtoolCheckMetrics runs "promtool check metrics" on a scrape: it
// lints names, units, suffixes and help texts. Any complaint fails.
func promtoolCheckMetrics(t *testing.T, what string, scrape []byte) {
	t.Helper()
	cmd := exec.Command("promtool", "check", "metrics")
	cmd.Stdin = bytes.NewReader(scrape)
	out, err := cmd.CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("promtool check metrics on %s's scrape: %v\n%s", what, err, out)
	}
}

// TestMetricsPromtool passes the scrapes of "rarp-announce run" and
// "rarp-announce serve" through promtool's linter.
func TestMetricsPromtool(t *testing.T) {
	netnstest.RequireTools(t, "promtool")
	s := exposed(t)
	promtoolCheckMetrics(t, "rarp-announce run", s.run)
	promtoolCheckMetrics(t, "rarp-announce serve", s.serve)
	// The check must be able to fail: a counter without _total and no
	// help is what promtool is there to catch.
	cmd := exec.Command("promtool", "check", "metrics")
	cmd.Stdin = strings.NewReader("# TYPE rarp_announce_bad counter\nrarp_announce_bad 1\n")
	if out, err := cmd.CombinedOutput(); err == nil && len(bytes.TrimSpace(out)) == 0 {
		t.Error("promtool check metrics accepts a counter without _total and help: the check above proves nothing")
	}
}

// units are the base units a name may end in (before _total); the
// others are what a name must not use.
var (
	baseUnits   = []string{"seconds", "bytes", "ratio"}
	nonBaseUnit = regexp.MustCompile(`_(milliseconds|microseconds|nanoseconds|ms|us|ns|minutes|hours|days|kilobytes|megabytes|kb|mb|percent)(_|$)`)
)

// styleProblems lists what is wrong with one family's name and help by
// the project's rules (Prometheus naming practice).
func styleProblems(f family) []string {
	var p []string
	if !regexp.MustCompile(`^rarp_announce_[a-z][a-z0-9_]*[a-z0-9]$`).MatchString(f.name) || strings.Contains(f.name, "__") {
		p = append(p, "not rarp_announce_ followed by snake_case")
	}
	if strings.TrimSpace(f.help) == "" {
		p = append(p, "no help text")
	} else if len(f.help) < 20 {
		p = append(p, fmt.Sprintf("help %q says too little", f.help))
	}
	if f.help != strings.TrimSpace(f.help) {
		p = append(p, "help has leading or trailing space")
	}
	switch f.typ {
	case "counter":
		if !strings.HasSuffix(f.name, "_total") {
			p = append(p, "a counter must end in _total")
		}
	default:
		if strings.HasSuffix(f.name, "_total") {
			p = append(p, "only counters end in _total")
		}
	}
	for _, s := range []string{"_count", "_sum", "_bucket"} {
		if strings.HasSuffix(f.name, s) {
			p = append(p, "name ends in "+s+", which is a histogram's series")
		}
	}
	if f.typ == "histogram" || f.typ == "summary" {
		unit := false
		for _, u := range baseUnits {
			unit = unit || strings.HasSuffix(f.name, "_"+u)
		}
		if !unit {
			p = append(p, "a histogram must end in its base unit (_seconds, _bytes)")
		}
	}
	if nonBaseUnit.MatchString(f.name) {
		p = append(p, "not a base unit (use _seconds, _bytes, _ratio)")
	}
	// A unit is a suffix: name_seconds or name_seconds_total, never
	// name_seconds_something.
	base := strings.TrimSuffix(f.name, "_total")
	for _, u := range baseUnits {
		if i := strings.Index(base, "_"+u+"_"); i >= 0 {
			p = append(p, "unit "+u+" is not the suffix")
		}
	}
	if strings.HasSuffix(f.name, "_info") && (f.typ != "gauge" || len(f.labels) == 0) {
		p = append(p, "an _info metric is a gauge with labels")
	}
	for _, l := range f.labels {
		if !regexp.MustCompile(`^[a-z][a-z0-9_]*$`).MatchString(l) {
			p = append(p, "label "+l+" is not snake_case")
		}
	}
	return p
}

func TestMetricStyleRules(t *testing.T) {
	good := []family{
		{name: "rarp_announce_frames_sent_total", typ: "counter", help: "RARP frames written to an interface."},
		{name: "rarp_announce_pacing_wait_seconds_total", typ: "counter", help: "Total time frames waited for pacing."},
		{name: "rarp_announce_first_frame_lag_seconds", typ: "histogram", help: "Delay from the event to the first frame."},
		{name: "rarp_announce_build_info", typ: "gauge", help: "Always 1; the labels name the build.", labels: []string{"version"}},
		{name: "rarp_announce_table_last_load_timestamp_seconds", typ: "gauge", help: "Unix time of the last successful load."},
	}
	for _, f := range good {
		if p := styleProblems(f); len(p) > 0 {
			t.Errorf("%s: %v", f.name, p)
		}
	}
	bad := []family{
		{name: "rarp_announce_frames_sent", typ: "counter", help: "RARP frames written to an interface."},
		{name: "rarp_announce_running_total", typ: "gauge", help: "Announces in progress right now."},
		{name: "rarp_announce_lag_ms", typ: "histogram", help: "Delay from the event to the first frame."},
		{name: "rarp_announce_lag", typ: "histogram", help: "Delay from the event to the first frame."},
		{name: "rarp_announce_wait_seconds_count_total", typ: "counter", help: "Total time frames waited for pacing."},
		{name: "rarp_announce_frames_total", typ: "counter", help: ""},
		{name: "rarp_announce_frames_total", typ: "counter", help: "Frames."},
		{name: "rarp_announce_Frames_total", typ: "counter", help: "RARP frames written to an interface."},
		{name: "other_frames_total", typ: "counter", help: "RARP frames written to an interface."},
		{name: "rarp_announce_build_info", typ: "gauge", help: "Always 1; the labels name the build."},
		{name: "rarp_announce_frames_total", typ: "counter", help: "RARP frames written to an interface.", labels: []string{"Reason"}},
	}
	for _, f := range bad {
		if p := styleProblems(f); len(p) == 0 {
			t.Errorf("%s (%s, help %q, labels %v) passes the style rules", f.name, f.typ, f.help, f.labels)
		}
	}
}

// TestMetricsStyle checks every exposed rarp_announce_* family against
// the naming rules, and that build_info is there and 1.
func TestMetricsStyle(t *testing.T) {
	s := exposed(t)
	fams := s.families()
	if len(fams) < 30 {
		t.Fatalf("only %d rarp_announce_* families exposed", len(fams))
	}
	for _, f := range fams {
		for _, p := range styleProblems(f) {
			t.Errorf("%s: %s", f.name, p)
		}
	}
	for cmd, fams := range map[string]map[string]*dto.MetricFamily{"run": s.runFams, "serve": s.serveFams} {
		if v, ok := value(fams, "rarp_announce_build_info", nil); !ok || v != 1 {
			t.Errorf("%s: rarp_announce_build_info = %v (exposed %v), want 1", cmd, v, ok)
		}
		if bi := fams["rarp_announce_build_info"]; bi != nil {
			if got := labelNames(bi); strings.Join(got, ",") != "goversion,revision,version" {
				t.Errorf("%s: rarp_announce_build_info labels = %v", cmd, got)
			}
		}
		// The Go and process collectors are there for the usual dashboards.
		for _, name := range []string{"go_goroutines", "process_resident_memory_bytes"} {
			if fams[name] == nil {
				t.Errorf("%s does not expose %s", cmd, name)
			}
		}
	}
	for _, mf := range s.runFams {
		if mf.GetType() == dto.MetricType_UNTYPED {
			t.Errorf("%s is untyped", mf.GetName())
		}
	}
}

const (
	readmePath = "../README.md"
	refStart   = "<!-- metrics-reference:start -->"
	refEnd     = "<!-- metrics-reference:end -->"
	refCommand = "go test ./deploy -run TestMetricsReference -update"
)

// reference renders the README's metrics section from the families.
func reference(fams []family) string {
	var b strings.Builder
	b.WriteString(refStart + "\n")
	b.WriteString("<!-- Generated from a scrape of the binary by deploy/metrics_test.go; do not edit by hand. -->\n\n")
	b.WriteString(wrap("Every `rarp_announce_*` metric; `run` is the agent, `serve` the standalone responder. Both also "+
		"export the Go runtime's `go_*` and the process's `process_*` metrics. Most labelled counters start at 0 for "+
		"every value their help lists, so a dashboard sees zeros, not gaps. Some families exist only when their part "+
		"is on: "+conditionalDoc+". The Grafana dashboard and the alert rules expect the scrape job `rarp-announce` "+
		"(see [docs/deploy.md](docs/deploy.md#monitoring)). A test (`TestMetricsReference` in `deploy/`) fails when "+
		"this table and the binary disagree; regenerate it, as root (the agent runs in network namespaces), with:", 100) +
		"\n\n```sh\n" + refCommand + "\n```\n\n")
	b.WriteString("| metric | type | labels | in | meaning |\n|---|---|---|---|---|\n")
	for _, f := range fams {
		labels := make([]string, len(f.labels))
		for i, l := range f.labels {
			labels[i] = "`" + l + "`"
		}
		help := strings.ReplaceAll(f.help, "|", "\\|")
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s | %s |\n", f.name, f.typ, strings.Join(labels, ", "), strings.Join(f.commands, ", "), help)
	}
	b.WriteString(refEnd)
	return b.String()
}

// conditional are the families the agent exposes only with an optional
// part on, or after the first event; conditionalDoc says so in README.
var conditional = []string{
	"rarp_announce_fdb_entries_removed_total", "rarp_announce_fdb_repair_failures_total", "rarp_announce_fdb_repairs_total",
	"rarp_announce_ip_addresses_skipped_total", "rarp_announce_ip_addresses_total", "rarp_announce_ip_frames_total",
	"rarp_announce_ip_guest_announces_total", "rarp_announce_ip_metadata_writes_total",
	"rarp_announce_ovn_readiness_total", "rarp_announce_ovn_readiness_wait_seconds", "rarp_announce_ovn_reinstalls_total",
	"rarp_announce_ovs_failures_total",
	"rarp_announce_responder_malformed_frames_total", "rarp_announce_responder_offlink_refusals_total",
	"rarp_announce_responder_replies_total", "rarp_announce_responder_requests_total",
	"rarp_announce_responder_ring_drops_total", "rarp_announce_responder_send_errors_total",
	"rarp_announce_responder_unbootable_refusals_total", "rarp_announce_responder_unknown_requests_total",
	"rarp_announce_table_entries", "rarp_announce_table_last_load_timestamp_seconds",
	"rarp_announce_table_load_seconds", "rarp_announce_table_reloads_total",
}

const conditionalDoc = "`rarp_announce_fdb_*` with `fdb_repair: true`, `rarp_announce_ovs_failures_total` and `rarp_announce_ovn_*` when a NIC kind " +
	"uses the `ovs` strategy, `rarp_announce_responder_*` (one series per interface) and `rarp_announce_table_*` with " +
	"`responder.enabled`; `rarp_announce_ip_*` with `ip_announce.enabled`"

// wrap breaks text into lines of at most width characters.
func wrap(text string, width int) string {
	var b strings.Builder
	n := 0
	for _, w := range strings.Fields(text) {
		switch {
		case n == 0:
		case n+1+len(w) > width:
			b.WriteByte('\n')
			n = 0
		default:
			b.WriteByte(' ')
			n++
		}
		b.WriteString(w)
		n += len(w)
	}
	return b.String()
}

// TestMetricsConditional checks what the reference says is conditional:
// the agent with FDB repair, the ovs strategy and the responder off, and
// no event yet, exposes every family but those.
func TestMetricsConditional(t *testing.T) {
	s := exposed(t)
	var missing []string
	for name := range s.runFams {
		if strings.HasPrefix(name, "rarp_announce_") && s.minimalFams[name] == nil {
			missing = append(missing, name)
		}
	}
	for name := range s.minimalFams {
		if s.runFams[name] == nil {
			t.Errorf("the minimal agent exposes %s, the full one does not", name)
		}
	}
	sort.Strings(missing)
	if !slices.Equal(missing, conditional) {
		t.Errorf("families only the full agent exposes:\n %v\nthe reference says:\n %v", missing, conditional)
	}
}

// TestMetricsReference checks that the README's metrics reference is the
// binary's: every exposed rarp_announce_* family with its type, labels,
// commands and help, and nothing else. With -update it rewrites it.
func TestMetricsReference(t *testing.T) {
	s := exposed(t)
	readme := readFile(t, readmePath)
	i, j := strings.Index(readme, refStart), strings.Index(readme, refEnd)
	if i < 0 || j < i {
		t.Fatalf("%s lacks the markers %s ... %s", readmePath, refStart, refEnd)
	}
	want := reference(s.families())
	got := readme[i : j+len(refEnd)]
	if got == want {
		return
	}
	if *update {
		if err := os.WriteFile(readmePath, []byte(readme[:i]+want+readme[j+len(refEnd):]), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("rewrote the metrics reference in %s", readmePath)
		return
	}
	rows := func(section string) map[string]string {
		m := map[string]string{}
		for _, line := range strings.Split(section, "\n") {
			if strings.HasPrefix(line, "| `") {
				name := strings.Trim(strings.SplitN(line, "|", 3)[1], " `")
				m[name] = line
			}
		}
		return m
	}
	have, need := rows(got), rows(want)
	for name, line := range need {
		switch h, ok := have[name]; {
		case !ok:
			t.Errorf("README lacks %s:\n%s", name, line)
		case h != line:
			t.Errorf("README's row for %s is out of date:\n have %s\n want %s", name, h, line)
		}
	}
	for name := range have {
		if _, ok := need[name]; !ok {
			t.Errorf("README lists %s, which the binary does not expose", name)
		}
	}
	t.Errorf("the metrics reference in README.md is not the binary's; regenerate it with:\n  %s", refCommand)
}
