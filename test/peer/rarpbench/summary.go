package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"
)

// cmdSummary reads the JSON reports of several runs (rounds of the same
// workloads against two servers) and prints, per table size and load, the
// median of each server's figures and the ratios between them. Medians,
// not means: a round disturbed by another process must not move the
// result (calibration: two identical rarpds agree within ~3% on medians
// of 3, single rounds differ by up to ~10%).
func cmdSummary(args []string) int {
	fs := flag.NewFlagSet("summary", flag.ExitOnError)
	a := fs.String("a", "rarpd", "label of the reference server")
	b := fs.String("b", "ours", "label of the server compared with it")
	fs.Parse(args)
	type key struct {
		table int
		load  string
	}
	type figures struct {
		cpu, rps, p50, p99          []float64
		lost, invalid, sent, valid  int
		unknownSent, unknownReplied int
	}
	data := map[key]map[string]*figures{}
	var keys []key
	for _, path := range fs.Args() {
		raw, err := os.ReadFile(path)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		var rep struct {
			Results []Result `json:"results"`
		}
		if err := json.Unmarshal(raw, &rep); err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", path, err)
			return 1
		}
		for _, r := range rep.Results {
			load := fmt.Sprintf("closed %d", r.Inflight)
			if r.Mode == "open" {
				load = fmt.Sprintf("open %.0f/s", r.TargetRate)
			}
			k := key{r.TableMACs, load}
			if data[k] == nil {
				data[k] = map[string]*figures{}
				keys = append(keys, k)
			}
			f := data[k][r.Label]
			if f == nil {
				f = &figures{}
				data[k][r.Label] = f
			}
			if r.ServerCPU != nil {
				f.cpu = append(f.cpu, r.ServerCPU.UsPerRq)
			}
			f.rps = append(f.rps, r.ReplyRate)
			f.p50 = append(f.p50, r.Latency.P50)
			f.p99 = append(f.p99, r.Latency.P99)
			f.lost += r.Lost
			f.invalid += r.Invalid
			f.sent += r.Sent
			f.valid += r.Valid + r.Warmup
			f.unknownSent += r.UnknownSent
			f.unknownReplied += r.UnknownReplied
		}
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].table != keys[j].table {
			return keys[i].table < keys[j].table
		}
		return keys[i].load < keys[j].load
	})
	fmt.Printf("%-8s %-10s %-14s %7s %13s %12s %10s %10s  %s\n", "table", "load", "server", "rounds", "CPU us/reply", "replies/s", "p50 us", "p99 us", "checks (lost, invalid, unknown MACs answered)")
	line := strings.Repeat("-", 120)
	fmt.Println(line)
	for _, k := range keys {
		for _, label := range []string{*a, *b} {
			f := data[k][label]
			if f == nil {
				continue
			}
			fmt.Printf("%-8s %-10s %-14s %7d %13s %12.0f %10.1f %10.1f  lost %d/%d, invalid %d, unknown %d/%d\n",
				tableName(k.table), k.load, label, len(f.rps), fmtOr(median(f.cpu), "%.2f"), median(f.rps), median(f.p50), median(f.p99),
				f.lost, f.sent, f.invalid, f.unknownReplied, f.unknownSent)
		}
		fa, fb := data[k][*a], data[k][*b]
		if fa != nil && fb != nil {
			fmt.Printf("%-8s %-10s %-14s %7s %13s %12s %10s %10s\n", "", "", "ratio", "",
				ratio(median(fa.cpu), median(fb.cpu))+" less", ratio(median(fb.rps), median(fa.rps))+" more",
				ratio(median(fa.p50), median(fb.p50))+" lower", ratio(median(fa.p99), median(fb.p99))+" lower")
		}
		fmt.Println(line)
	}
	return 0
}

func tableName(n int) string {
	switch {
	case n >= 1000000 && n%1000000 == 0:
		return fmt.Sprintf("%dM", n/1000000)
	case n >= 1000 && n%1000 == 0:
		return fmt.Sprintf("%dk", n/1000)
	}
	return fmt.Sprint(n)
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func fmtOr(v float64, f string) string {
	if v == 0 {
		return "-"
	}
	return fmt.Sprintf(f, v)
}

// ratio is x/y as "12.3x", or "-" when either is missing.
func ratio(x, y float64) string {
	if x == 0 || y == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1fx", x/y)
}
