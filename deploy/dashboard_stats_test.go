package deploy

import (
	"fmt"
	"github.com/rarp-announce/rarp-announce/internal/netnstest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestDashboardStatsTurnRed evaluates the overview's health stats with
// promtool on a fleet of five agents where three went down and one more
// lost libvirt: "Agents down" must say 3 and "Agents not connected to
// libvirt" 4 (both red from 1), where sum(up) and
// sum(rarp_announce_libvirt_connected) said 2 and 1 and stayed green. With
// every agent up and connected both say 0, a sample (not "No data").
func TestDashboardStatsTurnRed(t *testing.T) {
	netnstest.RequireTools(t, "promtool")
	d := loadDashboard(t)
	exprs := map[string]string{}
	for _, p := range d.allPanels() {
		if p.Title == "Agents down" || p.Title == "Agents not connected to libvirt" {
			if len(p.Targets) != 1 {
				t.Fatalf("%s: %d targets", p.Title, len(p.Targets))
			}
			e, err := expandGrafana(p.Targets[0].Expr)
			if err != nil {
				t.Fatal(err)
			}
			exprs[p.Title] = e
		}
	}
	if len(exprs) != 2 {
		t.Fatalf("overview stats not found: %v", exprs)
	}
	var series strings.Builder
	for i := 1; i <= 5; i++ {
		up, connected := "1x20", "1x20"
		switch i {
		case 2: // libvirtd stopped at 5m, the agent is fine
			connected = "1x4 0x15"
		case 3, 4, 5: // the agent died at 5m: up 0, its series go stale
			up, connected = "1x4 0x15", "1x4 stale"
		}
		fmt.Fprintf(&series, "      - series: 'up{job=\"rarp-announce\", instance=\"hv%d:9798\"}'\n        values: '%s'\n", i, up)
		fmt.Fprintf(&series, "      - series: 'rarp_announce_libvirt_connected{job=\"rarp-announce\", instance=\"hv%d:9798\"}'\n        values: '%s'\n", i, connected)
	}
	check := func(expr string, at string, want int) string {
		return fmt.Sprintf("      - expr: %q\n        eval_time: %s\n        exp_samples:\n          - labels: '{}'\n            value: %d\n", expr, at, want)
	}
	tests := "rule_files: [empty.yaml]\nevaluation_interval: 1m\ntests:\n  - interval: 1m\n    input_series:\n" + series.String() +
		"    promql_expr_test:\n" +
		check(exprs["Agents down"], "3m", 0) + check(exprs["Agents not connected to libvirt"], "3m", 0) +
		check(exprs["Agents down"], "10m", 3) + check(exprs["Agents not connected to libvirt"], "10m", 4)
	dir := t.TempDir()
	for name, text := range map[string]string{"empty.yaml": "groups: []\n", "stats.test.yaml": tests} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command("promtool", "test", "rules", "stats.test.yaml")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "SUCCESS") {
		t.Errorf("promtool test rules: %v\n%s\n%s", err, out, tests)
	}
}
