package config

import (
	"fmt"
	"slices"
	"strings"
)

// Error is one problem in a configuration, located by line and field.
type Error struct {
	// File is the configuration file, when known.
	File string
	// Line is the 1-based line of the problem, or 0 when unknown (for a
	// Gateway built in code).
	Line int
	// Field is the path of the field, such as "peers[1].ca"; empty for a
	// problem with the whole document.
	Field string
	// Msg says what is wrong.
	Msg string
}

func (e *Error) Error() string {
	var b strings.Builder
	switch {
	case e.File != "" && e.Line > 0:
		fmt.Fprintf(&b, "%s:%d: ", e.File, e.Line)
	case e.File != "":
		fmt.Fprintf(&b, "%s: ", e.File)
	case e.Line > 0:
		fmt.Fprintf(&b, "line %d: ", e.Line)
	}
	if e.Field != "" {
		b.WriteString(e.Field + ": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Errors is every problem found in a configuration, one per line of its
// message, in the order of the file.
type Errors []*Error

// maxErrors bounds the problems reported: past a few dozen, the file is
// not a configuration at all.
const maxErrors = 20

func (l Errors) Error() string {
	var b strings.Builder
	for i, e := range l {
		if i == maxErrors {
			fmt.Fprintf(&b, "\n(and %d more)", len(l)-maxErrors)
			break
		}
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(e.Error())
	}
	return b.String()
}

// Unwrap lets errors.As find each *Error.
func (l Errors) Unwrap() []error {
	errs := make([]error, len(l))
	for i, e := range l {
		errs[i] = e
	}
	return errs
}

func (l Errors) sorted() Errors {
	slices.SortStableFunc(l, func(a, b *Error) int { return a.Line - b.Line })
	return l
}

func (l Errors) setFile(file string) {
	for _, e := range l {
		e.File = file
	}
}

// lineOf returns the line that set the field at path, or else the line of
// the nearest enclosing mapping or list item that is in the file, so that a
// missing field is reported where it should have been. It returns 0 for a
// Gateway built in code.
func (g *Gateway) lineOf(field string) int {
	for field != "" {
		if line, ok := g.lines[field]; ok {
			return line
		}
		field = parentField(field)
	}
	return g.lines[""]
}

// parentField strips the last component of a field path: "peers[1].ca" →
// "peers[1]" → "peers" → "".
func parentField(field string) string {
	i := strings.LastIndexAny(field, ".[")
	if i < 0 {
		return ""
	}
	return field[:i]
}

func (g *Gateway) errorf(field, format string, args ...any) *Error {
	return &Error{Line: g.lineOf(field), Field: field, Msg: fmt.Sprintf(format, args...)}
}

func (g *Gateway) missing(field string) *Error {
	return g.errorf(field, "missing required field")
}

// badValue reports a value that is not acceptable, quoting it (shortened:
// the message must stay one readable line).
func (g *Gateway) badValue(field, value, format string, args ...any) *Error {
	return g.errorf(field, "bad value %s: %s", quote(value), fmt.Sprintf(format, args...))
}

func quote(s string) string {
	const max = 80
	if len(s) > max {
		return fmt.Sprintf("%q…", s[:max])
	}
	return fmt.Sprintf("%q", s)
}

func index(field string, i int) string { return fmt.Sprintf("%s[%d]", field, i) }

// join returns a field path below parent.
func join(parent, key string) string {
	if parent == "" {
		return key
	}
	return parent + "." + key
}
