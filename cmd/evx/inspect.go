package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"evx/crypto"

	"github.com/spf13/cobra"
)

func newInspectCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "inspect BUNDLE.evx [--json]",
		Short: "Show a bundle's envelope and check its signature, without any secret key",
		Long: `inspect prints the envelope of a bundle and whether the sender's signature
over it is valid. It needs no key and never reads the encrypted payload.
It exits 5 if the signature is not valid.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			b, f, err := crypto.OpenBundleFile(args[0])
			if err != nil {
				return err
			}
			defer f.Close()
			sigErr := b.VerifySignature()
			if asJSON {
				out := struct {
					Envelope       json.RawMessage `json:"envelope"`
					SignatureValid bool            `json:"signature_valid"`
					SignatureError string          `json:"signature_error,omitempty"`
				}{Envelope: b.EnvelopeJSON, SignatureValid: sigErr == nil}
				if sigErr != nil {
					out.SignatureError = sigErr.Error()
				}
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				if err := enc.Encode(out); err != nil {
					return err
				}
			} else {
				printEnvelope(cmd.OutOrStdout(), b.Envelope, sigErr)
			}
			// An invalid signature fails the command (exit 5), after the
			// envelope was shown.
			return sigErr
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON: the envelope as signed, and the signature verdict")
	return cmd
}

func printEnvelope(w io.Writer, e *crypto.Envelope, sigErr error) {
	row := func(name, format string, args ...any) {
		fmt.Fprintf(w, "%-14s"+format+"\n", append([]any{name}, args...)...)
	}
	row("bundle", "%s", e.BundleID)
	row("format", "%s", e.Format)
	if sigErr == nil {
		row("signature", "valid")
	} else {
		row("signature", "INVALID: %v", sigErr)
	}
	row("sender", "%s", partyName(e.Sender, "signing key"))
	for i, r := range e.Recipients {
		name := "recipient"
		if i > 0 {
			name = ""
		}
		row(name, "%s", partyName(r, "age recipient"))
	}
	row("purpose", "%s", e.Purpose)
	row("legal basis", "%s", e.LegalBasis)
	if e.Case != "" {
		row("case", "%s", e.Case)
	}
	row("handling", "%s", e.Handling)
	row("tlp", "%s", e.TLP)
	row("created", "%s", e.Created.Format("2006-01-02T15:04:05Z"))
	row("retain until", "%s", e.RetainUntil.Format("2006-01-02T15:04:05Z"))
	row("payload", "%d bytes, sha256 %x", e.PayloadSize, e.PayloadSHA256)
}

func partyName(p crypto.Party, keyKind string) string {
	unit := p.Unit
	if unit == "" {
		unit = "(no unit id)"
	}
	return strings.Join([]string{unit, "—", keyKind, shortKey(p.Key)}, " ")
}

// shortKey abbreviates the ~2,000-character post-quantum age recipients for
// human-readable output; --json prints them in full.
func shortKey(k string) string {
	if len(k) <= 64 {
		return k
	}
	return k[:24] + "…" + k[len(k)-12:]
}
