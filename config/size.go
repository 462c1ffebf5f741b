package config

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Size is a number of bytes, written in the configuration with a binary
// unit: B, KiB, MiB, GiB or TiB, such as 64GiB. A bare number is bytes.
type Size int64

// Binary size units.
const (
	B   Size = 1
	KiB Size = 1 << 10
	MiB Size = 1 << 20
	GiB Size = 1 << 30
	TiB Size = 1 << 40
)

var sizeUnits = []struct {
	name string
	size Size
}{{"TiB", TiB}, {"GiB", GiB}, {"MiB", MiB}, {"KiB", KiB}, {"B", B}}

// ParseSize parses a size such as "64GiB", "512 MiB" or "1048576".
// Decimal units (KB, MB, GB…) are refused rather than guessed at.
func ParseSize(s string) (Size, error) {
	t := strings.TrimSpace(s)
	i := 0
	for i < len(t) && t[i] >= '0' && t[i] <= '9' {
		i++
	}
	if i == 0 {
		return 0, fmt.Errorf("want a size such as 64GiB (units: B, KiB, MiB, GiB, TiB)")
	}
	n, err := strconv.ParseInt(t[:i], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("number too large")
	}
	unit := strings.TrimSpace(t[i:])
	mult := B
	if unit != "" {
		found := false
		for _, u := range sizeUnits {
			if u.name == unit {
				mult, found = u.size, true
				break
			}
		}
		if !found {
			return 0, fmt.Errorf("unknown unit %q (units: B, KiB, MiB, GiB, TiB; decimal units such as GB are not accepted)", unit)
		}
	}
	if n > math.MaxInt64/int64(mult) {
		return 0, fmt.Errorf("size too large")
	}
	return Size(n) * mult, nil
}

// String returns s in the largest unit that divides it exactly, such as
// "64GiB" or "1000B", a form ParseSize accepts.
func (s Size) String() string {
	if s != 0 {
		for _, u := range sizeUnits {
			if s%u.size == 0 {
				return strconv.FormatInt(int64(s/u.size), 10) + u.name
			}
		}
	}
	return strconv.FormatInt(int64(s), 10) + "B"
}

// MarshalText implements [encoding.TextMarshaler].
func (s Size) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText implements [encoding.TextUnmarshaler] with [ParseSize].
func (s *Size) UnmarshalText(text []byte) error {
	n, err := ParseSize(string(text))
	if err != nil {
		return err
	}
	*s = n
	return nil
}

// Duration is a span of time, written in the configuration as Go writes
// durations, such as 30s, 2m or 1h30m.
type Duration time.Duration

// String returns d as Go writes it, a form UnmarshalText accepts.
func (d Duration) String() string { return time.Duration(d).String() }

// MarshalText implements [encoding.TextMarshaler].
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText implements [encoding.TextUnmarshaler] with
// [time.ParseDuration].
func (d *Duration) UnmarshalText(text []byte) error {
	v, err := time.ParseDuration(strings.TrimSpace(string(text)))
	if err != nil {
		return fmt.Errorf("want a duration such as 30s, 2m or 1h30m")
	}
	*d = Duration(v)
	return nil
}
