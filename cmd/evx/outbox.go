package main

import (
	"fmt"
	"text/tabwriter"

	"evx/api"

	"github.com/spf13/cobra"
)

func newOutboxCmd() *cobra.Command {
	var profile, state string
	var limit int
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "outbox [--profile P] [--state queued|delivered|refused] [--limit N] [--json]",
		Short: "List the bundles you pushed, or, for an operator, the gateway's queue",
		Long: `outbox lists, newest first, the bundles you submitted to your gateway with
their delivery states; an operator sees every bundle submitted there.
--state shows only bundles in one state, such as queued; --limit bounds the
list (from 1 to 1000, 100 by default), and a note on stderr says when there
are more.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if state != "" && !api.State(state).Valid() {
				return usagef("--state %q: want queued, delivered or refused", printable(state))
			}
			if limit < 1 || limit > api.MaxOutboxLimit {
				return usagef("--limit %d: want a number from 1 to %d", limit, api.MaxOutboxLimit)
			}
			c, _, err := loadProfile(profile)
			if err != nil {
				return err
			}
			list, err := c.Outbox(cmd.Context(), api.State(state), limit)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), list)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "BUNDLE\tSTATE\tPEER\tSUBMITTED BY\tSUBMITTED\tDELIVERED OR REFUSED")
			for _, st := range list.Bundles {
				submitted, outcome := "-", "-"
				if st.Submitted != nil {
					submitted = formatTime(*st.Submitted)
				}
				switch {
				case st.Delivered != nil:
					outcome = formatTime(*st.Delivered)
				case st.Refusal != nil:
					outcome = formatTime(st.Refusal.At) + " " + printable(st.Refusal.Code)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", printable(st.BundleID), printable(string(st.State)),
					printable(st.Peer), printable(st.SubmittedBy), submitted, outcome)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if list.Truncated {
				fmt.Fprintf(cmd.ErrOrStderr(), "the newest %d are shown; there are more (--limit up to %d, or --state)\n", len(list.Bundles), api.MaxOutboxLimit)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&profile, "profile", "", "profile `FILE`")
	f.StringVar(&state, "state", "", "list only bundles in `STATE`: queued, delivered or refused")
	f.IntVar(&limit, "limit", api.DefaultOutboxLimit, "list at most `N` bundles, the newest")
	f.BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}
