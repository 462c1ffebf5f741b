package main

import (
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"evx/agreement"
	"evx/api"
	"evx/client"
	"evx/config"
	"evx/crypto"

	"github.com/spf13/cobra"
)

// defaultRetain is the retention evx seal and evx push ask for when
// --retain is not given, and so what evx agreement check assumes.
const defaultRetain = "90d"

func newAgreementCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "agreement check|show|reload|suspend|resume|diff",
		Short: "Try, read and change the cooperation agreements of a gateway",
		Long: `agreement works on a gateway's agreements with its peers
(docs/agreements.md). Without a running gateway, from its configuration
file (--config): check decides one request as the gateway would, and show
prints the agreements. Through the running gateway's API, with an
operator's profile (--profile): show prints the agreements in force beside
each peer's view of them, diff lists where the two sides disagree, reload
applies the edited configuration file, and suspend and resume stop and
restart cooperation with a peer at once.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return usagef("agreement needs a subcommand: check, show, reload, suspend, resume or diff")
		},
	}
	cmd.AddCommand(newAgreementCheckCmd(), newAgreementShowCmd(), newAgreementReloadCmd(),
		newAgreementSuspendCmd(), newAgreementResumeCmd(), newAgreementDiffCmd())
	return cmd
}

func newAgreementCheckCmd() *cobra.Command {
	var cfgPath, peer, direction, purpose, handling, tlp, retain, size, to, at string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "check --config gateway.yaml --peer P --direction in|out --purpose X [--handling H] [--tlp L] [--retain 200d] [--size 40GiB] [--to UNIT] [--at TIME]",
		Short: "Decide one request under the configured agreement, without a gateway",
		Long: `check decides, as the gateway of the configuration would, whether a bundle
may be sent to the peer (--direction out) or accepted from it (--direction
in), and prints the decision and the clause that made it:
  allowed: <reason>                 (exit 0)
  refused: <code>: <reason>         (exit 3)
--handling, --tlp and --retain default to what evx seal uses (` + crypto.DefaultHandling + `,
` + crypto.DefaultTLP + `, ` + defaultRetain + `). Without --size the size clause is not tried. --to names a
local recipient of an inbound bundle, whose purposes are then checked; the
recipients of an outbound bundle are the peer's, which the peer's gateway
checks. --at decides at another time than now (a date or RFC 3339 time).
Rate limits count what flowed and are not tried. With --json the decision
is one JSON object on stdout, and a refusal's error carries its code.

` + vocabularyHelp(),
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			switch {
			case cfgPath == "":
				return usagef("--config is required")
			case peer == "":
				return usagef("--peer is required")
			case direction != string(agreement.Outbound) && direction != string(agreement.Inbound):
				return usagef("--direction %q: want in or out", direction)
			case purpose == "":
				return usagef("--purpose is required (accepted: %s)", strings.Join(crypto.Purposes, ", "))
			}
			r := agreement.Request{Peer: peer, Direction: agreement.Direction(direction), Purpose: purpose,
				Handling: handling, TLP: crypto.NormalizeTLP(tlp)}
			for _, err := range []error{crypto.CheckPurpose(r.Purpose), crypto.CheckHandling(r.Handling), crypto.CheckTLP(r.TLP)} {
				if err != nil {
					return usage(err)
				}
			}
			var err error
			if r.Retention, err = parseRetain(retain); err != nil {
				return err
			}
			if size != "" {
				n, err := config.ParseSize(size)
				if err != nil {
					return usagef("--size %q: %v", size, err)
				}
				r.Size = int64(n)
			}
			now := time.Now()
			if at != "" {
				var t config.Time
				if err := t.UnmarshalText([]byte(at)); err != nil {
					return usagef("--at %q: %v", at, err)
				}
				now = t.Time
			}
			cfg, err := config.Load(cfgPath)
			if err != nil {
				return err
			}
			if _, ok := cfg.Peer(peer); !ok {
				return usagef("--peer %s: not a peer of gateway %s (its peers: %s)", peer, cfg.ID, peerIDs(cfg))
			}
			if to != "" {
				if r.Direction == agreement.Outbound {
					if !crypto.ValidUnitID(to) || !strings.HasPrefix(to, peer+"/") {
						return usagef("--to %q: want a unit of %s, such as %s/prosecutor", to, peer, peer)
					}
					fmt.Fprintf(cmd.ErrOrStderr(), "note: %s is a recipient of %s: its purposes are checked by %s's gateway, not here\n", to, peer, peer)
				} else {
					u, ok := cfg.User(to)
					switch {
					case !ok:
						return usagef("--to %s: no local user of gateway %s has this identity", to, cfg.ID)
					case u.Role != api.RoleRecipient:
						return usagef("--to %s: is a %s, not a recipient", to, u.Role)
					}
					r.Recipients = []agreement.Recipient{{Unit: u.Identity, Purposes: u.Purposes}}
				}
			}
			d := agreement.Decide(cfg.ID, cfg.Agreement(peer), now, r)
			out := cmd.OutOrStdout()
			if asJSON {
				if err := printJSON(out, map[string]any{"allowed": d.Allowed(), "code": d.Code, "reason": d.Reason,
					"version": d.Version, "ref": d.Ref}); err != nil {
					return err
				}
				if d.Allowed() {
					return nil
				}
				return agreementRefusal{d}
			}
			if d.Allowed() {
				fmt.Fprintf(out, "allowed: %s\n", d.Reason)
				return nil
			}
			fmt.Fprintf(out, "refused: %s: %s\n", d.Code, d.Reason)
			return agreementRefusal{d}
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfgPath, "config", "", "gateway configuration `FILE`")
	f.StringVar(&peer, "peer", "", "the peer's gateway `ID`")
	f.StringVar(&direction, "direction", "", "out (to the peer) or in (from the peer)")
	f.StringVar(&purpose, "purpose", "", "purpose of sharing (required)")
	f.StringVar(&handling, "handling", crypto.DefaultHandling, "handling code")
	f.StringVar(&tlp, "tlp", crypto.DefaultTLP, "TLP label")
	f.StringVar(&retain, "retain", defaultRetain, "retention period in weeks, days, hours, minutes or seconds (12w, 90d, 36h, 10m, 30s), "+retentionRange)
	f.StringVar(&size, "size", "", "payload size, such as 40GiB")
	f.StringVar(&to, "to", "", "recipient `UNIT`: a local recipient, for --direction in")
	f.StringVar(&at, "at", "", "decide at `TIME` (a date or RFC 3339 time) instead of now")
	f.BoolVar(&asJSON, "json", false, "print the decision as JSON: allowed, code, reason, version, ref")
	return cmd
}

// agreementRefusal is a refusal of evx agreement check, which exits 3 with
// the decision's code. Its message is short: the decision is on stdout.
type agreementRefusal struct{ d agreement.Decision }

func (e agreementRefusal) Error() string       { return "refused: " + string(e.d.Code) }
func (e agreementRefusal) RefusalCode() string { return string(e.d.Code) }

func newAgreementShowCmd() *cobra.Command {
	var cfgPath, profile string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "show [PEER] (--config gateway.yaml | --profile P [--json])",
		Short: "Print the agreements of a gateway configuration, or those in force with the peers' views",
		Long: `show prints each agreement with a peer, or the one with PEER.

With --config it reads a gateway configuration file, without a gateway:
each agreement clause by clause, with whether it is in force now, and each
peer that has none.

With --profile (an operator's) it asks the running gateway for the
agreements in force, each beside the peer's view of it: the agreement the
peer states in the signed summary it last sent, and when it was received.
The purposes are shown by direction, so that what one side sends stands
beside what the other accepts: the row DE→FR is DE's outbound beside FR's
inbound. A suspension by an operator is shown with its reason, who set it
and when. --json prints the gateway's answer as JSON.

Give exactly one of --config and --profile; without either, the profile
that EVX_PROFILE names, or else the default profile, is used, as by other
commands.

Exit codes: 0 printed; 2 bad usage; 3 refused by the gateway (unknown-peer:
PEER is not one of its peers; forbidden: the profile is not an operator's);
4 the gateway cannot be reached; 1 any other failure, such as a
configuration file that does not load.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			switch {
			case cfgPath != "" && profile != "":
				return usagef("give --config (the file) or --profile (the running gateway), not both")
			case cfgPath != "" && asJSON:
				return usagef("--json needs --profile: it prints the gateway's answer")
			case cfgPath != "":
				return showConfigAgreements(cmd, cfgPath, args)
			}
			if profile == "" {
				if _, _, err := profilePath("", os.Getenv); err != nil {
					return usagef("give --config FILE to read a configuration file, or --profile FILE to ask the running gateway")
				}
			}
			var peer string
			if len(args) == 1 {
				if peer = args[0]; !crypto.ValidGatewayID(peer) {
					return usagef("%q is not a gateway id, such as FR", peer)
				}
			}
			c, _, err := loadProfile(profile)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if peer != "" {
				p, err := c.Agreement(cmd.Context(), peer)
				if err != nil {
					return err
				}
				if asJSON {
					return printJSON(out, p)
				}
				return printPairs(out, []api.AgreementPair{*p})
			}
			l, err := c.Agreements(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(out, l)
			}
			if len(l.Agreements) == 0 {
				fmt.Fprintf(out, "gateway %s has no peers\n", printable(l.Gateway))
				return nil
			}
			return printPairs(out, l.Agreements)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfgPath, "config", "", "gateway configuration `FILE`: read it, without a gateway")
	f.StringVar(&profile, "profile", "", "an operator's profile `FILE`: ask the running gateway")
	f.BoolVar(&asJSON, "json", false, "print the gateway's answer as JSON (with --profile)")
	return cmd
}

// showConfigAgreements is evx agreement show --config: the agreements of a
// configuration file.
func showConfigAgreements(cmd *cobra.Command, cfgPath string, args []string) error {
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return err
	}
	peers := cfg.Peers
	if len(args) == 1 {
		p, ok := cfg.Peer(args[0])
		if !ok {
			return usagef("%s: not a peer of gateway %s (its peers: %s)", printable(args[0]), cfg.ID, peerIDs(cfg))
		}
		peers = []config.Peer{p}
	}
	printAgreements(cmd.OutOrStdout(), cfg, peers, time.Now())
	return nil
}

// printAgreements prints the agreement with each of peers, as of now.
func printAgreements(w io.Writer, cfg *config.Gateway, peers []config.Peer, now time.Time) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(tw, "  %s\t%s\n", k, v) }
	for i, p := range peers {
		if i > 0 {
			fmt.Fprintln(tw)
		}
		var a *config.Agreement
		for j := range cfg.Agreements {
			if cfg.Agreements[j].Peer == p.ID {
				a = &cfg.Agreements[j]
			}
		}
		if a == nil {
			fmt.Fprintf(tw, "%s: no agreement: nothing flows with it\n", p.ID)
			continue
		}
		m := a.Model()
		fmt.Fprintf(tw, "%s: %s\n", p.ID, m.Name(cfg.ID))
		row("in force", inForce(m, now))
		row("status", statusText(a))
		row("valid", a.Validity())
		row("outbound", list(a.Outbound))
		row("inbound", list(a.Inbound))
		row("handling", list(a.Handling))
		row("TLP", list(a.TLP))
		var caps []string
		for _, purpose := range crypto.Purposes {
			if d, ok := a.MaxRetention[purpose]; ok {
				caps = append(caps, purpose+" "+d.String())
			}
		}
		row("max retention", list(caps))
		size := fmt.Sprintf("limits.max_bundle_size (%v)", cfg.Limits.MaxBundleSize)
		if a.MaxBundleSize > 0 {
			size = a.MaxBundleSize.String()
		}
		row("max bundle size", size)
		row("rate", rateText(a.Rate))
	}
	tw.Flush()
}

// inForce says whether anything flows under m at now, and if not, why.
func inForce(m *agreement.Agreement, now time.Time) string {
	switch {
	case m.Status != agreement.Active:
		return "no: " + string(m.Status)
	case !m.ValidFrom.IsZero() && now.Before(m.ValidFrom):
		return "no: valid from " + m.ValidFrom.UTC().Format(time.RFC3339)
	case !m.ValidUntil.IsZero() && !now.Before(m.ValidUntil):
		return "no: lapsed at " + m.ValidUntil.UTC().Format(time.RFC3339)
	case len(m.Outbound) == 0 && len(m.Inbound) == 0:
		return "yes, but it allows no purpose either way"
	}
	return "yes"
}

func statusText(a *config.Agreement) string {
	if a.Reason == "" {
		return string(a.Status)
	}
	return string(a.Status) + ": " + a.Reason
}

func rateText(r config.Rate) string {
	var parts []string
	if r.BundlesPerHour > 0 {
		parts = append(parts, fmt.Sprintf("%d bundles", r.BundlesPerHour))
	}
	if r.BytesPerHour > 0 {
		parts = append(parts, r.BytesPerHour.String())
	}
	if len(parts) == 0 {
		return "no limit"
	}
	return strings.Join(parts, " and ") + " per hour, each direction"
}

func list(vs []string) string {
	if len(vs) == 0 {
		return "none"
	}
	return strings.Join(vs, ", ")
}

func peerIDs(cfg *config.Gateway) string {
	var ids []string
	for _, p := range cfg.Peers {
		ids = append(ids, p.ID)
	}
	return list(ids)
}

// The exit codes of the commands that change the running gateway's
// agreements, for their help.
const agreementChangeExits = `Exit codes: 0 done (or nothing changed); 2 bad usage; 3 refused by the
gateway, with its code: %s, or forbidden (the profile is
not an operator's); 4 the gateway cannot be reached or cannot serve for
now; 1 any other failure.`

func newAgreementReloadCmd() *cobra.Command {
	var profile string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "reload [--profile P] [--json]",
		Short: "Make the running gateway read its configuration file again",
		Long: `reload asks the running gateway of your profile (an operator's) to read its
configuration file again, as SIGHUP to evx gateway does. The agreements,
users and peers in it apply together, at once: a request in progress
finishes under the configuration it started with, the next one sees the
new. reload prints each change on a line, such as
  agreement FR: version 3 → 4 (ref 2026/114 → 2026/120)
or "nothing changed". Settings that changed but apply only at the next
start (listening addresses, storage, TLS files, logging) are named in a
warning on stderr. With --json the gateway's answer is printed as JSON.

If anything in the file is invalid, nothing of it applies and the running
configuration stays: the refusal, invalid-config, names the field and line.
Check an edited file first with evx config check.

` + fmt.Sprintf(agreementChangeExits, "invalid-config (the file is invalid), reload-unavailable (the\ngateway was not started from a file it can read again)"),
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := loadProfile(profile)
			if err != nil {
				return err
			}
			r, err := c.ReloadConfig(cmd.Context())
			if err != nil {
				return err
			}
			return printChanges(cmd, r, asJSON)
		},
	}
	cmd.Flags().StringVar(&profile, "profile", "", "an operator's profile `FILE`")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the gateway's answer as JSON")
	return cmd
}

func newAgreementSuspendCmd() *cobra.Command {
	var profile, reason string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "suspend PEER --reason TEXT [--profile P] [--json]",
		Short: "Suspend cooperation with a peer at once, in both directions",
		Long: `suspend stops cooperation with the peer gateway PEER at once, in both
directions, until evx agreement resume: every decision with it answers
agreement-suspended with your reason; transfers in flight with it are
stopped, and nothing partial is stored; queued bundles are held, not
failed, and go out after resume. The peer is told with a signed notice, so
that its units see the suspension before they seal. The suspension is
kept in the gateway's storage: it outlasts restarts and reloads.

--reason is required: at most ` + strconv.Itoa(api.MaxSuspendReason) + ` bytes of printable text. It is written
to the transfer log with your identity, shown to the peer and to units
whose bundles are held. suspend prints what changed, as reload does.

` + fmt.Sprintf(agreementChangeExits, "unknown-peer (PEER is not one of its peers),\nalready-suspended, bad-reason"),
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			peer := args[0]
			if err := checkReason(reason); err != nil {
				return err
			}
			c, err := peerClient(peer, profile)
			if err != nil {
				return err
			}
			r, err := c.SuspendAgreement(cmd.Context(), peer, reason)
			if err != nil {
				return err
			}
			return printChanges(cmd, r, asJSON)
		},
	}
	cmd.Flags().StringVar(&profile, "profile", "", "an operator's profile `FILE`")
	cmd.Flags().StringVar(&reason, "reason", "", "why cooperation is suspended (required; logged and shown to the peer)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the gateway's answer as JSON")
	return cmd
}

func newAgreementResumeCmd() *cobra.Command {
	var profile string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "resume PEER [--profile P] [--json]",
		Short: "Lift an operator's suspension of cooperation with a peer",
		Long: `resume lifts the suspension that evx agreement suspend set on cooperation
with PEER: decisions follow the agreement again, held bundles go out at
once, and the peer is told. An agreement whose configured status is
suspended or terminated is not lifted by resume: edit the file and reload.
resume prints what changed, as reload does.

` + fmt.Sprintf(agreementChangeExits, "unknown-peer (PEER is not one of its peers),\nnot-suspended (no operator suspended it)"),
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			peer := args[0]
			c, err := peerClient(peer, profile)
			if err != nil {
				return err
			}
			r, err := c.ResumeAgreement(cmd.Context(), peer)
			if err != nil {
				return err
			}
			return printChanges(cmd, r, asJSON)
		},
	}
	cmd.Flags().StringVar(&profile, "profile", "", "an operator's profile `FILE`")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the gateway's answer as JSON")
	return cmd
}

func newAgreementDiffCmd() *cobra.Command {
	var profile string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "diff PEER [--profile P] [--json]",
		Short: "List where this gateway's agreement with a peer and the peer's disagree",
		Long: `diff compares the running gateway's agreement with PEER against the peer's,
as the signed summary it last sent states it, and prints one line per
mismatch: a purpose one side sends that the other does not accept, caps,
handling codes, TLP labels, sizes, rates or validity that differ, one side
suspended or without an agreement, versions or references that differ.
A mismatch is found here before a transfer fails on it. With --json the
gateway's answer is printed as JSON, whatever the exit code.

Exit codes: 0 the two sides agree; 3 they disagree (the JSON error's code is
agreements-differ), or the gateway refused (unknown-peer, forbidden); 4 the
peer's view is unknown: its summary has not been received yet (it is sent
at start, after every change and every 10 minutes), or the gateway cannot
be reached; 2 bad usage; 1 any other failure.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			peer := args[0]
			c, err := peerClient(peer, profile)
			if err != nil {
				return err
			}
			d, err := c.AgreementDiff(cmd.Context(), peer)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				if err := printJSON(out, d); err != nil {
					return err
				}
			}
			switch {
			case d.Unknown:
				return peerViewUnknown{peer}
			case len(d.Mismatches) > 0:
				if !asJSON {
					for _, m := range d.Mismatches {
						fmt.Fprintln(out, printable(m))
					}
				}
				return agreementsDiffer{peer, len(d.Mismatches)}
			}
			if !asJSON {
				fmt.Fprintf(out, "both sides agree: no mismatch with %s's view\n", peer)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&profile, "profile", "", "an operator's profile `FILE`")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the gateway's answer as JSON")
	return cmd
}

// agreementsDiffer is evx agreement diff's answer when the two sides
// disagree: it exits 3, as a refusal does, since a bundle one side allows
// the other would refuse. Its message is short: the mismatches are on
// stdout.
type agreementsDiffer struct {
	peer string
	n    int
}

func (e agreementsDiffer) Error() string {
	if e.n == 1 {
		return fmt.Sprintf("1 mismatch with %s's view of the agreement", e.peer)
	}
	return fmt.Sprintf("%d mismatches with %s's view of the agreement", e.n, e.peer)
}
func (e agreementsDiffer) RefusalCode() string { return "agreements-differ" }

// peerViewUnknown is evx agreement diff's answer when the peer's summary
// has not been received: nothing could be compared, and the same command
// may succeed later, so it exits 4 as an unavailable gateway does.
type peerViewUnknown struct{ peer string }

func (e peerViewUnknown) Error() string {
	return fmt.Sprintf("%s's view of the agreement is unknown: its signed summary has not been received yet (it is sent at start, after every change and every 10 minutes); try again later", e.peer)
}

// Unwrap makes it a temporary API error, which exits 4.
func (e peerViewUnknown) Unwrap() error {
	return &api.Error{Code: api.CodeUnavailable, Message: e.Error()}
}

// checkPeerArg checks the PEER argument: a gateway id, which becomes part
// of the request's path.
// peerClient checks a command's PEER argument and returns the client of
// the operator's profile: a bad PEER is a usage error before anything is
// read.
func peerClient(peer, profile string) (*client.Client, error) {
	if err := checkPeerArg(peer); err != nil {
		return nil, err
	}
	c, _, err := loadProfile(profile)
	return c, err
}

func checkPeerArg(peer string) error {
	if !crypto.ValidGatewayID(peer) {
		return usagef("%q is not a gateway id, such as FR", peer)
	}
	return nil
}

// checkReason checks a suspension's reason as the gateway will, so that a
// mistake is a usage error rather than a refusal.
func checkReason(reason string) error {
	switch {
	case strings.TrimSpace(reason) == "":
		return usagef("--reason is required: it is logged, and shown to the peer and to units whose bundles are held")
	case len(reason) > api.MaxSuspendReason:
		return usagef("--reason has %d bytes: want at most %d", len(reason), api.MaxSuspendReason)
	case printable(reason) != reason:
		return usagef("--reason %q: want printable text, without control characters or line breaks", reason)
	}
	return nil
}

// printChanges prints what a reload, suspension or resume changed: each
// change on a line of stdout, or "nothing changed", and each setting that
// applies only at the next start as a warning on stderr.
func printChanges(cmd *cobra.Command, r *api.Reload, asJSON bool) error {
	out := cmd.OutOrStdout()
	if asJSON {
		if err := printJSON(out, r); err != nil {
			return err
		}
	} else {
		if len(r.Changes) == 0 {
			fmt.Fprintln(out, "nothing changed")
		}
		for _, c := range r.Changes {
			fmt.Fprintln(out, printable(c))
		}
	}
	for _, s := range r.RestartNeeded {
		fmt.Fprintf(cmd.ErrOrStderr(), "warning: %s changed in the file: it applies only when the gateway restarts\n", printable(s))
	}
	return nil
}

// printPairs prints agreements in force as the gateway states them, each
// as a table of this gateway's clauses beside the peer's.
func printPairs(w io.Writer, pairs []api.AgreementPair) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for i, p := range pairs {
		if i > 0 {
			fmt.Fprintln(tw)
		}
		printPair(tw, &p)
	}
	return tw.Flush()
}

func printPair(tw io.Writer, p *api.AgreementPair) {
	ours, theirs := &p.Ours, p.Theirs
	self, peer := printable(ours.Gateway), printable(p.Peer)
	if ours.None {
		fmt.Fprintf(tw, "%s: no agreement: nothing flows with it\n", peer)
	} else {
		fmt.Fprintf(tw, "%s: %s\n", peer, viewName(ours))
	}
	switch {
	case ours.None && theirs == nil:
		fmt.Fprintf(tw, "  %s's view\tnot received yet\n", peer)
		return
	case ours.None && theirs.None:
		fmt.Fprintf(tw, "  %s's view\tno agreement either, received %s\n", peer, receivedAt(p))
		return
	}
	views := []*api.AgreementView{ours}
	head := "\t" + self + " (ours)"
	if theirs != nil {
		views = append(views, theirs)
		head += "\t" + peer + " (theirs)"
	}
	fmt.Fprintf(tw, "  %s\n", head)
	row := func(name string, value func(v *api.AgreementView) string) {
		fmt.Fprintf(tw, "  %s", name)
		for _, v := range views {
			s := "-"
			if !v.None {
				s = value(v)
			}
			fmt.Fprintf(tw, "\t%s", s)
		}
		fmt.Fprintln(tw)
	}
	fmt.Fprintf(tw, "  state")
	for _, v := range views {
		// Also for a side without an agreement: "none".
		fmt.Fprintf(tw, "\t%s", printable(v.State))
	}
	fmt.Fprintln(tw)
	row("version", func(v *api.AgreementView) string { return fmt.Sprint(v.Version) })
	row("ref", func(v *api.AgreementView) string { return printable(v.Ref) })
	row("status", func(v *api.AgreementView) string {
		if v == ours && p.Suspension != nil {
			// Its reason, who set it and when are on the last line.
			return "suspended by an operator (below)"
		}
		if v.StatusReason == "" {
			return printable(v.Status)
		}
		return printable(v.Status + ": " + v.StatusReason)
	})
	// By direction: what one side sends beside what the other accepts.
	out := func(v *api.AgreementView) string { return printable(list(v.Outbound)) }
	in := func(v *api.AgreementView) string { return printable(list(v.Inbound)) }
	row(self+"→"+peer+" purposes", func(v *api.AgreementView) string {
		if v == ours {
			return out(v)
		}
		return in(v)
	})
	row(peer+"→"+self+" purposes", func(v *api.AgreementView) string {
		if v == ours {
			return in(v)
		}
		return out(v)
	})
	row("handling", func(v *api.AgreementView) string { return printable(list(v.Handling)) })
	row("TLP", func(v *api.AgreementView) string { return printable(list(v.TLP)) })
	row("max retention", func(v *api.AgreementView) string { return printable(retentionCaps(v.MaxRetention)) })
	row("max bundle size", func(v *api.AgreementView) string {
		if v.MaxBundleSize <= 0 {
			return "the gateway's limit"
		}
		return config.Size(v.MaxBundleSize).String()
	})
	row("rate", func(v *api.AgreementView) string {
		return rateText(config.Rate{BundlesPerHour: v.RateBundles, BytesPerHour: config.Size(v.RateBytes)})
	})
	row("valid", func(v *api.AgreementView) string { return validity(v.ValidFrom, v.ValidUntil) })
	if theirs == nil {
		fmt.Fprintf(tw, "  %s's view\tnot received yet\n", peer)
	} else {
		fmt.Fprintf(tw, "  %s's view\t\treceived %s\n", peer, receivedAt(p))
	}
	if s := p.Suspension; s != nil {
		fmt.Fprintf(tw, "  suspended\tby %s at %s: %s\n", printable(s.By), formatTime(s.At), printable(s.Reason))
	}
}

// receivedAt says when the peer's view was received.
func receivedAt(p *api.AgreementPair) string {
	if p.TheirsReceived == nil {
		return "at an unknown time"
	}
	return formatTime(*p.TheirsReceived)
}

// viewName names an agreement as decisions do: agreement DE→FR v3 (ref
// 2026/114).
func viewName(v *api.AgreementView) string {
	return printable(fmt.Sprintf("agreement %s→%s v%d (ref %s)", v.Gateway, v.Peer, v.Version, v.Ref))
}

// retentionCaps writes the caps per purpose, in the vocabulary's order,
// in days when whole days, else in hours or seconds.
func retentionCaps(caps map[string]int64) string {
	var out []string
	add := func(p string) {
		s := caps[p]
		switch {
		case s%86400 == 0:
			out = append(out, fmt.Sprintf("%s %dd", p, s/86400))
		case s%3600 == 0:
			out = append(out, fmt.Sprintf("%s %dh", p, s/3600))
		default:
			out = append(out, fmt.Sprintf("%s %ds", p, s))
		}
	}
	for _, p := range crypto.Purposes {
		if _, ok := caps[p]; ok {
			add(p)
		}
	}
	// A purpose outside this version's vocabulary, from a newer peer.
	var other []string
	for p := range caps {
		if !slices.Contains(crypto.Purposes, p) {
			other = append(other, p)
		}
	}
	slices.Sort(other)
	for _, p := range other {
		add(p)
	}
	return list(out)
}

// validity writes an agreement's validity as config check does: "from
// 2026-01-01 until 2028-01-01", "without end".
func validity(from, until *time.Time) string {
	var parts []string
	if from != nil {
		parts = append(parts, "from "+config.Time{Time: from.UTC()}.String())
	}
	if until != nil {
		parts = append(parts, "until "+config.Time{Time: until.UTC()}.String())
	}
	if len(parts) == 0 {
		return "without end"
	}
	return strings.Join(parts, " ")
}
