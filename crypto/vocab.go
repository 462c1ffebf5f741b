package crypto

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Purposes is the closed vocabulary of purposes a bundle may be shared for.
var Purposes = []string{
	"criminal-investigation",
	"prosecution",
	"mutual-legal-assistance",
	"expedited-preservation",
	"incident-response",
	"victim-identification",
}

// HandlingCodes are the SIENA-style handling codes.
var HandlingCodes = []string{"H0", "H1", "H2", "H3"}

// TLPLabels are the Traffic Light Protocol 2.0 labels.
var TLPLabels = []string{"TLP:RED", "TLP:AMBER+STRICT", "TLP:AMBER", "TLP:GREEN", "TLP:CLEAR"}

// Defaults applied by the command line when a flag is not given: the most
// restrictive choices, so that forgetting a flag never widens sharing.
const (
	DefaultHandling = "H2"
	DefaultTLP      = "TLP:RED"
)

// CheckPurpose returns an error listing the accepted purposes if p is not one.
func CheckPurpose(p string) error { return checkVocab("purpose", p, Purposes) }

// CheckHandling returns an error listing the accepted codes if h is not one.
func CheckHandling(h string) error { return checkVocab("handling code", h, HandlingCodes) }

// CheckTLP returns an error listing the accepted labels if l is not one.
func CheckTLP(l string) error { return checkVocab("TLP label", l, TLPLabels) }

// NormalizeTLP accepts a TLP label with or without the "TLP:" prefix, in any
// case, and returns its canonical form; unknown labels are returned as given.
func NormalizeTLP(l string) string {
	u := strings.ToUpper(strings.TrimSpace(l))
	if !strings.HasPrefix(u, "TLP:") {
		u = "TLP:" + u
	}
	if slices.Contains(TLPLabels, u) {
		return u
	}
	return l
}

func checkVocab(what, v string, accepted []string) error {
	if slices.Contains(accepted, v) {
		return nil
	}
	return fmt.Errorf("unknown %s %q (accepted: %s)", what, v, strings.Join(accepted, ", "))
}

// A gateway id names a country's gateway, such as "DE"; a unit id names a
// unit within its country: "<gateway id>/<unit>", such as "DE/forensics".
const gatewayIDSyntax = `[A-Z][A-Z0-9]{1,15}`

var (
	gatewayIDPattern = regexp.MustCompile(`^` + gatewayIDSyntax + `$`)
	unitIDPattern    = regexp.MustCompile(`^` + gatewayIDSyntax + `/[a-z0-9][a-z0-9._-]{0,62}$`)
)

// ValidGatewayID reports whether id is a well-formed gateway id.
func ValidGatewayID(id string) bool { return gatewayIDPattern.MatchString(id) }

// ValidUnitID reports whether u is a well-formed unit id.
func ValidUnitID(u string) bool { return unitIDPattern.MatchString(u) }

func checkUnitID(u string) error {
	if !unitIDPattern.MatchString(u) {
		return fmt.Errorf("malformed unit id %q (want COUNTRY/unit, such as DE/forensics)", u)
	}
	return nil
}

// maxTextField bounds the free-text envelope fields (legal basis, case).
const maxTextField = 256

// checkText admits the free-text envelope fields: valid UTF-8, printable,
// without control characters or U+2028/U+2029, so that the canonical JSON
// form needs no escaping beyond '"' and '\' (see docs/bundle-format.md).
func checkText(field, s string, required bool) error {
	switch {
	case s == "" && required:
		return fmt.Errorf("%s is required", field)
	case len(s) > maxTextField:
		return fmt.Errorf("%s is %d bytes long, over the limit of %d", field, len(s), maxTextField)
	case !utf8.ValidString(s):
		return fmt.Errorf("%s is not valid UTF-8", field)
	}
	for _, r := range s {
		if !unicode.IsPrint(r) && r != ' ' {
			return fmt.Errorf("%s %q contains a non-printable character %U", field, s, r)
		}
	}
	if strings.TrimSpace(s) != s {
		return fmt.Errorf("%s %q has leading or trailing spaces", field, s)
	}
	return nil
}

// MaxRetention bounds how long a bundle may be retained: 10 years.
const MaxRetention = 3650 * 24 * time.Hour

// ParseRetention parses a retention period: a whole number of weeks
// ("12w"), days ("90d"), hours ("36h"), minutes ("10m") or seconds ("30s").
// Minutes and seconds let a short retention be tried at once; "m" is
// minutes, never months.
func ParseRetention(s string) (time.Duration, error) {
	bad := fmt.Errorf("malformed retention period %q (want weeks, days, hours, minutes or seconds, such as 12w, 90d, 36h, 10m or 30s)", s)
	if len(s) < 2 {
		return 0, bad
	}
	var unit time.Duration
	switch s[len(s)-1] {
	case 's':
		unit = time.Second
	case 'm':
		unit = time.Minute
	case 'h':
		unit = time.Hour
	case 'd':
		unit = 24 * time.Hour
	case 'w':
		unit = 7 * 24 * time.Hour
	default:
		return 0, bad
	}
	digits := s[:len(s)-1]
	n, err := strconv.ParseInt(digits, 10, 64)
	// One form per period: no sign, no leading zeros.
	if err != nil || n <= 0 || digits != strconv.FormatInt(n, 10) {
		return 0, bad
	}
	if n > int64(MaxRetention/unit) {
		return 0, fmt.Errorf("retention period %q is longer than the limit of %dd", s, int(MaxRetention/(24*time.Hour)))
	}
	return time.Duration(n) * unit, nil
}
