package deploy

import (
	"fmt"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// PromQL names that are not metrics: aggregation operators, keywords and
// set operators. Functions are recognised by the parenthesis after them.
var promqlWords = map[string]bool{
	"sum": true, "min": true, "max": true, "avg": true, "group": true, "stddev": true, "stdvar": true,
	"count": true, "count_values": true, "bottomk": true, "topk": true, "quantile": true, "limitk": true, "limit_ratio": true,
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
	"and": true, "or": true, "unless": true, "atan2": true, "bool": true, "offset": true,
	"inf": true, "nan": true,
}

// Words followed by a parenthesised label list.
var labelListWords = map[string]bool{"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true}

// metricNames returns the metric names a PromQL expression selects, sorted
// and unique: bare identifiers that are not functions, aggregations or
// keywords, with whatever label matchers follow them. Strings, label
// matchers, label lists (by, without, on, ignoring, group_left/right),
// ranges and numbers are skipped. It is not a PromQL parser: promtool
// checks that the expressions parse; this only finds what they select.
func metricNames(expr string) ([]string, error) {
	set := map[string]bool{}
	i, n := 0, len(expr)
	skipString := func() error {
		q := expr[i]
		for i++; i < n; i++ {
			switch {
			case expr[i] == '\\' && q != '`':
				i++
			case expr[i] == q:
				i++
				return nil
			}
		}
		return fmt.Errorf("unterminated string in %q", expr)
	}
	// skipGroup skips from an opening bracket to its closing one, strings
	// included.
	skipGroup := func(open, close byte) error {
		depth := 0
		for i < n {
			switch c := expr[i]; {
			case c == '"' || c == '\'' || c == '`':
				if err := skipString(); err != nil {
					return err
				}
				continue
			case c == open:
				depth++
			case c == close:
				depth--
				if depth == 0 {
					i++
					return nil
				}
			}
			i++
		}
		return fmt.Errorf("unbalanced %c%c in %q", open, close, expr)
	}
	isIdentStart := func(c byte) bool { return c == '_' || c == ':' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
	isIdent := func(c byte) bool { return isIdentStart(c) || c >= '0' && c <= '9' }
	nextNonSpace := func(j int) int {
		for j < n && (expr[j] == ' ' || expr[j] == '\t' || expr[j] == '\n' || expr[j] == '\r') {
			j++
		}
		return j
	}
	for i < n {
		c := expr[i]
		switch {
		case c == '"' || c == '\'' || c == '`':
			if err := skipString(); err != nil {
				return nil, err
			}
		case c == '{':
			if err := skipGroup('{', '}'); err != nil {
				return nil, err
			}
		case c == '[':
			if err := skipGroup('[', ']'); err != nil {
				return nil, err
			}
		case c >= '0' && c <= '9' || c == '.' && i+1 < n && expr[i+1] >= '0' && expr[i+1] <= '9':
			// numbers, 1e3, 0x1f, durations (5m, 1h30m)
			for i < n && (isIdent(expr[i]) || expr[i] == '.') {
				i++
			}
		case c == '#': // comment to the end of the line
			for i < n && expr[i] != '\n' {
				i++
			}
		case c == '$':
			return nil, fmt.Errorf("unexpanded variable at %q", expr[i:])
		case isIdentStart(c):
			j := i
			for j < n && isIdent(expr[j]) {
				j++
			}
			word := expr[i:j]
			k := nextNonSpace(j)
			lower := strings.ToLower(word)
			switch {
			case labelListWords[lower]:
				i = k
				if i < n && expr[i] == '(' {
					if err := skipGroup('(', ')'); err != nil {
						return nil, err
					}
				}
				continue
			case promqlWords[lower]:
			case k < n && expr[k] == '(':
				// a function call
			default:
				set[word] = true
			}
			i = j
		default:
			i++
		}
	}
	out := make([]string, 0, len(set))
	for w := range set {
		out = append(out, w)
	}
	sort.Strings(out)
	return out, nil
}

func TestMetricNames(t *testing.T) {
	cases := []struct {
		expr string
		want []string
	}{
		{`up{job="rarp-announce"} == 0`, []string{"up"}},
		{`absent(up{job="rarp-announce"})`, []string{"up"}},
		{`rarp_announce_libvirt_connected`, []string{"rarp_announce_libvirt_connected"}},
		{`sum by (instance, source) (rate(rarp_announce_landings_total{job=~".+", instance=~"a|b"}[5m]))`, []string{"rarp_announce_landings_total"}},
		{`histogram_quantile(0.99, sum by (le) (rate(rarp_announce_first_frame_lag_seconds_bucket{result!~"x{y}"}[15m])))`, []string{"rarp_announce_first_frame_lag_seconds_bucket"}},
		{`sum without(le)(a_total) / on(instance) group_left(version) b_info`, []string{"a_total", "b_info"}},
		{`sum(a_total) by (reason) > 0 and ignoring (reason) b`, []string{"a_total", "b"}},
		{`time() - max by (instance) (x_timestamp_seconds offset 5m)`, []string{"x_timestamp_seconds"}},
		{`count(x{l="by (sum)"}) > bool 1e3`, []string{"x"}},
		{`topk(3, a) or vector(0) unless b[5m:1m]`, []string{"a", "b"}},
		{"label_replace(a, \"dst\", `$1`, 'src', \"(.*)\")", []string{"a"}},
		{`sum(rate(a[5m])) # a comment naming b`, []string{"a"}},
		{`{__name__="x"}`, []string{}},
		{`SUM BY (x) (a)`, []string{"a"}},
		{`a:recorded:rate5m`, []string{"a:recorded:rate5m"}},
	}
	for _, c := range cases {
		got, err := metricNames(c.expr)
		if err != nil {
			t.Errorf("%s: %v", c.expr, err)
			continue
		}
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s: %v, want %v", c.expr, got, c.want)
		}
	}
	for _, bad := range []string{`a{l="x}`, `rate(a[5m)`, `a + $x`, `$a`} {
		if _, err := metricNames(bad); err == nil {
			t.Errorf("%s: no error", bad)
		}
	}
}

// grafanaVars are the dashboard's variables and Grafana's built-in
// intervals, replaced by what Prometheus would get.
var grafanaVars = map[string]string{
	"job":             "rarp-announce",
	"instance":        ".+",
	"__rate_interval": "1m",
	"__interval":      "30s",
	"__range":         "1h",
}

var grafanaVar = regexp.MustCompile(`\$(\{([A-Za-z0-9_]+)(:[a-z]+)?\}|[A-Za-z0-9_]+)`)

// expandGrafana replaces the dashboard's variables in expr; an unknown
// variable is an error.
func expandGrafana(expr string) (string, error) {
	var err error
	out := grafanaVar.ReplaceAllStringFunc(expr, func(m string) string {
		sub := grafanaVar.FindStringSubmatch(m)
		name := sub[2]
		if name == "" {
			name = sub[1]
		}
		v, ok := grafanaVars[name]
		if !ok && err == nil {
			err = fmt.Errorf("unknown variable $%s in %q", name, expr)
		}
		return v
	})
	return out, err
}

func TestExpandGrafana(t *testing.T) {
	got, err := expandGrafana(`rate(a{job=~"$job", instance=~"${instance}"}[$__rate_interval])`)
	if want := `rate(a{job=~"rarp-announce", instance=~".+"}[1m])`; err != nil || got != want {
		t.Errorf("got %q, %v; want %q", got, err, want)
	}
	if _, err := expandGrafana(`a{x="$nope"}`); err == nil {
		t.Error("an unknown variable expanded")
	}
}

// FuzzMetricNames: any input gives names or an error, never a panic;
// every name is an identifier that occurs in the input.
func FuzzMetricNames(f *testing.F) {
	for _, s := range []string{
		`sum by (instance) (rate(a_total{job=~".+"}[5m]))`, `histogram_quantile(0.9, sum by (le) (rate(b_bucket[1m])))`,
		"label_replace(a, \"d\", `$1`, 's', \"(.*)\")", `a{l="x\"}"} offset 5m > bool 1e3`, `"\`, `{`, `[`, `a # b`,
	} {
		f.Add(s)
	}
	ident := regexp.MustCompile(`^[a-zA-Z_:][a-zA-Z0-9_:]*$`)
	f.Fuzz(func(t *testing.T, expr string) {
		names, err := metricNames(expr)
		if err != nil {
			return
		}
		for _, n := range names {
			if !ident.MatchString(n) || !strings.Contains(expr, n) {
				t.Errorf("%q: name %q", expr, n)
			}
		}
	})
}
