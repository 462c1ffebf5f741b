package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"evx/agreement"
	"evx/api"
	"evx/config"
	"evx/crypto"

	"github.com/spf13/cobra"
)

// defaultRetain is the retention evx seal and evx push ask for when
// --retain is not given, and so what evx agreement check assumes.
const defaultRetain = "90d"

func newAgreementCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "agreement check|show --config gateway.yaml",
		Short: "Try and read the cooperation agreements of a gateway configuration",
		Long: `agreement works on the agreements of a gateway configuration
(docs/agreements.md), without a running gateway: check decides one request
as the gateway would, and show prints the agreements.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return usagef("agreement needs a subcommand: agreement check or agreement show")
		},
	}
	cmd.AddCommand(newAgreementCheckCmd(), newAgreementShowCmd())
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
	f.StringVar(&retain, "retain", defaultRetain, "retention period in hours, days or weeks (36h, 90d, 12w), "+retentionRange)
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
	var cfgPath string
	cmd := &cobra.Command{
		Use:   "show --config gateway.yaml [PEER]",
		Short: "Print the agreements of a gateway configuration",
		Long: `show prints each agreement of the configuration, or the one with PEER, and
each peer that has none, with whether it is in force now.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if cfgPath == "" {
				return usagef("--config is required")
			}
			cfg, err := config.Load(cfgPath)
			if err != nil {
				return err
			}
			peers := cfg.Peers
			if len(args) == 1 {
				p, ok := cfg.Peer(args[0])
				if !ok {
					return usagef("%s: not a peer of gateway %s (its peers: %s)", args[0], cfg.ID, peerIDs(cfg))
				}
				peers = []config.Peer{p}
			}
			printAgreements(cmd.OutOrStdout(), cfg, peers, time.Now())
			return nil
		},
	}
	cmd.Flags().StringVar(&cfgPath, "config", "", "gateway configuration `FILE`")
	return cmd
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
