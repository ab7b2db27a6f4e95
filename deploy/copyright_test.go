package deploy

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// TestCopyrightFile checks deploy/packaging/copyright, the .deb's
// /usr/share/doc/rarp-announce/copyright, against Debian's machine-readable
// format (copyright-format 1.0) and against the binary it describes: every
// Go module linked into rarp-announce is named in a Files paragraph, so a
// new dependency cannot ship without its license; every license a Files
// paragraph names has its text in a standalone License paragraph; and
// LICENSE is the Apache-2.0 text the header names.
func TestCopyrightFile(t *testing.T) {
	text := readFile(t, "packaging/copyright")
	paras := strings.Split(strings.TrimSpace(text), "\n\n")
	fields := func(p string) map[string]string {
		out := map[string]string{}
		last := ""
		for _, line := range strings.Split(p, "\n") {
			if strings.HasPrefix(line, " ") && last != "" {
				out[last] += "\n" + line
				continue
			}
			k, v, ok := strings.Cut(line, ":")
			if !ok {
				t.Errorf("copyright: line %q is neither a field nor a continuation", line)
				continue
			}
			last = k
			out[k] = strings.TrimSpace(v)
		}
		return out
	}
	head := fields(paras[0])
	if head["Format"] != "https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/" || head["Upstream-Name"] != "rarp-announce" {
		t.Errorf("header paragraph: %v", head)
	}
	named := map[string]bool{}   // module paths of Files fields
	used := map[string]bool{}    // license short names Files paragraphs use
	defined := map[string]bool{} // standalone License paragraphs
	sawStar := false
	for _, p := range paras[1:] {
		f := fields(p)
		lic := strings.SplitN(f["License"], "\n", 2)[0]
		switch {
		case f["Files"] != "":
			if f["Copyright"] == "" || lic == "" {
				t.Errorf("Files %s: needs Copyright and License", f["Files"])
			}
			for _, l := range strings.Split(lic, " and ") {
				used[l] = true
			}
			for _, pat := range strings.Fields(f["Files"]) {
				if pat == "*" {
					sawStar = true
				}
				named[strings.TrimSuffix(pat, "/*")] = true
			}
		case lic != "":
			defined[lic] = true
			if !strings.Contains(f["License"], "\n") {
				t.Errorf("License %s: no text", lic)
			}
		default:
			t.Errorf("paragraph without Files or License:\n%s", p)
		}
	}
	if !sawStar {
		t.Error("no Files: * paragraph for rarp-announce itself")
	}
	for l := range used {
		if !defined[l] {
			t.Errorf("license %s is used but has no License paragraph", l)
		}
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = "/usr/local/go/bin/go" // where the Makefile and CI find it
	}
	out, err := exec.Command(goBin, "list", "-deps", "-f", "{{with .Module}}{{if not .Main}}{{.Path}}{{end}}{{end}}", "../cmd/rarp-announce").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	var mods []string
	for _, m := range strings.Fields(string(out)) {
		if !slices.Contains(mods, m) {
			mods = append(mods, m)
		}
	}
	if len(mods) < 10 {
		t.Fatalf("go list found only %v", mods)
	}
	for _, m := range mods {
		if !named[m] {
			t.Errorf("module %s is linked into rarp-announce but not in packaging/copyright", m)
		}
	}
	if !named["golang.org/go"] {
		t.Error("the Go standard library is not in packaging/copyright")
	}
	license := readFile(t, "../LICENSE")
	for _, want := range []string{"Apache License", "Version 2.0, January 2004", "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION", "APPENDIX: How to apply the Apache License to your work."} {
		if !strings.Contains(license, want) {
			t.Errorf("LICENSE lacks %q: not the full Apache-2.0 text", want)
		}
	}
}
