// Package enumname names the values of small integer enum types from one
// table per type, so that their String methods (stable metric labels, log
// fields) are a lookup instead of a switch each.
package enumname

import (
	"fmt"
	"maps"
	"slices"
)

// Integer is the underlying type of an enum.
type Integer interface {
	~int | ~int8 | ~int16 | ~int32 | ~int64 | ~uint | ~uint8 | ~uint16 | ~uint32 | ~uint64
}

// Table maps each named value of an enum to its name.
type Table[T Integer] map[T]string

// Name is v's name, or, for a value the table does not name, unknown
// formatted with v's number (unknown holds one %d verb: "state%d").
func (t Table[T]) Name(v T, unknown string) string {
	if s, ok := t[v]; ok {
		return s
	}
	return fmt.Sprintf(unknown, int64(v))
}

// Values lists the values the table names, in ascending order: the list a
// metric pre-declares its labels from, kept in step with the names by
// being derived from them.
func (t Table[T]) Values() []T {
	return slices.Sorted(maps.Keys(t))
}
