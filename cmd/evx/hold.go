package main

import (
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"

	"evx/api"

	"github.com/spf13/cobra"
)

func newHoldCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "hold place|release|list",
		Short: "Place, release and list legal holds on bundles stored at a gateway",
		Long: `hold works on the legal holds of the gateway of your profile
(docs/retention.md, "Legal hold"). A held bundle, received (inbox) or sent
(outbox), is kept past its retention, and stays readable, until the hold
is released: the gateway does not shred or delete it, and on S3 its stored
objects carry the storage's legal hold too. Only the units that the
gateway's configuration names (retention.hold_units) place and release
holds; they and operators list them. Each hold placed or released is
written to the transfer log with its reason, reference and your identity.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return usagef("hold needs a subcommand: place, release or list")
		},
	}
	cmd.AddCommand(newHoldPlaceCmd(), newHoldReleaseCmd(), newHoldListCmd())
	return cmd
}

// holdExits documents the exit codes of the hold commands; %s lists the
// refusals of the one at hand.
const holdExits = `Exit codes: 0 done; 2 bad usage; 3 refused by the gateway, with its code:
%s, or forbidden (the profile's unit may not); 4 the gateway cannot be
reached or cannot serve for now; 1 any other failure.`

func newHoldPlaceCmd() *cobra.Command {
	var profile, reason, ref string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "place ID --reason TEXT --ref REF [--profile P] [--json]",
		Short: "Place a legal hold on a bundle stored at your gateway",
		Long: `place places a legal hold on bundle ID, received at your gateway or sent
from it: it is kept past its retention until evx hold release. The hold
is kept in the gateway's storage: it outlasts restarts.

--reason (why the bundle is kept, at most ` + strconv.Itoa(api.MaxHoldReason) + ` bytes) and --ref (what the hold
rests on, such as a court order's or a case's reference, at most ` + strconv.Itoa(api.MaxHoldReference) + `
bytes, without leading or trailing spaces) are required, printable text
on one line; both are written to the transfer log.

` + fmt.Sprintf(holdExits, "not-found (no bundle ID at the gateway), expired (its\nkey is destroyed: nothing readable is left to hold), already-held,\nbad-reason, bad-reference"),
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id := args[0]
			if err := checkHoldArgs(id, reason); err != nil {
				return err
			}
			switch {
			case ref == "":
				return usagef("--ref is required: the reference of the court order or case the hold rests on")
			case len(ref) > api.MaxHoldReference:
				return usagef("--ref has %d bytes: want at most %d", len(ref), api.MaxHoldReference)
			case printable(ref) != ref || strings.TrimSpace(ref) != ref:
				return usagef("--ref %q: want printable text, without control characters, line breaks, or leading or trailing spaces", printable(ref))
			}
			c, _, err := loadProfile(profile)
			if err != nil {
				return err
			}
			h, err := c.PlaceHold(cmd.Context(), id, reason, ref)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), h)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "legal hold placed on %s (%s), reference %s, by %s at %s\n", id,
				printable(strings.Join(h.Boxes, ", ")), printable(h.Reference), printable(h.By), formatTime(h.At))
			return nil
		},
	}
	cmd.Flags().StringVar(&profile, "profile", "", "the `FILE` of the profile of a unit that places holds")
	cmd.Flags().StringVar(&reason, "reason", "", "why the bundle is kept (required; logged)")
	cmd.Flags().StringVar(&ref, "ref", "", "the reference of the court order or case the hold rests on (required; logged)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the gateway's answer as JSON")
	return cmd
}

func newHoldReleaseCmd() *cobra.Command {
	var profile, reason string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "release ID --reason TEXT [--profile P] [--json]",
		Short: "Release the legal hold on a bundle",
		Long: `release releases the legal hold on bundle ID: its retention then ends as if
there had been no hold, and a bundle past it is shredded and deleted at
the gateway's next look (retention.reaper_interval). --reason (why the
hold ends, at most ` + strconv.Itoa(api.MaxHoldReason) + ` bytes of printable text) is required and written
to the transfer log.

` + fmt.Sprintf(holdExits, "not-found (no bundle ID at the gateway), not-held,\nbad-reason"),
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id := args[0]
			if err := checkHoldArgs(id, reason); err != nil {
				return err
			}
			c, _, err := loadProfile(profile)
			if err != nil {
				return err
			}
			h, err := c.ReleaseHold(cmd.Context(), id, reason)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), h)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "legal hold on %s released (reference %s, placed by %s at %s)\n", id,
				printable(h.Reference), printable(h.By), formatTime(h.At))
			return nil
		},
	}
	cmd.Flags().StringVar(&profile, "profile", "", "the `FILE` of the profile of a unit that places holds")
	cmd.Flags().StringVar(&reason, "reason", "", "why the hold ends (required; logged)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the gateway's answer as JSON")
	return cmd
}

func newHoldListCmd() *cobra.Command {
	var profile string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "list [--profile P] [--json]",
		Short: "List the legal holds placed at your gateway",
		Long: `list prints the legal holds placed at the gateway of your profile (an
operator's, or a unit's that places holds), oldest first: each bundle,
whether the gateway received it (inbox) or sent it (outbox), the hold's
reference, who placed it and when, and why.

` + fmt.Sprintf(holdExits, "none other"),
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := loadProfile(profile)
			if err != nil {
				return err
			}
			l, err := c.Holds(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), l)
			}
			if len(l.Holds) == 0 {
				fmt.Fprintf(cmd.OutOrStdout(), "no legal holds at gateway %s\n", printable(l.Gateway))
				return nil
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "BUNDLE\tBOX\tREFERENCE\tBY\tSINCE\tREASON")
			for _, h := range l.Holds {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", printable(h.BundleID), printable(strings.Join(h.Boxes, ",")),
					printable(h.Reference), printable(h.By), formatTime(h.At), printable(h.Reason))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if l.Truncated {
				fmt.Fprintf(cmd.ErrOrStderr(), "the first %d holds are shown; there are more\n", len(l.Holds))
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&profile, "profile", "", "the `FILE` of an operator's profile, or of a unit's that places holds")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the gateway's answer as JSON")
	return cmd
}

// checkHoldArgs checks a bundle id and a hold's reason as the gateway
// will, so that a mistake is a usage error rather than a refusal.
func checkHoldArgs(id, reason string) error {
	switch {
	case !validBundleIDArg(id):
		return usagef("%q is not a bundle id: want the 32 lowercase hex digits that evx push and evx inbox print", printable(id))
	case strings.TrimSpace(reason) == "":
		return usagef("--reason is required: it is written to the transfer log")
	case len(reason) > api.MaxHoldReason:
		return usagef("--reason has %d bytes: want at most %d", len(reason), api.MaxHoldReason)
	case printable(reason) != reason:
		return usagef("--reason %q: want printable text, without control characters or line breaks", printable(reason))
	}
	return nil
}

// validBundleIDArg reports whether id is a bundle id: 32 lowercase hex
// digits, as crypto.NewBundleID makes them.
func validBundleIDArg(id string) bool {
	return len(id) == 32 && strings.Trim(id, "0123456789abcdef") == ""
}
