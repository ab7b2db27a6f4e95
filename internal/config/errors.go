package config

import (
	"errors"
	"sort"
	"strconv"
	"strings"
)

// Class says what kind of problem an Error is, so callers (the CLI's exit
// code, a reload's log and metric) can tell them apart without reading the
// message.
type Class int

// Classes of configuration problems.
const (
	// ClassFile: the file could not be read.
	ClassFile Class = iota + 1
	// ClassSyntax: the text is not YAML.
	ClassSyntax
	// ClassDocuments: more than one YAML document in the file.
	ClassDocuments
	// ClassUnknownKey: a key the configuration does not have (a typo).
	ClassUnknownKey
	// ClassDuplicateKey: a key given twice in one mapping (YAML keeps only
	// one of them silently).
	ClassDuplicateKey
	// ClassType: a value of the wrong type (a list for a number, 5.5 for a
	// whole number, "soon" for a duration).
	ClassType
	// ClassValue: a well-typed value out of range or inconsistent with
	// another key.
	ClassValue
)

var classNames = map[Class]string{
	ClassFile: "file", ClassSyntax: "syntax", ClassDocuments: "documents", ClassUnknownKey: "unknown_key",
	ClassDuplicateKey: "duplicate_key", ClassType: "type", ClassValue: "value",
}

func (c Class) String() string {
	if s, ok := classNames[c]; ok {
		return s
	}
	return "class(" + strconv.Itoa(int(c)) + ")"
}

// Error is one configuration problem at a place in a file, written as
// "file:line: key: reason".
type Error struct {
	File  string
	Line  int    // 0: the file as a whole, or a default that the file did not set
	Key   string // dotted path, "schedule.rounds"; "" when no key applies
	Class Class
	Msg   string
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		b.WriteString(":" + strconv.Itoa(e.Line))
	}
	b.WriteString(": ")
	if e.Key != "" {
		b.WriteString(e.Key + ": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Errors is every problem found in one configuration, in line order. It is
// what Load, Parse and Validate return: errors.As(err, &errs) gives the
// list; errors.As(err, &e) with e *Error gives the first.
type Errors []*Error

func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// Unwrap lets errors.As and errors.Is look at each problem.
func (es Errors) Unwrap() []error {
	out := make([]error, len(es))
	for i, e := range es {
		out[i] = e
	}
	return out
}

// Has reports whether any problem is of class c.
func (es Errors) Has(c Class) bool {
	for _, e := range es {
		if e.Class == c {
			return true
		}
	}
	return false
}

// AsErrors returns the problems err carries, or nil if it is not a
// configuration error.
func AsErrors(err error) Errors {
	var es Errors
	if errors.As(err, &es) {
		return es
	}
	var e *Error
	if errors.As(err, &e) {
		return Errors{e}
	}
	return nil
}

// sorted orders problems by line, keeping the order of discovery within a
// line, and returns nil (a nil error) when there is none.
func (es Errors) err() error {
	if len(es) == 0 {
		return nil
	}
	sort.SliceStable(es, func(i, j int) bool { return es[i].Line < es[j].Line })
	return es
}
