package main

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"evx/crypto"

	"github.com/spf13/cobra"
)

func newKeygenCmd() *cobra.Command {
	var out, unit, public string
	var asJSON, master bool
	cmd := &cobra.Command{
		Use:   "keygen [-o FILE [--json]] [--unit ID] | keygen -y FILE [--json] | keygen --master -o FILE",
		Short: "Make a unit key, or print the public half of one",
		Long: `keygen writes a new unit key: a post-quantum hybrid age identity
(ML-KEM-768 + X25519) and an Ed25519 signing key. The file is readable by
the stock age CLI (age -d -i FILE). With -y it prints the public half.
With --master it writes a gateway's master key instead (retention.master_key
in the gateway's configuration; docs/retention.md).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if master {
				if out == "" || public != "" || unit != "" || asJSON {
					return usagef("--master needs -o FILE, and takes no other flag")
				}
				var b bytes.Buffer
				if err := crypto.GenerateMasterKey(&b); err != nil {
					return err
				}
				return writeNewFile(out, b.Bytes(), 0o600)
			}
			if public != "" {
				if out != "" || unit != "" {
					return usagef("-y cannot be combined with -o or --unit")
				}
				k, err := crypto.ReadUnitKeyFile(public)
				if err != nil {
					return err
				}
				return printPublicKey(cmd, k.Public(), asJSON)
			}
			if asJSON && out == "" {
				return usagef("--json needs -o FILE: without it the key itself is written to standard output")
			}
			k, err := crypto.GenerateUnitKey(unit)
			if err != nil {
				if unit != "" && !crypto.ValidUnitID(unit) {
					return usage(err)
				}
				return err
			}
			text, _ := k.MarshalText()
			if out == "" {
				_, err := cmd.OutOrStdout().Write(text)
				return err
			}
			if err := writeNewFile(out, text, 0o600); err != nil {
				return err
			}
			if asJSON {
				// The public half, as keygen -y --json prints it, and
				// where the key was written.
				pub := k.Public()
				return printJSON(cmd.OutOrStdout(), struct {
					Unit         string `json:"unit,omitempty"`
					AgeRecipient string `json:"age_recipient"`
					SigningKey   string `json:"signing_key"`
					File         string `json:"file"`
				}{pub.Unit, pub.AgeRecipient, pub.SigningKey, out})
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "Public key: %s\nSigning key: %s\n", k.Recipient(), crypto.FormatSigningKey(k.SigningPublicKey()))
			return nil
		},
	}
	cmd.Flags().StringVarP(&out, "output", "o", "", "write the key to `FILE` (mode 0600; never overwritten)")
	cmd.Flags().StringVar(&unit, "unit", "", "unit `ID` recorded in the key, such as DE/forensics")
	cmd.Flags().StringVarP(&public, "public", "y", "", "print the public half of key `FILE`")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the public half as JSON (with -y, or with -o)")
	cmd.Flags().BoolVar(&master, "master", false, "write a gateway master key (with -o) instead of a unit key")
	return cmd
}

func printPublicKey(cmd *cobra.Command, p crypto.PublicKey, asJSON bool) error {
	if asJSON {
		return printJSON(cmd.OutOrStdout(), p)
	}
	text, _ := p.MarshalText()
	_, err := cmd.OutOrStdout().Write(text)
	return err
}

// writeNewFile writes data to a new file at path, refusing to replace one.
func writeNewFile(path string, data []byte, perm fs.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("%q already exists; not overwriting it", path)
	}
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(path)
		return err
	}
	return nil
}
