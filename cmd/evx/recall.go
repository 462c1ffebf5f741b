package main

import (
	"fmt"
	"io"
	"strconv"
	"time"

	"evx/api"
	"evx/client"
	"evx/crypto"

	"github.com/spf13/cobra"
)

func newRecallCmd() *cobra.Command {
	var profile, keyFile, retainUntil, shortenTo, reason string
	var asJSON, allowExposed bool
	cmd := &cobra.Command{
		Use:   "recall ID [--profile P] [--key UNITKEY] [--retain-until DATE | --shorten-to PERIOD] [--reason TEXT] [--json]",
		Short: "Recall a bundle you pushed, or shorten its retention, at the gateway that received it",
		Long: `recall asks the gateway that received bundle ID to end its retention now
(a recall: the bundle can no longer be read there, and is then shredded
and deleted), or, with --retain-until or --shorten-to, at an earlier date
than its envelope says (docs/retention.md, "Recall and shortening"). A
retention is only ever shortened.

The request is signed here with your unit key (--key, else the profile's
unit_key): it must be the key that sealed the bundle, so that no one else,
your gateway included, can recall it. Your gateway checks it and forwards
it; the receiving gateway checks it again, applies it unless a legal hold
there prevents it, and answers with a signed acknowledgement, which is
checked here against its signing key and printed. Both gateways write the
recall and its outcome to their transfer logs.

--retain-until DATE: the new end of the retention, RFC 3339
(2026-12-31T18:00:00Z) or a day (2026-12-31, at 00:00 UTC).
--shorten-to PERIOD: the new retention, counted from the bundle's creation
as evx push --retain counts it (weeks, days, hours, minutes or seconds:
12w, 30d, 36h, 10m, 30s).
--reason TEXT: why, at most 256 bytes of printable text, sent to the
receiving gateway with the request.

Exit codes: 0 applied; 3 not applied (the acknowledgement's code:
legal-hold, not-shorter, expired), or refused by either gateway; 2 bad
usage; 4 a gateway cannot be reached or cannot serve for now; 5 the
acknowledgement does not verify; 1 any other failure.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id := args[0]
			if !client.ValidBundleID(id) {
				return usagef("malformed bundle id %q (want 32 lowercase hex digits)", printable(id))
			}
			if retainUntil != "" && shortenTo != "" {
				return usagef("--retain-until and --shorten-to both give the new end of the retention: give one")
			}
			var until time.Time
			var period time.Duration
			var err error
			if retainUntil != "" {
				if until, err = parseRetainUntil(retainUntil); err != nil {
					return usage(err)
				}
			}
			if shortenTo != "" {
				if period, err = crypto.ParseRetention(shortenTo); err != nil {
					return usagef("--shorten-to: %v", err)
				}
			}
			if len(reason) > maxRecallReason || printable(reason) != reason {
				return usagef("--reason: want printable text of at most %d bytes, on one line", maxRecallReason)
			}
			c, key, err := loadProfileFrom(profile, allowExposed, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			if keyFile != "" {
				if key, err = readUnitKey(keyFile, "--key", allowExposed, cmd.ErrOrStderr()); err != nil {
					return err
				}
			}
			if period > 0 {
				st, err := c.RecallStatus(cmd.Context(), id)
				if err != nil {
					return err
				}
				env, err := crypto.ParseEnvelope(st.Envelope)
				if err != nil {
					return fmt.Errorf("%w: the envelope of bundle %s: %v", client.ErrBadAnswer, id, err)
				}
				until = env.Created.Add(period)
				if !until.After(time.Now()) {
					return usagef("a retention of %s from the bundle's creation (%s) has ended already: to end it now, recall it without --shorten-to",
						shortenTo, formatTime(env.Created))
				}
			}
			a, err := c.Recall(cmd.Context(), key, id, until, reason)
			if err != nil {
				return err
			}
			if asJSON {
				if err := printJSON(cmd.OutOrStdout(), a); err != nil {
					return err
				}
			} else {
				printRecall(cmd.OutOrStdout(), a)
			}
			if !a.Applied {
				return &recallDeclined{a}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&profile, "profile", "", "the `FILE` of the profile of the unit that pushed the bundle")
	f.StringVar(&keyFile, "key", "", "the unit key `FILE` that sealed the bundle (default: the profile's unit_key)")
	f.StringVar(&retainUntil, "retain-until", "", "end the retention at `DATE` (RFC 3339, or YYYY-MM-DD) instead of now")
	f.StringVar(&shortenTo, "shorten-to", "", "shorten the retention to `PERIOD` from the bundle's creation (12w, 30d, 36h, 10m, 30s) instead of ending it now")
	f.StringVar(&reason, "reason", "", "why, sent with the request (at most "+strconv.Itoa(maxRecallReason)+" bytes)")
	f.BoolVar(&asJSON, "json", false, "print the answer as JSON, with the signed request and acknowledgement")
	registerAllowExposed(f, &allowExposed)
	return cmd
}

// maxRecallReason is the most a request's reason may have
// (crypto.RecallRequest).
const maxRecallReason = 256

// parseRetainUntil parses --retain-until: RFC 3339, or a day at midnight
// UTC.
func parseRetainUntil(s string) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("--retain-until %q: want RFC 3339 (2026-12-31T18:00:00Z) or a day (2026-12-31)", printable(s))
}

// printRecall prints the answer to a recall.
func printRecall(w io.Writer, a *api.Recall) {
	if a.Applied {
		fmt.Fprintf(w, "recall of %s applied by %s: its retention there ends at %s\n", a.BundleID, printable(a.Peer), formatTime(a.RetainUntil))
	} else {
		fmt.Fprintf(w, "recall of %s not applied by %s (%s): %s\n", a.BundleID, printable(a.Peer), printable(a.Code), printable(a.Reason))
		fmt.Fprintf(w, "its retention there still ends at %s\n", formatTime(a.RetainUntil))
	}
	fmt.Fprintf(w, "acknowledged by %s at %s, signed with its gateway key\n", printable(a.Peer), formatTime(a.At))
}

// recallDeclined is a recall the receiving gateway did not apply: evx
// exits 3 with the acknowledgement's code.
type recallDeclined struct{ a *api.Recall }

func (e *recallDeclined) Error() string {
	return fmt.Sprintf("%s did not apply the recall of %s (%s)", printable(e.a.Peer), e.a.BundleID, printable(e.a.Code))
}

func (e *recallDeclined) RefusalCode() string { return printable(e.a.Code) }
