package main

import (
	"io"

	"evx/client"
)

// Text that came from a gateway or a bundle (unit ids, legal basis, case,
// the gateway's sender check and messages, file paths) is printed only
// through these: a hostile gateway or sender must not be able to drive the
// terminal with escape sequences, reorder a line with bidirectional
// controls, or forge a line of a report. The rules are client.Printable's,
// which the client applies to the gateway's error messages too.

// printable returns s with control characters, line feeds included,
// written as escapes: for one value on a line or in a table cell.
func printable(s string) string { return client.Printable(s) }

// printableWriter writes to w with control characters escaped but line
// feeds kept: for reports of several lines that quote a gateway or a
// bundle in places, as a second line of defence behind printable. Each
// Write is taken as whole text, as fmt.Fprintf writes it: a character
// split across two writes would be escaped byte by byte.
type printableWriter struct{ w io.Writer }

func (p printableWriter) Write(b []byte) (int, error) {
	if _, err := io.WriteString(p.w, client.PrintableLines(string(b))); err != nil {
		return 0, err
	}
	return len(b), nil
}
