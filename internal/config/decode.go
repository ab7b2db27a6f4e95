package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/rarp-announce/rarp-announce/pkg/plan"

	"github.com/rarp-announce/rarp-announce/pkg/rarptable"
)

// decoder fills a Config from a YAML node tree. It walks the tree itself
// rather than letting yaml.Decode fill the struct, because yaml.Decode
// stops at the first type error of a kind it cannot collect, does not
// name the key of a type error, truncates 5.5 into an int, and keeps the
// last of two equal keys silently. Here every problem of the file is
// collected, each with its line and dotted key.
type decoder struct {
	file string
	errs Errors
}

func (d *decoder) add(line int, key string, class Class, format string, args ...any) {
	d.errs = append(d.errs, &Error{File: d.file, Line: line, Key: key, Class: class, Msg: fmt.Sprintf(format, args...)})
}

var (
	durationType = reflect.TypeOf(Duration(0))
	strategyType = reflect.TypeOf(Strategy(""))
)

// reYAMLLine pulls the line out of the YAML parser's syntax errors, the
// only errors whose text is read: the parser has no typed error for them.
var reYAMLLine = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)

// document parses data into its single document node; nil with no error
// for an empty file or one holding only comments.
func (d *decoder) document(data []byte) *yaml.Node {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil
		}
		d.syntax(err)
		return nil
	}
	var next yaml.Node
	switch err := dec.Decode(&next); {
	case errors.Is(err, io.EOF):
	case err != nil:
		d.syntax(err)
		return nil
	default:
		d.add(next.Line, "", ClassDocuments, "a second YAML document: the file must hold one (remove the ---)")
	}
	return &doc
}

func (d *decoder) syntax(err error) {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	line := 0
	if g := reYAMLLine.FindStringSubmatch(msg); g != nil {
		line, _ = strconv.Atoi(g[1])
		msg = g[2]
	}
	d.add(line, "", ClassSyntax, "YAML syntax: %s", msg)
}

// value decodes n into v (addressable), key being n's dotted path.
func (d *decoder) value(n *yaml.Node, v reflect.Value, key string) {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	switch v.Type() {
	case durationType:
		s, ok := d.scalar(n, key, "a duration such as 50ms or 2s")
		if !ok {
			return
		}
		x, err := time.ParseDuration(s)
		if err != nil {
			d.add(n.Line, key, ClassType, "%q is not a duration (such as 50ms or 2s)", s)
			return
		}
		v.SetInt(int64(x))
		return
	case strategyType:
		s, ok := d.scalar(n, key, "a strategy (host, qemu, ovs or skip)")
		if !ok {
			return
		}
		if st, err := plan.ParseStrategy(s); err != nil {
			d.add(n.Line, key, ClassValue, "%q is not a strategy (host, qemu, ovs or skip)", s)
		} else {
			v.Set(reflect.ValueOf(st))
		}
		return
	}
	switch v.Kind() {
	case reflect.Struct:
		d.mapping(n, v, key)
	case reflect.Bool:
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!bool" {
			d.wrongType(n, key, "true or false")
			return
		}
		var b bool
		if err := n.Decode(&b); err != nil {
			d.wrongType(n, key, "true or false")
			return
		}
		v.SetBool(b)
	case reflect.Int:
		if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!float" {
			d.add(n.Line, key, ClassType, "%s is not a whole number", n.Value)
			return
		}
		var i int64
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" || n.Decode(&i) != nil {
			d.wrongType(n, key, "a whole number")
			return
		}
		v.SetInt(i)
	case reflect.Uint32: // a mark: 0x52415250 or 1380012624
		var i int64
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" || n.Decode(&i) != nil {
			d.wrongType(n, key, "a whole number from 0 to 0xffffffff")
			return
		}
		if i < 0 || i > math.MaxUint32 {
			d.add(n.Line, key, ClassValue, "%s is not from 0 to 0xffffffff", n.Value)
			return
		}
		v.SetUint(uint64(i))
	case reflect.Float64:
		var f float64
		if n.Kind != yaml.ScalarNode || (n.ShortTag() != "!!int" && n.ShortTag() != "!!float") || n.Decode(&f) != nil {
			d.wrongType(n, key, "a number")
			return
		}
		if math.IsNaN(f) || math.IsInf(f, 0) {
			d.add(n.Line, key, ClassValue, "%s is not a finite number", n.Value)
			return
		}
		v.SetFloat(f)
	case reflect.String:
		s, ok := d.scalar(n, key, "a string")
		if ok {
			v.SetString(s)
		}
	case reflect.Slice: // []string
		if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
			v.Set(reflect.Zero(v.Type()))
			return
		}
		if n.Kind != yaml.SequenceNode {
			d.wrongType(n, key, "a list")
			return
		}
		out := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, item := range n.Content {
			d.value(item, out.Index(i), fmt.Sprintf("%s[%d]", key, i))
		}
		v.Set(out)
	default:
		panic("config: no decoder for " + v.Type().String())
	}
}

// scalar returns a scalar's text; null is the empty string for strings
// and refused for the typed values (what would "rounds:" mean?).
func (d *decoder) scalar(n *yaml.Node, key, want string) (string, bool) {
	if n.Kind != yaml.ScalarNode {
		d.wrongType(n, key, want)
		return "", false
	}
	if n.ShortTag() == "!!null" {
		if want == "a string" {
			return "", true
		}
		d.add(n.Line, key, ClassType, "no value: expected %s", want)
		return "", false
	}
	return n.Value, true
}

func (d *decoder) wrongType(n *yaml.Node, key, want string) {
	d.add(n.Line, key, ClassType, "expected %s, found %s", want, rarptable.DescribeNode(n))
}

// mapping decodes a YAML mapping into the struct v. Null keeps the
// defaults (a section with every key commented out).
func (d *decoder) mapping(n *yaml.Node, v reflect.Value, key string) {
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
		return
	}
	if n.Kind != yaml.MappingNode {
		want := "a mapping of keys"
		if key == "" {
			want = "a mapping of keys (libvirt:, schedule:, ...)"
		}
		d.wrongType(n, key, want)
		return
	}
	fields := map[string]int{}
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		if tag := strings.Split(t.Field(i).Tag.Get("yaml"), ",")[0]; tag != "" && tag != "-" {
			fields[tag] = i
		}
	}
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		name := join(key, k.Value)
		if k.Kind != yaml.ScalarNode {
			d.add(k.Line, key, ClassType, "a key must be a plain name, found %s", rarptable.DescribeNode(k))
			continue
		}
		first, dup := seen[k.Value]
		if dup {
			d.add(k.Line, name, ClassDuplicateKey, "given twice (first on line %d)", first)
		} else {
			seen[k.Value] = k.Line
		}
		f, ok := fields[k.Value]
		switch {
		case !ok && !dup:
			d.add(k.Line, name, ClassUnknownKey, "unknown key")
		case ok && dup:
			// The copy is refused, but its own problems are reported too
			// (every problem at once), decoded into a scratch value.
			d.value(val, reflect.New(v.Field(f).Type()).Elem(), name)
		case ok:
			d.value(val, v.Field(f), name)
		}
	}
}

func join(prefix, k string) string {
	if prefix == "" {
		return k
	}
	return prefix + "." + k
}
