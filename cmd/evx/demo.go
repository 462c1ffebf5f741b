package main

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"evx/crypto"

	"github.com/spf13/cobra"
)

func newDemoCmd() *cobra.Command {
	var keep bool
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run a self-contained keygen → seal → inspect → open round trip",
		Long: `demo shows evx's main job on generated sample data, in a temporary
directory: a forensic unit in DE seals evidence for a prosecutor in FR, the
bundle is inspected without any secret key, and the prosecutor opens it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			dir, err := os.MkdirTemp("", "evx-demo-*")
			if err != nil {
				return err
			}
			if keep {
				fmt.Fprintf(cmd.OutOrStdout(), "working in %s (kept)\n", dir)
			} else {
				defer os.RemoveAll(dir)
			}
			return runDemo(cmd, dir)
		},
	}
	cmd.Flags().BoolVar(&keep, "keep", false, "keep the temporary directory and print its path")
	return cmd
}

func runDemo(cmd *cobra.Command, dir string) error {
	w := cmd.OutOrStdout()
	step := 0
	timed := func(title string, f func() (string, error)) error {
		step++
		start := time.Now()
		detail, err := f()
		if err != nil {
			return fmt.Errorf("step %d (%s): %w", step, title, err)
		}
		fmt.Fprintf(w, "%d. %-50s %8s\n", step, title, time.Since(start).Round(100*time.Microsecond))
		if detail != "" {
			fmt.Fprintf(w, "%s", indent(detail))
		}
		return nil
	}

	var sender, recipient *crypto.UnitKey
	if err := timed("keygen: unit keys for DE/forensics and FR/prosecutor", func() (string, error) {
		var err error
		if sender, err = crypto.GenerateUnitKey("DE/forensics"); err != nil {
			return "", err
		}
		if recipient, err = crypto.GenerateUnitKey("FR/prosecutor"); err != nil {
			return "", err
		}
		for name, k := range map[string]*crypto.UnitKey{"de-forensics.key": sender, "fr-prosecutor.key": recipient} {
			text, _ := k.MarshalText()
			if err := writeNewFile(filepath.Join(dir, name), text, 0o600); err != nil {
				return "", err
			}
		}
		return fmt.Sprintf("FR/prosecutor recipient %.40s…\nDE/forensics signing key %s\n",
			recipient.Recipient().String(), crypto.FormatSigningKey(sender.SigningPublicKey())), nil
	}); err != nil {
		return err
	}

	evidence := filepath.Join(dir, "case-4711")
	if err := timed("write sample evidence (3 files, 8 MiB)", func() (string, error) {
		return "", writeSampleEvidence(evidence)
	}); err != nil {
		return err
	}

	bundle := filepath.Join(dir, "case-4711.evx")
	var env *crypto.Envelope
	if err := timed("seal: DE/forensics → FR/prosecutor", func() (string, error) {
		files, err := crypto.CollectFiles([]string{evidence})
		if err != nil {
			return "", err
		}
		env, err = sealToFile(cmd, bundle, files, crypto.SealOptions{
			Sender:     sender,
			Recipients: []crypto.PublicKey{recipient.Public()},
			Purpose:    "mutual-legal-assistance",
			Handling:   "H2",
			TLP:        "TLP:AMBER",
			LegalBasis: "MLA request FR-2026-0042 (EU 2014/41 EIO)",
			Case:       "case-4711",
			Retain:     90 * 24 * time.Hour,
		})
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("bundle %s, %d bytes\n", env.BundleID, env.PayloadSize), nil
	}); err != nil {
		return err
	}

	if err := timed("inspect: the envelope, without any secret key", func() (string, error) {
		b, f, err := crypto.OpenBundleFile(bundle)
		if err != nil {
			return "", err
		}
		defer f.Close()
		var buf bytes.Buffer
		printEnvelope(&buf, b.Envelope, b.VerifySignature())
		return buf.String(), b.VerifySignature()
	}); err != nil {
		return err
	}

	out := filepath.Join(dir, "opened")
	return timed("open: verify, decrypt and extract at FR/prosecutor", func() (string, error) {
		b, f, err := crypto.OpenBundleFile(bundle)
		if err != nil {
			return "", err
		}
		defer f.Close()
		res, err := b.Open(cmd.Context(), recipient, out, crypto.OpenOptions{
			ExpectSender: crypto.FormatSigningKey(sender.SigningPublicKey()),
		})
		if err != nil {
			return "", err
		}
		var buf bytes.Buffer
		printOpenSummary(&buf, res, true, out)
		return buf.String(), compareTrees(evidence, out+"/case-4711")
	})
}

func indent(s string) string {
	var b bytes.Buffer
	for _, line := range bytes.SplitAfter([]byte(s), []byte("\n")) {
		if len(line) > 0 {
			b.WriteString("     ")
			b.Write(line)
		}
	}
	return b.String()
}

func writeSampleEvidence(dir string) error {
	if err := os.MkdirAll(filepath.Join(dir, "chat-export"), 0o755); err != nil {
		return err
	}
	img := make([]byte, 8<<20)
	rand.Read(img)
	files := map[string][]byte{
		"disk-image.raw":           img,
		"chat-export/messages.txt": []byte("2026-11-02 21:14 alice: the files are on the usual server\n"),
		"notes.txt":                []byte("Seized 2026-11-03, chain of custody form 17.\n"),
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// compareTrees checks that every file under want has identical content under got.
func compareTrees(want, got string) error {
	return filepath.Walk(want, func(p string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(want, p)
		a, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		b, err := os.ReadFile(filepath.Join(got, rel))
		if err != nil {
			return err
		}
		if !bytes.Equal(a, b) {
			return fmt.Errorf("extracted %s differs from the original", rel)
		}
		return nil
	})
}
