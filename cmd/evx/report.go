package main

import (
	"errors"
	"evx/config"
	"fmt"
	"slices"
	"strings"
	"time"

	"evx/audit"

	"github.com/spf13/cobra"
)

func newReportCmd() *cobra.Command {
	var f logSourceFlags
	var from, to, format string
	var threshold int
	cmd := &cobra.Command{
		Use:   "report --profile P --from DATE --to DATE [--format md|csv|json] [--threshold N]",
		Short: "Write a transparency report of a gateway's transfer log, after verifying it",
		Long: `report verifies a gateway's transfer log as evx audit verify does (and saves
its checkpoint beside the profile), then counts what the log records in a
period, in numbers fit to publish (docs/audit.md section 10):

  - transfers: bundles delivered to and received from each peer, per
    purpose and handling code, with their volume;
  - refusals: per stage (upload, delivery, offer, request), peer and code;
  - the median delivery time (from the upload's acceptance to the peer's
    receipt) and retrieval time (from the receipt to the recipient's
    acknowledgement), per peer and over all peers.

It shows no bundle id, case reference, legal basis or reason, and every
count below the threshold as <5 (for --threshold 5), with its volume
withheld; a median of fewer times than the threshold is withheld too. Each
event is counted in one row only and there are no totals, so that a
withheld count cannot be worked out from the others.

  --from DATE, --to DATE  the period, in whole days (UTC): from the start of
                          --from to the start of --to, which is excluded, so
                          that consecutive reports (--from 2026-01-01 --to
                          2026-04-01, then --from 2026-04-01 ...) count each
                          event once
  --format md|csv|json    Markdown (default), CSV or JSON, on stdout
  --threshold N           the smallest count shown exactly, from 2; by
                          default the profile's report_threshold, else 5

With --dir it reports on an export, with the keys pinned as for evx audit
verify --dir. Publish reports of periods that do not overlap and have
ended: two reports of overlapping periods, or of one period at two times,
differ by the cases in between, which the threshold does not protect.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if !cmd.Flags().Changed("threshold") && f.profile != "" {
				// The auditor's policy, kept in the profile.
				p, err := config.LoadProfile(f.profile)
				if err != nil {
					return err
				}
				if p.ReportThreshold != 0 {
					threshold = p.ReportThreshold
				}
			}
			opts, err := reportOptions(from, to, threshold)
			if err != nil {
				return err
			}
			if !slices.Contains(audit.ReportFormats, format) {
				return usagef("--format %q: want one of %s", printable(format), strings.Join(audit.ReportFormats, ", "))
			}
			if f.profile == "" && f.dir == "" {
				return usagef("give --profile FILE (an auditor's profile) or --dir DIR (an export)")
			}
			if err := f.check(cmd.Flags()); err != nil {
				return err
			}
			// Made before anything is read: it checks the options.
			tally, err := audit.NewTally(opts)
			if err != nil {
				return usage(err)
			}
			l, err := f.open(cmd)
			if err != nil {
				return err
			}
			fmt.Fprintf(printableWriter{cmd.ErrOrStderr()}, "%s\n", verifiedLine(l))
			if opts.To.After(time.Now()) {
				fmt.Fprintf(cmd.ErrOrStderr(), "warning: the period ends after now (%s): a later report of it can differ from this one, and the difference singles out the cases in between; publish reports of periods that have ended\n", opts.To.Format(time.DateOnly))
			}
			r, err := report(cmd, l, tally)
			if err != nil {
				return err
			}
			return r.Write(cmd.OutOrStdout(), format)
		},
	}
	f.register(cmd.Flags())
	fs := cmd.Flags()
	fs.StringVar(&from, "from", "", "count events from the start of `DATE` (YYYY-MM-DD, UTC)")
	fs.StringVar(&to, "to", "", "count events before the start of `DATE` (YYYY-MM-DD, UTC)")
	fs.StringVar(&format, "format", "md", "write the report as `F`: md, csv or json")
	fs.IntVar(&threshold, "threshold", audit.DefaultThreshold, fmt.Sprintf("show counts below `N` as <N (from %d)", audit.MinThreshold))
	return cmd
}

// reportOptions checks the period and the threshold of evx report.
func reportOptions(from, to string, threshold int) (audit.ReportOptions, error) {
	if from == "" || to == "" {
		return audit.ReportOptions{}, usagef("give the period with --from DATE and --to DATE, such as --from 2026-01-01 --to 2026-04-01 (the first quarter of 2026)")
	}
	var opts audit.ReportOptions
	for _, d := range []struct {
		flag, s string
		t       *time.Time
	}{{"--from", from, &opts.From}, {"--to", to, &opts.To}} {
		t, err := time.Parse(time.DateOnly, d.s)
		if err != nil {
			return audit.ReportOptions{}, usagef("%s %q: want a date such as 2026-01-01 (YYYY-MM-DD, UTC): reports cover whole days", d.flag, printable(d.s))
		}
		*d.t = t
	}
	if !opts.From.Before(opts.To) {
		return audit.ReportOptions{}, usagef("--from %s is not before --to %s: the period is empty (--to is excluded)", from, to)
	}
	if threshold < audit.MinThreshold || threshold > audit.MaxThreshold {
		return audit.ReportOptions{}, usagef("--threshold %d: want from %d to %d; a report with a threshold of 1 would single out cases, and evx audit log shows every entry to an auditor who may see them", threshold, audit.MinThreshold, audit.MaxThreshold)
	}
	opts.Threshold = threshold
	return opts, nil
}

// report counts the entries of the verified log l, each checked against
// the verified tree as it is read.
func report(cmd *cobra.Command, l *auditedLog, tally *audit.Tally) (*audit.TransparencyReport, error) {
	failed := func(err error) error {
		return &verifyFailure{fmt.Sprintf("the transfer log of %s (%s)", l.Gateway, l.Where), err}
	}
	for e, err := range l.Entries(cmd.Context()) {
		if err != nil {
			return nil, failed(err)
		}
		if e.Err != nil && !errors.Is(e.Err, audit.ErrUnsupportedFormat) && !errors.Is(e.Err, audit.ErrUnknownEvent) {
			return nil, failed(fmt.Errorf("entry %d is in the tree but is not a valid entry: %v", e.Index, e.Err))
		}
		if e.Entry != nil && e.Entry.Gateway != l.Gateway {
			return nil, failed(fmt.Errorf("entry %d is in the tree but says it is of gateway %s", e.Index, printable(e.Entry.Gateway)))
		}
		if err := tally.AddParsed(e.Entry, e.Err); err != nil {
			return nil, failed(fmt.Errorf("entry %d: %w", e.Index, err))
		}
	}
	r := tally.Report()
	// An empty log has no entry to name its gateway.
	r.Gateway = l.Gateway
	r.Log.Origin, r.Log.Size, r.Log.Hash = l.Origin, l.N, l.Hash.String()
	return r, nil
}
