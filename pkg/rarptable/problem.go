// Package rarptable holds the MAC -> IPv4 mapping a RARP responder answers
// from: it parses /etc/ethers files and rarp-announce's own YAML mapping
// file, resolves host names once when a table loads (never per request),
// builds an immutable Table and swaps it atomically on reload.
//
// Every problem in a file is reported as "file:line: reason", and a file
// with any problem is refused as a whole: a reload that fails keeps the
// table that was serving.
package rarptable

import (
	"fmt"
	"strings"
)

// Problem is one thing wrong with one line of a table file.
type Problem struct {
	File   string
	Line   int
	Reason string
}

func (p Problem) String() string {
	if p.Line > 0 {
		return fmt.Sprintf("%s:%d: %s", p.File, p.Line, p.Reason)
	}
	return fmt.Sprintf("%s: %s", p.File, p.Reason)
}

// maxListed bounds how many problems an error message spells out; a file
// with a million bad lines must not produce a gigabyte of log.
const maxListed = 20

// LoadError is a table that could not be loaded: every problem found, in
// file and line order.
type LoadError struct {
	Problems []Problem
}

func (e *LoadError) Error() string {
	var b strings.Builder
	n := len(e.Problems)
	if n == 1 {
		return e.Problems[0].String()
	}
	fmt.Fprintf(&b, "%d problems:", n)
	for i, p := range e.Problems {
		if i == maxListed {
			fmt.Fprintf(&b, "\n  ... and %d more", n-maxListed)
			break
		}
		b.WriteString("\n  ")
		b.WriteString(p.String())
	}
	return b.String()
}

// problems collects Problems up to a cap, counting the rest, so a huge
// broken file costs bounded memory.
type problems struct {
	list    []Problem
	dropped int
}

const maxKept = 1000

func (p *problems) add(file string, line int, format string, args ...any) {
	if len(p.list) >= maxKept {
		p.dropped++
		return
	}
	p.list = append(p.list, Problem{File: file, Line: line, Reason: fmt.Sprintf(format, args...)})
}

func (p *problems) err() error {
	if len(p.list) == 0 {
		return nil
	}
	list := p.list
	if p.dropped > 0 {
		list = append(list, Problem{File: list[len(list)-1].File, Reason: fmt.Sprintf("%d further problems not listed", p.dropped)})
	}
	return &LoadError{Problems: list}
}
