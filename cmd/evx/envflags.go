package main

import (
	"fmt"
	"strings"
	"time"

	"evx/crypto"

	"github.com/spf13/pflag"
)

// envelopeFlags are the envelope choices that seal and push share.
type envelopeFlags struct {
	purpose, legalBasis, caseRef, handling, tlp, retain string
}

func (e *envelopeFlags) register(f *pflag.FlagSet) {
	f.StringVar(&e.purpose, "purpose", "", "purpose of sharing (required)")
	f.StringVar(&e.legalBasis, "legal-basis", "", "legal-basis reference (required)")
	f.StringVar(&e.caseRef, "case", "", "case reference")
	f.StringVar(&e.handling, "handling", crypto.DefaultHandling, "handling code")
	f.StringVar(&e.tlp, "tlp", crypto.DefaultTLP, "TLP label")
	f.StringVar(&e.retain, "retain", "90d", "retention period in weeks, days, hours, minutes or seconds (12w, 90d, 36h, 10m, 30s), "+retentionRange)
}

// required checks the flags that have no default.
func (e *envelopeFlags) required() error {
	switch {
	case e.purpose == "":
		return usagef("--purpose is required (accepted: %s)", strings.Join(crypto.Purposes, ", "))
	case e.legalBasis == "":
		return usagef("--legal-basis is required")
	}
	return nil
}

// options returns the seal options the flags choose. The vocabulary is
// checked here, before any file is read or any gateway asked (crypto.Seal
// checks it again).
func (e *envelopeFlags) options() (crypto.SealOptions, error) {
	period, err := parseRetain(e.retain)
	if err != nil {
		return crypto.SealOptions{}, err
	}
	for _, err := range []error{crypto.CheckPurpose(e.purpose), crypto.CheckHandling(e.handling), crypto.CheckTLP(crypto.NormalizeTLP(e.tlp))} {
		if err != nil {
			return crypto.SealOptions{}, usage(err)
		}
	}
	return crypto.SealOptions{Purpose: e.purpose, Handling: e.handling, TLP: crypto.NormalizeTLP(e.tlp),
		LegalBasis: e.legalBasis, Case: e.caseRef, Retain: period}, nil
}

// retentionRange is the range of retention periods crypto accepts.
var retentionRange = fmt.Sprintf("from 1s to %dd", crypto.MaxRetention/(24*time.Hour))

// parseRetain parses --retain with crypto.ParseRetention, and says what it
// accepts when it does not accept s.
func parseRetain(s string) (time.Duration, error) {
	d, err := crypto.ParseRetention(s)
	if err == nil {
		return d, nil
	}
	digits := strings.TrimLeft(s, "0123456789")
	n, unit := s[:len(s)-len(digits)], digits
	switch {
	case n != "" && len(unit) == 1 && strings.Contains("smhdw", unit):
		return 0, usagef("--retain %s is out of range: a retention period is %s", s, retentionRange)
	case n != "" && (unit == "mo" || unit == "y"):
		return 0, usagef("--retain %q: months and years are not accepted (m is minutes); give days or weeks, such as 90d or 52w, %s", s, retentionRange)
	}
	return 0, usagef("--retain %q: want a whole number of weeks, days, hours, minutes or seconds, such as 12w, 90d, 36h, 10m or 30s, %s", s, retentionRange)
}

// vocabularyHelp lists the accepted values, for the commands' long help.
func vocabularyHelp() string {
	return `Purposes: ` + strings.Join(crypto.Purposes, ", ") + `
Handling codes: ` + strings.Join(crypto.HandlingCodes, ", ") + ` (default ` + crypto.DefaultHandling + `)
TLP labels: ` + strings.Join(crypto.TLPLabels, ", ") + ` (default ` + crypto.DefaultTLP + `)`
}
