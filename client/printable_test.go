package client

import "testing"

func TestPrintable(t *testing.T) {
	for _, tc := range []struct{ in, want, lines string }{
		{"EIO 2026/17", "EIO 2026/17", "EIO 2026/17"},
		{"Straße 42 – ü", "Straße 42 – ü", "Straße 42 – ü"},
		{"a\x1b[31mred", `a\x1b[31mred`, `a\x1b[31mred`},
		{"two\nlines\r\n", `two\x0alines\x0d\x0a`, "two\nlines\\x0d\n"},
		{"tab\there", `tab\x09here`, `tab\x09here`},
		{"del\x7f", `del\x7f`, `del\x7f`},
		{"c1 \u009b31m \u0085", `c1 \u009b31m \u0085`, `c1 \u009b31m \u0085`},
		{"raw \x9b byte", `raw \x9b byte`, `raw \x9b byte`},
		{"bidi \u202eevil\u202c \u2066x\u2069 \u200f\u061c", `bidi \u202eevil\u202c \u2066x\u2069 \u200f\u061c`, `bidi \u202eevil\u202c \u2066x\u2069 \u200f\u061c`},
		{"sep \u2028\u2029", `sep \u2028\u2029`, `sep \u2028\u2029`},
		{"bad \xff\xfe utf-8 \xe2\x80", `bad \xff\xfe utf-8 \xe2\x80`, `bad \xff\xfe utf-8 \xe2\x80`},
		{`back\slash \x1b`, `back\slash \x1b`, `back\slash \x1b`},
	} {
		if got := Printable(tc.in); got != tc.want {
			t.Errorf("Printable(%q) = %q, want %q", tc.in, got, tc.want)
		}
		if got := PrintableLines(tc.in); got != tc.lines {
			t.Errorf("PrintableLines(%q) = %q, want %q", tc.in, got, tc.lines)
		}
	}
	if n := testing.AllocsPerRun(100, func() { Printable("DE/forensics signing key ed25519:abc") }); n != 0 {
		t.Errorf("Printable of plain ASCII allocates %v times, want 0", n)
	}
}
