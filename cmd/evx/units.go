package main

import (
	"encoding/json"
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
		profile                      string
		to                           []string
		ef                           envelopeFlags
		asJSON, noWait, allowExposed bool
		wait                         time.Duration
	)
	cmd := &cobra.Command{
		Use:   "push --profile P --to COUNTRY/unit --purpose P --legal-basis REF FILES_OR_DIRS...",
		Short: "Seal files on this machine and submit the bundle to your gateway",
		Long: `push resolves each recipient through your gateway's directory, asks your
gateway whether its agreement with the recipients' country allows the
bundle (purpose, handling code, TLP label, retention, size, rate; a refusal
ends push before anything is sealed), seals the files here (plaintext never
leaves this machine), uploads the bundle, and waits until the peer gateway
has receipted it. It prints the bundle id.

While push waits, your gateway forwards the upload to the peer gateway as
it arrives, without keeping a copy, and the upload ends with the peer's
receipt. If the peer cannot be reached, your gateway stores the bundle and
delivers it later; push then waits up to --wait for that delivery, and the
bundle stays queued at your gateway if it is not over by then. With
--no-wait push returns once your gateway has stored the bundle.

` + vocabularyHelp(),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(to) == 0 {
				return usagef("at least one --to recipient is required")
			}
			for _, unit := range to {
				if !crypto.ValidUnitID(unit) {
					return usagef("--to %q: want COUNTRY/unit, such as FR/prosecutor", printable(unit))
				}
			}
			if _, err := client.RecipientCountry(to); err != nil {
				return usage(err)
			}
			if err := ef.required(); err != nil {
				return err
			}
			if len(args) == 0 {
				return usagef("no files to push")
			}
			opts, err := ef.options()
			if err != nil {
				return err
			}
			c, key, err := loadProfileFrom(profile, allowExposed, cmd.ErrOrStderr())
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
			if res == nil {
				return err // nothing reached the gateway
			}
			// The gateway has the bundle: its id is printed whatever
			// happened after the upload, so that it can be followed.
			return printPushed(cmd, res, profile, noWait, wait, asJSON, err)
		},
	}
	f := cmd.Flags()
	f.StringVar(&profile, "profile", "", "profile `FILE` (gateway URL, certificate, unit key)")
	f.StringArrayVar(&to, "to", nil, "recipient unit, such as FR/prosecutor (repeatable)")
	ef.register(f)
	f.BoolVar(&asJSON, "json", false, "print JSON")
	f.BoolVar(&noWait, "no-wait", false, "return once the gateway has stored the bundle, before delivery")
	f.DurationVar(&wait, "wait", 2*time.Minute, "how long to wait for a delivery your gateway queued")
	registerAllowExposed(f, &allowExposed)
	return cmd
}

// printPushed reports an uploaded bundle: its id on stdout (or one JSON
// object), and on stderr how its delivery stands and how to follow it. err
// is what went wrong after the upload, returned as it is: a refusal by
// the peer, or a wait broken off. A wait that ran out is not an error: the
// bundle is queued at the gateway, which goes on delivering it.
func printPushed(cmd *cobra.Command, res *client.PushResult, profile string, noWait bool, wait time.Duration, asJSON bool, err error) error {
	id, st := res.Envelope.BundleID, res.Status
	if asJSON {
		if jerr := printJSON(cmd.OutOrStdout(), map[string]any{
			"bundle_id": id, "state": st.State, "peer": st.Peer, "receipt": st.Receipt, "refusal": st.Refusal,
		}); jerr != nil {
			return jerr
		}
	} else {
		fmt.Fprintln(cmd.OutOrStdout(), id)
	}
	stderr := cmd.ErrOrStderr()
	follow := fmt.Sprintf("follow it with: evx status %s --profile %s", id, profile)
	switch {
	case st.State == api.StateDelivered && !asJSON:
		fmt.Fprintf(stderr, "delivered to %s; receipt: %s\n", printable(st.Peer), printable(string(st.Receipt.Body)))
	case st.State != api.StateQueued:
	case noWait:
		fmt.Fprintf(stderr, "queued at your gateway for delivery; %s\n", follow)
	case err == nil:
		fmt.Fprintf(stderr, "not delivered within %v: queued at your gateway; %s\n", wait, follow)
	default:
		fmt.Fprintf(stderr, "queued at your gateway; %s\n", follow)
	}
	return err
}

func newInboxCmd() *cobra.Command {
	var profile string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "inbox --profile P [--json]",
		Short: "List the bundles addressed to you",
		Long: `inbox lists the bundles your gateway received for you, oldest first:
their sender, purpose, legal basis, handling code, TLP label, size, when
your gateway received them, their retain-until, whether you retrieved them,
and where their retention stands: kept (with the time left, by this
machine's clock), held by a legal hold (kept past its retain-until until
the hold is released), or expired (it can no longer be read, and the
gateway is deleting it). evx status ID shows one bundle in full.`,
		Args: cobra.NoArgs,
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
			now := time.Now()
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "BUNDLE\tFROM\tPURPOSE\tLEGAL BASIS\tHANDLING\tTLP\tSIZE\tRECEIVED\tRETAIN UNTIL\tRETRIEVED\tRETENTION")
			for _, e := range list {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%v\t%s\n", printable(e.BundleID), printable(e.Sender),
					printable(e.Purpose), printable(e.LegalBasis), printable(e.Handling), printable(e.TLP),
					e.Size, e.ReceivedAt.UTC().Format(time.RFC3339), e.RetainUntil.UTC().Format(time.RFC3339), e.Acknowledged,
					retentionColumn(e.Retention, now))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVar(&profile, "profile", "", "profile `FILE`")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// retentionColumn says where a received bundle's retention stands, in
// the inbox's last column: "kept, 3h12m left", "held (until T)" or
// "expired". The time left is counted from this machine's clock, now; the
// gateway's decides, so a bundle it still keeps past its retain-until by
// this clock is "kept, expiring".
func retentionColumn(r api.Retention, now time.Time) string {
	switch r.State {
	case api.RetentionHeld:
		return "held (until " + formatTime(r.Until) + ")"
	case api.RetentionExpired:
		return "expired"
	case api.RetentionKept:
		if left := r.Until.Sub(now); left > 0 {
			return "kept, " + formatLeft(left) + " left"
		}
		return "kept, expiring"
	case "":
		return "-" // a gateway older than retention states
	}
	return printable(string(r.State))
}

func newPullCmd() *cobra.Command {
	var profile, out, keep string
	var asJSON, allowExposed bool
	cmd := &cobra.Command{
		Use:   "pull --profile P BUNDLE_ID -o DIR [--keep-bundle FILE] [--json]",
		Short: "Download, verify and open a bundle addressed to you",
		Long: `pull downloads a bundle from your gateway, rebuilds it, verifies and opens
it on this machine into DIR (as evx open does), and then acknowledges
retrieval to the gateway.

Before it downloads anything, pull checks that DIR does not exist or is
empty and that its parent is writable, that the --keep-bundle FILE does not
exist and its directory is writable, and that the gateway's envelope is the
bundle's, validly signed, sealed to your unit key, and signed with the key
that the sender's country's directory lists for the sender.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" {
				return usagef("-o is required")
			}
			c, key, err := loadProfileFrom(profile, allowExposed, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			bar := &stagedProgress{stderr: cmd.ErrOrStderr()}
			res, err := client.Pull(cmd.Context(), c, key, args[0], out, keep, func(done, total int64) {
				bar.set("downloading", done, total)
			})
			bar.finish()
			if res == nil {
				return err
			}
			// Opened; err, if any, is the acknowledgement's failure.
			if asJSON {
				if jerr := printJSON(cmd.OutOrStdout(), pullJSON(res, out, err == nil)); jerr != nil {
					return jerr
				}
				return err
			}
			printPulled(printableWriter{cmd.OutOrStdout()}, res, out, err == nil)
			return err
		},
	}
	cmd.Flags().StringVar(&profile, "profile", "", "profile `FILE`")
	cmd.Flags().StringVarP(&out, "output", "o", "", "extract into `DIR` (must not exist or be empty)")
	cmd.Flags().StringVar(&keep, "keep-bundle", "", "also keep the bundle itself at `FILE` (must not exist)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	registerAllowExposed(cmd.Flags(), &allowExposed)
	return cmd
}

// printPulled reports a pull. What the gateway says (who delivered the
// bundle, when, how it checked the sender) is marked as such; the rest was
// checked here. w makes it printable; values that could hold a line feed
// are made printable one by one too.
func printPulled(w io.Writer, res *client.PullResult, dir string, acked bool) {
	e, env := res.Entry, res.Open.Envelope
	fmt.Fprintf(w, "bundle        %s from gateway %s, received %s\n", env.BundleID, printable(e.From), e.ReceivedAt.UTC().Format(time.RFC3339))
	if env.Case != "" {
		fmt.Fprintf(w, "case          %s\n", printable(env.Case))
	}
	fmt.Fprintf(w, "sender check  %s\n", printable(e.SenderCheck))
	fmt.Fprintf(w, "              and here: %s\n", printable(res.SenderChecked))
	printOpenSummary(w, res.Open, res.SenderPinned, dir)
	switch {
	case res.BundleCopied:
		fmt.Fprintf(w, "bundle kept   %s (copied: a hard link was impossible)\n", res.BundlePath)
	case res.BundlePath != "":
		fmt.Fprintf(w, "bundle kept   %s\n", res.BundlePath)
	}
	if acked {
		fmt.Fprintf(w, "retrieval acknowledged to the gateway\n")
	}
}

// pullJSON is the result object of pull --json.
func pullJSON(res *client.PullResult, dir string, acked bool) map[string]any {
	e, env := res.Entry, res.Open.Envelope
	files := []map[string]any{}
	for _, f := range res.Open.Files {
		files = append(files, map[string]any{"path": f.Path, "size": f.Size, "sha256": f.SHA256})
	}
	return map[string]any{
		"bundle_id": env.BundleID, "from": e.From, "received_at": e.ReceivedAt, "sender_check": e.SenderCheck,
		"sender": env.Sender.Unit, "signing_key": env.Sender.Key, "sender_pinned": res.SenderPinned,
		"purpose": env.Purpose, "legal_basis": env.LegalBasis, "case": env.Case, "handling": env.Handling,
		"tlp": env.TLP, "retain_until": env.RetainUntil, "payload_size": env.PayloadSize,
		"payload_verified": res.Open.PayloadVerified, "files": files, "output": dir,
		"bundle_kept": res.BundlePath, "bundle_copied": res.BundleCopied, "acknowledged": acked,
	}
}

func newDevEnvCmd() *cobra.Command {
	var dir, s3 string
	cmd := &cobra.Command{
		Use:   "dev-env --dir D [--s3 http://127.0.0.1:9000]",
		Short: "Write a complete two-country (DE, FR) set-up for development",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if dir == "" {
				return usagef("--dir is required")
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
