package config

import (
	"strings"
	"testing"
)

func TestParseSize(t *testing.T) {
	tests := []struct {
		in   string
		want Size
		err  string
	}{
		{in: "64GiB", want: 64 * GiB},
		{in: "512 MiB", want: 512 * MiB},
		{in: " 1KiB ", want: KiB},
		{in: "1TiB", want: TiB},
		{in: "5TiB", want: 5 * TiB},
		{in: "100B", want: 100},
		{in: "1048576", want: MiB},
		{in: "0", want: 0},
		{in: "8388607TiB", want: 8388607 * TiB},
		{in: "8388608TiB", err: "size too large"},
		{in: "9223372036854775807", want: 1<<63 - 1},
		{in: "9223372036854775808", err: "number too large"},
		{in: "", err: "want a size such as 64GiB"},
		{in: "GiB", err: "want a size such as 64GiB"},
		{in: "-1GiB", err: "want a size such as 64GiB"},
		{in: "1.5GiB", err: `unknown unit ".5GiB"`},
		{in: "10GB", err: `unknown unit "GB"`},
		{in: "10gib", err: `unknown unit "gib"`},
		{in: "10 G", err: `unknown unit "G"`},
	}
	for _, tc := range tests {
		got, err := ParseSize(tc.in)
		switch {
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("ParseSize(%q) = %v, %v; want error containing %q", tc.in, got, err, tc.err)
		case tc.err == "" && (err != nil || got != tc.want):
			t.Errorf("ParseSize(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
}

func TestSizeString(t *testing.T) {
	for _, tc := range []struct {
		s    Size
		want string
	}{
		{0, "0B"}, {1, "1B"}, {1000, "1000B"}, {1536, "1536B"}, {KiB, "1KiB"},
		{64 * GiB, "64GiB"}, {1536 * MiB, "1536MiB"}, {5 * TiB, "5TiB"}, {-2 * KiB, "-2KiB"},
	} {
		if got := tc.s.String(); got != tc.want {
			t.Errorf("Size(%d).String() = %q, want %q", int64(tc.s), got, tc.want)
		}
		if tc.s < 0 {
			continue
		}
		if back, err := ParseSize(tc.want); err != nil || back != tc.s {
			t.Errorf("ParseSize(%q) = %v, %v; want %d", tc.want, back, err, int64(tc.s))
		}
	}
}
