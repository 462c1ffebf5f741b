package client

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// Printable returns s with every character that could drive a terminal
// written as an escape instead: C0 controls (including line feeds and tabs),
// DEL and invalid UTF-8 bytes as \xNN, C1 controls, the bidirectional
// controls and the Unicode line and paragraph separators as \uNNNN.
//
// Text that came from a gateway or a bundle goes through it before it is
// shown: a hostile gateway or sender could otherwise rewrite the screen
// (ANSI escapes), reorder what is shown (bidi overrides) or forge lines of
// output. Backslashes are kept as they are: the aim is a safe terminal, not
// a reversible encoding.
func Printable(s string) string { return printable(s, false) }

// PrintableLines is [Printable], except that it keeps line feeds: for text
// made of lines, such as a command's report.
func PrintableLines(s string) string { return printable(s, true) }

func printable(s string, keepLF bool) string {
	i := 0
	for i < len(s) && (s[i] >= 0x20 && s[i] < 0x7f || keepLF && s[i] == '\n') {
		i++
	}
	if i == len(s) {
		return s // plain ASCII: the common case costs no allocation
	}
	var b strings.Builder
	b.Grow(len(s) + 16)
	b.WriteString(s[:i])
	for i < len(s) {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size <= 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r == '\n' && keepLF:
			b.WriteByte('\n')
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\x%02x`, r)
		case unsafeRune(r):
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

// unsafeRune reports the non-ASCII characters Printable escapes: C1
// controls, bidirectional controls, and line and paragraph separators.
func unsafeRune(r rune) bool {
	switch {
	case r >= 0x80 && r <= 0x9f: // C1, such as CSI (0x9b)
		return true
	case r == 0x061c, r == 0x200e, r == 0x200f: // ALM, LRM, RLM
		return true
	case r >= 0x202a && r <= 0x202e: // LRE, RLE, PDF, LRO, RLO
		return true
	case r >= 0x2066 && r <= 0x2069: // LRI, RLI, FSI, PDI
		return true
	case r == 0x2028 || r == 0x2029: // line and paragraph separators
		return true
	}
	return false
}
