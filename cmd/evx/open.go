package main

import (
	"fmt"
	"io"
	"strings"

	"evx/crypto"

	"github.com/spf13/cobra"
)

func newOpenCmd() *cobra.Command {
	var keyFile, out, expect, only string
	var allowExposed, asJSON bool
	cmd := &cobra.Command{
		Use:   "open BUNDLE.evx --key RECIPIENT.key -o DIR [--expect-sender KEY] [--only PATH]",
		Short: "Verify, decrypt and extract a bundle",
		Long: `open checks the envelope signature (and the expected sender, if given),
decrypts the payload, checks every file against the manifest, and extracts
the files into DIR, which must not exist or be empty. On any failure it
names the failing check and leaves nothing in DIR.

--expect-sender takes a signing key (ed25519:…) or @FILE holding a public key
from evx keygen -y. --only extracts a single file, reading only the parts of
the payload that hold it.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			switch {
			case keyFile == "":
				return usagef("--key is required")
			case out == "":
				return usagef("-o is required")
			}
			key, err := readUnitKey(keyFile, "--key", allowExposed, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			if name, ok := strings.CutPrefix(expect, "@"); ok {
				p, err := crypto.ReadPublicKeyFile(name)
				if err != nil {
					return fmt.Errorf("--expect-sender %s: %w", expect, err)
				}
				if p.SigningKey == "" {
					return fmt.Errorf("--expect-sender %s: no signing key in that file", expect)
				}
				expect = p.SigningKey
			} else if expect != "" {
				if _, err := crypto.ParseSigningKey(expect); err != nil {
					return usagef("--expect-sender: %v", err)
				}
			}
			b, f, err := crypto.OpenBundleFile(args[0])
			if err != nil {
				return err
			}
			defer f.Close()
			// The payload size slightly exceeds the files' total; the bar
			// only needs to show that long work is moving.
			bar := newProgress(cmd.ErrOrStderr(), b.Envelope.PayloadSize, "opening")
			res, err := b.Open(cmd.Context(), key, out, crypto.OpenOptions{ExpectSender: expect, Only: only, Progress: bar.set})
			bar.finish()
			if err != nil {
				return fmt.Errorf("open failed: %w", err)
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), openJSON(res, expect != "", out))
			}
			printOpenSummary(cmd.OutOrStdout(), res, expect != "", out)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&keyFile, "key", "", "recipient's unit key `FILE`")
	f.StringVarP(&out, "output", "o", "", "extract into `DIR` (must not exist or be empty)")
	f.StringVar(&expect, "expect-sender", "", "require this sender signing `KEY` (or @FILE)")
	f.StringVar(&only, "only", "", "extract only the file at `PATH` inside the bundle")
	registerAllowExposed(f, &allowExposed)
	f.BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// openJSON is what open --json prints: the keys of pull --json that open
// has too.
func openJSON(res *crypto.OpenResult, senderPinned bool, dir string) map[string]any {
	env := res.Envelope
	files := []map[string]any{}
	for _, f := range res.Files {
		files = append(files, map[string]any{"path": f.Path, "size": f.Size, "sha256": f.SHA256})
	}
	return map[string]any{
		"bundle_id": env.BundleID, "sender": env.Sender.Unit, "signing_key": env.Sender.Key, "sender_pinned": senderPinned,
		"purpose": env.Purpose, "legal_basis": env.LegalBasis, "case": env.Case, "handling": env.Handling,
		"tlp": env.TLP, "retain_until": env.RetainUntil, "payload_size": env.PayloadSize,
		"payload_verified": res.PayloadVerified, "files": files, "output": dir,
	}
}

func printOpenSummary(w io.Writer, res *crypto.OpenResult, senderPinned bool, dir string) {
	e := res.Envelope
	sender := partyName(e.Sender, "signing key")
	if senderPinned {
		sender += " (the expected sender)"
	}
	fmt.Fprintf(w, "signature     valid, sealed by %s\n", sender)
	fmt.Fprintf(w, "purpose       %s; legal basis: %s\n", e.Purpose, e.LegalBasis)
	fmt.Fprintf(w, "handling      %s, %s; retain until %s\n", e.Handling, e.TLP, e.RetainUntil.Format("2006-01-02T15:04:05Z"))
	if res.PayloadVerified {
		fmt.Fprintf(w, "payload       %d bytes, SHA-256 matches the envelope\n", e.PayloadSize)
	} else {
		fmt.Fprintf(w, "payload       read with random access; manifest matches the signed digest\n")
	}
	var total int64
	for _, f := range res.Files {
		total += f.Size
	}
	fmt.Fprintf(w, "files         %s, %d bytes, every SHA-256 verified\n", plural(len(res.Files), "file"), total)
	fmt.Fprint(w, crypto.ManifestSummary(res.Files))
	fmt.Fprintf(w, "extracted into %s\n", dir)
}
