package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"evx/api"
	"evx/client"
	"evx/crypto"
	"evx/internal/devenv"

	"github.com/spf13/cobra"
)

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func newPushCmd() *cobra.Command {
	var (
		profile        string
		to             []string
		ef             envelopeFlags
		asJSON, noWait bool
		wait           time.Duration
	)
	cmd := &cobra.Command{
		Use:   "push --profile P --to COUNTRY/unit --purpose P --legal-basis REF FILES_OR_DIRS...",
		Short: "Seal files on this machine and submit the bundle to your gateway",
		Long: `push resolves each recipient through your gateway's directory, seals the
files here (plaintext never leaves this machine), uploads the bundle, and
waits until the peer gateway has receipted it. It prints the bundle id.

While push waits, your gateway forwards the upload to the peer gateway as
it arrives, without keeping a copy, and the upload ends with the peer's
receipt. If the peer cannot be reached, your gateway stores the bundle and
delivers it later; push then waits up to --wait for that delivery, and the
bundle stays queued at your gateway if it is not over by then. With
--no-wait push returns once your gateway has stored the bundle.

` + vocabularyHelp(),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(to) == 0 {
				return errors.New("at least one --to recipient is required")
			}
			if err := ef.required(); err != nil {
				return err
			}
			if len(args) == 0 {
				return errors.New("no files to push")
			}
			opts, err := ef.options()
			if err != nil {
				return err
			}
			c, key, err := loadProfile(profile)
			if err != nil {
				return err
			}
			files, err := crypto.CollectFiles(args)
			if err != nil {
				return err
			}
			bar := &stagedProgress{stderr: cmd.ErrOrStderr()}
			req := client.PushRequest{
				Key: key, To: to, Files: files,
				Seal: opts, Progress: bar.set,
			}
			if !noWait {
				req.Wait = wait
			}
			res, err := client.Push(cmd.Context(), c, req)
			bar.finish()
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), map[string]any{
					"bundle_id": res.Envelope.BundleID, "state": res.Status.State, "receipt": res.Status.Receipt,
				})
			}
			fmt.Fprintln(cmd.OutOrStdout(), res.Envelope.BundleID)
			if res.Status.State == api.StateDelivered {
				fmt.Fprintf(cmd.ErrOrStderr(), "delivered to %s; receipt: %s\n", res.Status.Peer, res.Status.Receipt.Body)
			} else {
				fmt.Fprintf(cmd.ErrOrStderr(), "queued at your gateway for delivery\n")
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&profile, "profile", "", "profile `FILE` (gateway URL, certificate, unit key)")
	f.StringArrayVar(&to, "to", nil, "recipient unit, such as FR/prosecutor (repeatable)")
	ef.register(f)
	f.BoolVar(&asJSON, "json", false, "print JSON")
	f.BoolVar(&noWait, "no-wait", false, "return once the gateway has stored the bundle, before delivery")
	f.DurationVar(&wait, "wait", 2*time.Minute, "how long to wait for a delivery your gateway queued")
	return cmd
}

func newInboxCmd() *cobra.Command {
	var profile string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "inbox --profile P [--json]",
		Short: "List the bundles addressed to you",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := loadProfile(profile)
			if err != nil {
				return err
			}
			list, err := c.Inbox(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), list)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "BUNDLE\tFROM\tPURPOSE\tLEGAL BASIS\tSIZE\tRECEIVED\tRETRIEVED")
			for _, e := range list {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%v\n", e.BundleID, e.Sender, e.Purpose, e.LegalBasis,
					e.Size, e.ReceivedAt.Format(time.RFC3339), e.Acknowledged)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVar(&profile, "profile", "", "profile `FILE`")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func newPullCmd() *cobra.Command {
	var profile, out, keep string
	cmd := &cobra.Command{
		Use:   "pull --profile P BUNDLE_ID -o DIR [--keep-bundle FILE]",
		Short: "Download, verify and open a bundle addressed to you",
		Long: `pull downloads a bundle from your gateway, rebuilds it, verifies and opens
it on this machine into DIR (as evx open does), and then acknowledges
retrieval to the gateway.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" {
				return errors.New("-o is required")
			}
			c, key, err := loadProfile(profile)
			if err != nil {
				return err
			}
			e, err := c.InboxEntry(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			bar := newProgress(cmd.ErrOrStderr(), e.Size, "downloading")
			res, err := client.Pull(cmd.Context(), c, key, args[0], out, keep, bar.set)
			bar.finish()
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "bundle        %s from gateway %s, received %s\n", e.BundleID, e.From, e.ReceivedAt.Format(time.RFC3339))
			fmt.Fprintf(w, "sender check  %s\n", res.Entry.SenderCheck)
			fmt.Fprintf(w, "              and here: the signing key is the one %s's directory lists for %s\n", e.From, e.Sender)
			printOpenSummary(w, res.Open, res.SenderPinned, out)
			if res.BundlePath != "" {
				fmt.Fprintf(w, "bundle kept   %s\n", res.BundlePath)
			}
			fmt.Fprintf(w, "retrieval acknowledged to the gateway\n")
			return nil
		},
	}
	cmd.Flags().StringVar(&profile, "profile", "", "profile `FILE`")
	cmd.Flags().StringVarP(&out, "output", "o", "", "extract into `DIR` (must not exist or be empty)")
	cmd.Flags().StringVar(&keep, "keep-bundle", "", "also keep the bundle itself at `FILE`")
	return cmd
}

func newDevEnvCmd() *cobra.Command {
	var dir, s3 string
	cmd := &cobra.Command{
		Use:   "dev-env --dir D [--s3 http://127.0.0.1:9000]",
		Short: "Write a complete two-country (DE, FR) set-up for development",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if dir == "" {
				return errors.New("--dir is required")
			}
			if entries, err := os.ReadDir(dir); err == nil && len(entries) > 0 {
				return fmt.Errorf("%q is not empty", dir)
			}
			var devS3 *devenv.S3
			if s3 != "" {
				var err error
				if devS3, err = parseDevS3(s3); err != nil {
					return err
				}
			}
			w, err := devenv.New("DE", "FR")
			if err != nil {
				return err
			}
			if err := w.WriteFiles(dir, devS3); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), `Wrote a DE and FR set-up under %[1]s. Start both gateways:

  evx gateway --config %[1]s/DE/gateway.yaml &
  evx gateway --config %[1]s/FR/gateway.yaml &

Push a first bundle from DE's forensic unit to FR's prosecutor, and pull it:

  evx push --profile %[1]s/DE/forensics/profile.yaml --to FR/prosecutor \
      --purpose mutual-legal-assistance --legal-basis "EIO 2026/17" FILES...
  evx inbox --profile %[1]s/FR/prosecutor/profile.yaml
  evx pull --profile %[1]s/FR/prosecutor/profile.yaml BUNDLE_ID -o evidence
`, dir)
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "write the set-up under `DIR`")
	cmd.Flags().StringVar(&s3, "s3", "", "store bundles in S3 at `URL` (credentials from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)")
	return cmd
}
