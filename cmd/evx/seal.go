package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"evx/crypto"

	"github.com/spf13/cobra"
)

func newSealCmd() *cobra.Command {
	var (
		keyFile, out string
		to           []string
		ef           envelopeFlags
		allowExposed bool
		asJSON       bool
	)
	cmd := &cobra.Command{
		Use:   "seal --key SENDER.key --to RECIPIENT... --purpose P --legal-basis REF -o BUNDLE.evx FILES_OR_DIRS...",
		Short: "Seal evidence files into a signed, encrypted bundle",
		Long: `seal archives the files, encrypts them to every recipient (an age1pq1…
recipient, or @FILE holding one or a public key from evx keygen -y), and
writes a bundle whose envelope is signed with the sender's key.

` + vocabularyHelp(),
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			switch {
			case keyFile == "":
				return usagef("--key is required")
			case len(to) == 0:
				return usagef("at least one --to recipient is required")
			}
			if err := ef.required(); err != nil {
				return err
			}
			switch {
			case out == "":
				return usagef("-o is required")
			case len(args) == 0:
				return usagef("no files to seal")
			}
			opts, err := ef.options()
			if err != nil {
				return err
			}
			key, err := readUnitKey(keyFile, "--key", allowExposed, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			var recipients []crypto.PublicKey
			for _, r := range to {
				p, err := readRecipient(r)
				if err != nil {
					return err
				}
				recipients = append(recipients, p)
			}
			files, err := crypto.CollectFiles(args)
			if err != nil {
				return err
			}
			if _, err := os.Lstat(out); err == nil {
				return fmt.Errorf("%q already exists; not overwriting it", out)
			}
			var total int64
			for _, f := range files {
				total += f.Size
			}
			bar := newProgress(cmd.ErrOrStderr(), total, "sealing")
			opts.Sender, opts.Recipients, opts.Progress = key, recipients, bar.set
			env, err := sealToFile(cmd, out, files, opts)
			bar.finish()
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), map[string]any{
					"bundle_id": env.BundleID, "output": out, "files": len(files), "size": total,
					"payload_size": env.PayloadSize, "retain_until": env.RetainUntil,
				})
			}
			fmt.Fprintf(cmd.OutOrStdout(), "sealed %s (%d bytes) into %s\nbundle %s, payload %d bytes, retain until %s\n",
				plural(len(files), "file"), total, out, env.BundleID, env.PayloadSize, env.RetainUntil.Format("2006-01-02T15:04:05Z"))
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&keyFile, "key", "", "sender's unit key `FILE`")
	f.StringArrayVar(&to, "to", nil, "recipient: an age1pq1… string or @FILE (repeatable)")
	ef.register(f)
	f.StringVarP(&out, "output", "o", "", "write the bundle to `FILE` (never overwritten)")
	registerAllowExposed(f, &allowExposed)
	f.BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// readRecipient resolves a --to value: an age1pq1… string, or @FILE.
func readRecipient(arg string) (crypto.PublicKey, error) {
	name, isFile := strings.CutPrefix(arg, "@")
	if !isFile {
		if _, err := crypto.ParseRecipient(arg); err != nil {
			return crypto.PublicKey{}, usage(err)
		}
		return crypto.PublicKey{AgeRecipient: arg}, nil
	}
	p, err := crypto.ReadPublicKeyFile(name)
	if err != nil {
		return crypto.PublicKey{}, fmt.Errorf("recipient %s: %w", arg, err)
	}
	return p, nil
}

// sealToFile seals into a temporary file beside out and links it into place
// only when complete, so that an interrupted seal leaves nothing at out and
// an existing file is never replaced.
func sealToFile(cmd *cobra.Command, out string, files []crypto.SourceFile, opts crypto.SealOptions) (*crypto.Envelope, error) {
	tmp, err := os.CreateTemp(filepath.Dir(out), ".evx-seal-*")
	if err != nil {
		return nil, err
	}
	defer os.Remove(tmp.Name())
	env, err := crypto.Seal(cmd.Context(), tmp, files, opts)
	if err == nil {
		err = tmp.Sync()
	}
	if errClose := tmp.Close(); err == nil {
		err = errClose
	}
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return nil, err
	}
	if err := os.Link(tmp.Name(), out); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("%q already exists; not overwriting it", out)
		}
		return nil, err
	}
	return env, nil
}

// plural returns "1 file" or "n files".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
