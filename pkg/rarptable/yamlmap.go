package rarptable

import (
	"bytes"
	"errors"
	"io"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/rarp-announce/rarp-announce/pkg/rarp"
)

// The YAML mapping file, rarp-announce's own format:
//
//	mappings:
//	  - mac: 52:54:00:12:34:56
//	    ip: 192.0.2.10
//	  - mac: 52:54:00:12:34:57
//	    host: pxe-client-7      # resolved when the table loads
//	    interface: br0          # answer only requests received on br0
//
// Each mapping has a mac and exactly one of ip (an IPv4 literal) or host;
// interface is optional. Unknown keys are refused: a misspelt "interfce"
// must not silently widen a mapping to every interface.

var mapKeys = []string{"mac", "ip", "host", "interface"}

// yamlLine pulls the line number out of yaml.v3's error text
// ("yaml: line 7: did not find expected key").
var yamlLine = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)

func parseMap(file string, data []byte, p *problems) []record {
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		if !errors.Is(err, io.EOF) {
			reportYAMLError(file, err, p)
		}
		return nil
	}
	// A second document would be ignored by a plain Unmarshal: its
	// mappings silently not served.
	var next yaml.Node
	if err := dec.Decode(&next); err == nil {
		p.add(file, next.Line, "a second YAML document: the file must hold one (remove the ---)")
		return nil
	} else if !errors.Is(err, io.EOF) {
		reportYAMLError(file, err, p)
		return nil
	}
	if doc.Kind == 0 || len(doc.Content) == 0 {
		return nil // empty file: no mappings
	}
	root := doc.Content[0]
	if root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
		return nil
	}
	if root.Kind != yaml.MappingNode {
		p.add(file, root.Line, "expected a mapping with the key \"mappings\", found %s", DescribeNode(root))
		return nil
	}
	var recs []record
	firstLine := 0
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		if k.Value != "mappings" {
			p.add(file, k.Line, "unknown key %q (the file holds one key: mappings)", k.Value)
			continue
		}
		// YAML keeps the last of two equal keys: the first list would be
		// dropped without a word.
		if firstLine > 0 {
			p.add(file, k.Line, "key \"mappings\" given twice (first on line %d): put every mapping in one list", firstLine)
			continue
		}
		firstLine = k.Line
		if v.Kind == yaml.ScalarNode && v.Tag == "!!null" {
			continue
		}
		if v.Kind != yaml.SequenceNode {
			p.add(file, v.Line, "mappings: expected a list, found %s", DescribeNode(v))
			continue
		}
		recs = make([]record, 0, len(v.Content))
		type key struct {
			mac   rarp.MAC
			iface string
		}
		first := map[key]int{}
		for _, item := range v.Content {
			r, ok := parseMapItem(file, item, p)
			if !ok {
				continue
			}
			// A second mapping is a fault of the text, found here and not
			// after the names resolve: else a name that does not resolve
			// would hide it, and make the whole error look transient.
			if line, dup := first[key{r.mac, r.iface}]; dup {
				p.add(file, r.line, "second mapping for %s%s (first on line %d)", r.mac, onIface(r.iface), line)
				continue
			}
			first[key{r.mac, r.iface}] = r.line
			recs = append(recs, r)
		}
	}
	return recs
}

func parseMapItem(file string, n *yaml.Node, p *problems) (record, bool) {
	if n.Kind != yaml.MappingNode {
		p.add(file, n.Line, "a mapping must be a set of keys (mac, ip or host, interface), found %s", DescribeNode(n))
		return record{}, false
	}
	r := record{line: n.Line}
	seen := map[string]int{}
	ok := true
	var ipNode, hostNode, macNode *yaml.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if !isMapKey(k.Value) {
			p.add(file, k.Line, "unknown key %q (allowed: %s)", k.Value, strings.Join(mapKeys, ", "))
			ok = false
			continue
		}
		if first, dup := seen[k.Value]; dup {
			p.add(file, k.Line, "key %q given twice (first on line %d)", k.Value, first)
			ok = false
			continue
		}
		seen[k.Value] = k.Line
		if v.Kind != yaml.ScalarNode || v.Tag == "!!null" {
			p.add(file, v.Line, "%s: expected a value, found %s", k.Value, DescribeNode(v))
			ok = false
			continue
		}
		switch k.Value {
		case "mac":
			macNode = v
		case "ip":
			ipNode = v
		case "host":
			hostNode = v
		case "interface":
			if err := CheckInterfaceName(v.Value); err != nil {
				p.add(file, v.Line, "interface: %v", err)
				ok = false
			}
			r.iface = v.Value
		}
	}
	if macNode == nil {
		p.add(file, n.Line, "mapping has no mac")
		return r, false
	}
	mac, err := parseMAC([]byte(macNode.Value))
	if err != nil {
		p.add(file, macNode.Line, "mac: %v", err)
		ok = false
	}
	r.mac = mac
	r.line = macNode.Line
	switch {
	case ipNode == nil && hostNode == nil:
		p.add(file, n.Line, "mapping for %s has neither ip nor host", macNode.Value)
		ok = false
	case ipNode != nil && hostNode != nil:
		p.add(file, hostNode.Line, "mapping for %s has both ip and host: give one", macNode.Value)
		ok = false
	case ipNode != nil:
		ip, good := parseIPv4([]byte(ipNode.Value))
		if !good {
			reason := "is not an IPv4 address (write a dotted quad such as 192.0.2.10)"
			if _, err := checkHost([]byte(ipNode.Value)); err == nil {
				reason = "is not an IPv4 address (use host: for a name to resolve)"
			} else if strings.Contains(ipNode.Value, ":") {
				reason = "is not an IPv4 address: RARP answers with IPv4 addresses only"
			}
			p.add(file, ipNode.Line, "ip: %q %s", ipNode.Value, reason)
			ok = false
		}
		r.ip = ip
	default:
		host, err := checkHost([]byte(hostNode.Value))
		if err != nil {
			p.add(file, hostNode.Line, "host: %v", err)
			ok = false
		}
		r.host = host
	}
	return r, ok
}

func isMapKey(k string) bool {
	for _, m := range mapKeys {
		if k == m {
			return true
		}
	}
	return false
}

// CheckInterfaceName applies the kernel's rules for interface names
// (dev_valid_name): 1-15 bytes, no '/', ':' or white space, not "." or "..".
// A name no interface can have is a typo: the map file, the agent's
// configuration and serve's flags refuse it rather than wait for it.
func CheckInterfaceName(s string) error {
	switch {
	case s == "":
		return errors.New("empty interface name")
	case len(s) > 15:
		return errors.New(strconv.Quote(s) + " is longer than 15 bytes, the kernel's limit")
	case s == "." || s == "..":
		return errors.New(strconv.Quote(s) + " is not an interface name")
	case strings.ContainsAny(s, "/: \t\n\v\f\r"):
		return errors.New(strconv.Quote(s) + " contains '/', ':' or white space")
	}
	return nil
}

// DescribeNode names a YAML node for an error message ("a list", "a
// mapping", "nothing", or the quoted scalar): the mapping file's errors
// and the agent configuration's word it alike.
func DescribeNode(n *yaml.Node) string {
	switch n.Kind {
	case yaml.DocumentNode:
		return "a document"
	case yaml.SequenceNode:
		return "a list"
	case yaml.MappingNode:
		return "a mapping"
	case yaml.AliasNode:
		return "an alias"
	case yaml.ScalarNode:
		if n.ShortTag() == "!!null" {
			return "nothing"
		}
		return strconv.Quote(n.Value)
	}
	return "an unexpected YAML node"
}

func reportYAMLError(file string, err error, p *problems) {
	var te *yaml.TypeError
	var msgs []string
	if errors.As(err, &te) {
		msgs = te.Errors
	} else {
		msgs = []string{err.Error()}
	}
	for _, m := range msgs {
		if sm := yamlLine.FindStringSubmatch(m); sm != nil {
			line, _ := strconv.Atoi(sm[1])
			p.add(file, line, "YAML: %s", sm[2])
			continue
		}
		p.add(file, 0, "YAML: %s", strings.TrimPrefix(m, "yaml: "))
	}
}
