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
	// Transient marks a problem that may pass without an edit of the file:
	// the file could not be read (not there yet, a ConfigMap not mounted
	// yet) or a host name did not resolve (DNS down at boot). The other
	// problems are in the text and stay until the file is fixed.
	Transient bool
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

// Transient reports whether every problem may pass without an edit of the
// files (see Problem.Transient): a load worth retrying as it is.
func (e *LoadError) Transient() bool {
	for _, p := range e.Problems {
		if !p.Transient {
			return false
		}
	}
	return len(e.Problems) > 0
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
	list             []Problem
	dropped          int
	droppedPermanent bool // one of the dropped ones was not Transient
}

const maxKept = 1000

func (p *problems) add(file string, line int, format string, args ...any) {
	p.put(false, file, line, format, args...)
}

// addTransient adds a problem that may pass by itself (Problem.Transient).
func (p *problems) addTransient(file string, line int, format string, args ...any) {
	p.put(true, file, line, format, args...)
}

func (p *problems) put(transient bool, file string, line int, format string, args ...any) {
	if len(p.list) >= maxKept {
		p.dropped++
		p.droppedPermanent = p.droppedPermanent || !transient
		return
	}
	p.list = append(p.list, Problem{File: file, Line: line, Reason: fmt.Sprintf(format, args...), Transient: transient})
}

func (p *problems) err() error {
	if len(p.list) == 0 {
		return nil
	}
	list := p.list
	if p.dropped > 0 {
		list = append(list, Problem{File: list[len(list)-1].File, Reason: fmt.Sprintf("%d further problems not listed", p.dropped),
			Transient: !p.droppedPermanent})
	}
	return &LoadError{Problems: list}
}
