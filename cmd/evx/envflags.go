package main

import (
	"strings"

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
	f.StringVar(&e.retain, "retain", "90d", "retention period: days, weeks or hours (90d, 12w, 36h)")
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
	period, err := crypto.ParseRetention(e.retain)
	if err != nil {
		return crypto.SealOptions{}, usage(err)
	}
	for _, err := range []error{crypto.CheckPurpose(e.purpose), crypto.CheckHandling(e.handling), crypto.CheckTLP(crypto.NormalizeTLP(e.tlp))} {
		if err != nil {
			return crypto.SealOptions{}, usage(err)
		}
	}
	return crypto.SealOptions{Purpose: e.purpose, Handling: e.handling, TLP: crypto.NormalizeTLP(e.tlp),
		LegalBasis: e.legalBasis, Case: e.caseRef, Retain: period}, nil
}

// vocabularyHelp lists the accepted values, for the commands' long help.
func vocabularyHelp() string {
	return `Purposes: ` + strings.Join(crypto.Purposes, ", ") + `
Handling codes: ` + strings.Join(crypto.HandlingCodes, ", ") + ` (default ` + crypto.DefaultHandling + `)
TLP labels: ` + strings.Join(crypto.TLPLabels, ", ") + ` (default ` + crypto.DefaultTLP + `)`
}
