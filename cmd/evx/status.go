package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"evx/api"
	"evx/client"
	"evx/crypto"

	"github.com/spf13/cobra"
)

func newStatusCmd() *cobra.Command {
	var profile string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status [--profile P] BUNDLE_ID [--json]",
		Short: "Show a bundle's state and retention at your gateway",
		Long: `status asks your gateway how a bundle stored there stands.

To its submitter, and to an operator, it shows the delivery: queued,
delivered or refused; the peer gateway it goes to; who submitted it and
when; once delivered, the peer's receipt (who received it, when, and the
SHA-256 of the payload it received) and when it was stored, and whether
your gateway still keeps its copy of the payload (removed a grace period
after the receipt); once refused, the peer's reason.

To a recipient it is addressed to it shows the bundle as received: from
whom, when, for what purpose and under which legal basis, and whether you
retrieved it. An operator sees of a received bundle only its sender,
purpose, size and times, never its legal basis, case or handling.

Each side shows where its retention stands: how long until it expires,
when it expired (a received bundle can no longer be read then), or the
legal hold that keeps it. Anyone else is told that the bundle does not
exist. A gateway older than this view answers with the delivery state only.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id := args[0]
			if !client.ValidBundleID(id) {
				return usagef("malformed bundle id %q (want 32 lowercase hex digits)", printable(id))
			}
			c, _, err := loadProfile(profile)
			if err != nil {
				return err
			}
			bs, err := c.BundleState(cmd.Context(), id)
			if errors.Is(err, client.ErrNoBundleState) {
				return outboxStatusOnly(cmd, c, id, asJSON)
			}
			if err != nil {
				return err
			}
			var receipt *crypto.Receipt
			if bs.Outbox != nil {
				if receipt, err = statusReceipt(&bs.Outbox.OutboxStatus, id); err != nil {
					return err
				}
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), bundleStateJSON(bs, receipt))
			}
			printBundleState(printableWriter{cmd.OutOrStdout()}, bs, receipt)
			return nil
		},
	}
	cmd.Flags().StringVar(&profile, "profile", "", "profile `FILE`")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// outboxStatusOnly is status against a gateway older than GET
// /v1/bundles/{id}: the delivery state of a submitted bundle.
func outboxStatusOnly(cmd *cobra.Command, c *client.Client, id string, asJSON bool) error {
	st, err := c.OutboxStatus(cmd.Context(), id)
	if err != nil {
		return err
	}
	receipt, err := statusReceipt(st, id)
	if err != nil {
		return err
	}
	if asJSON {
		return printJSON(cmd.OutOrStdout(), outboxStatusJSON(st, receipt))
	}
	printStatus(cmd.OutOrStdout(), st, receipt)
	return nil
}

// statusReceipt decodes the receipt of a delivered bundle, if any.
func statusReceipt(st *api.OutboxStatus, id string) (*crypto.Receipt, error) {
	if st.Receipt == nil {
		return nil, nil
	}
	receipt, err := decodeReceipt(st.Receipt.Body)
	if err != nil {
		return nil, fmt.Errorf("the gateway's receipt for bundle %s: %w", id, err)
	}
	if receipt.BundleID != id {
		return nil, fmt.Errorf("%w: the gateway's receipt for bundle %s is for bundle %s", client.ErrBadAnswer, id, printable(receipt.BundleID))
	}
	return receipt, nil
}

// outboxStatusJSON is the JSON of status for the delivery state, with the
// receipt's body decoded.
func outboxStatusJSON(st *api.OutboxStatus, receipt *crypto.Receipt) map[string]any {
	return map[string]any{
		"bundle_id": st.BundleID, "state": st.State, "peer": st.Peer,
		"submitted_by": st.SubmittedBy, "submitted": st.Submitted,
		"receipt": st.Receipt, "receipt_body": receipt, "delivered": st.Delivered, "refusal": st.Refusal,
	}
}

// bundleStateJSON is the JSON of status: the members of the delivery
// state as before (when the caller sees it), with the retention of the
// sender's records and payload_stored, then the gateway's inbox entry and
// hold, each when there is one.
func bundleStateJSON(bs *api.BundleState, receipt *crypto.Receipt) map[string]any {
	m := map[string]any{"bundle_id": bs.BundleID}
	if o := bs.Outbox; o != nil {
		m = outboxStatusJSON(&o.OutboxStatus, receipt)
		m["retention"], m["payload_stored"] = o.Retention, o.PayloadStored
	}
	m["gateway"], m["at"] = bs.Gateway, bs.At
	if bs.Inbox != nil {
		m["inbox"] = bs.Inbox
	}
	if bs.Hold != nil {
		m["hold"] = bs.Hold
	}
	return m
}

// decodeReceipt reads a receipt's body without checking its signature:
// the sending gateway checked it against the peer's configured signing key
// before storing it, and the client does not hold that key.
func decodeReceipt(body []byte) (*crypto.Receipt, error) {
	var r crypto.Receipt
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, err
	}
	if r.Format != crypto.ReceiptFormatV1 && r.Format != crypto.ReceiptFormatV2 {
		return nil, fmt.Errorf("unsupported receipt format %q", printable(r.Format))
	}
	return &r, nil
}

// printBundleState prints what the gateway shows of a bundle: the sending
// side, the receiving side, or (to an operator of a gateway that both
// sent and received it) both, each with its retention.
func printBundleState(w io.Writer, bs *api.BundleState, r *crypto.Receipt) {
	if o := bs.Outbox; o != nil {
		printStatus(w, &o.OutboxStatus, r)
		switch {
		case o.PayloadStored && o.State == api.StateQueued:
			fmt.Fprintf(w, "payload       your gateway keeps its copy until a grace period after the peer's receipt\n")
		case o.PayloadStored && o.State == api.StateDelivered:
			fmt.Fprintf(w, "payload       your gateway keeps its copy for a grace period after the peer's receipt\n")
		case o.PayloadStored:
			fmt.Fprintf(w, "payload       your gateway keeps its copy until the retain-until\n")
		case o.State == api.StateDelivered:
			fmt.Fprintf(w, "payload       your gateway keeps no copy: the peer's receipt is stored\n")
		default:
			fmt.Fprintf(w, "payload       your gateway keeps no copy\n")
		}
		fmt.Fprintf(w, "retention     %s\n", retentionText(o.Retention, bs.At, bs.Hold, false))
	}
	if e := bs.Inbox; e != nil {
		if bs.Outbox == nil {
			fmt.Fprintf(w, "bundle        %s\n", printable(e.BundleID))
		}
		fmt.Fprintf(w, "received      %s from gateway %s, sent by %s\n", formatTime(e.ReceivedAt), printable(e.From), printable(e.Sender))
		fmt.Fprintf(w, "purpose       %s\n", printable(e.Purpose))
		if e.LegalBasis != "" {
			fmt.Fprintf(w, "legal basis   %s\n", printable(e.LegalBasis))
		}
		if e.Case != "" {
			fmt.Fprintf(w, "case          %s\n", printable(e.Case))
		}
		if e.Handling != "" || e.TLP != "" {
			fmt.Fprintf(w, "handling      %s, %s\n", printable(e.Handling), printable(e.TLP))
		}
		fmt.Fprintf(w, "size          %d bytes\n", e.Size)
		if e.SenderCheck != "" {
			// Only a recipient is told this, and whether it retrieved it.
			fmt.Fprintf(w, "retrieved     %s\n", yesNo(e.Acknowledged))
		}
		fmt.Fprintf(w, "retention     %s\n", retentionText(e.Retention, bs.At, bs.Hold, true))
	}
	if h := bs.Hold; h != nil && !h.At.IsZero() {
		fmt.Fprintf(w, "legal hold    placed by %s at %s\n", printable(h.By), formatTime(h.At))
	}
}

// retentionText says where a retention stands, counting the time left
// from the gateway's time at, which decides.
func retentionText(r api.Retention, at time.Time, h *api.Hold, received bool) string {
	until := formatTime(r.Until)
	switch r.State {
	case api.RetentionHeld:
		if h != nil {
			return fmt.Sprintf("held: %s (%s); retain-until %s", printable(h.Reason), printable(h.Reference), until)
		}
		return fmt.Sprintf("held by a legal hold; retain-until %s", until)
	case api.RetentionExpired:
		if received {
			return fmt.Sprintf("expired at %s, unreadable", until)
		}
		return fmt.Sprintf("expired at %s; the records are being deleted", until)
	}
	return fmt.Sprintf("expires in %s (%s)", formatLeft(r.Until.Sub(at)), until)
}

// formatLeft writes a time left for people: 45s, 12m, 3h12m, 29d23h.
func formatLeft(d time.Duration) string {
	switch {
	case d < time.Second:
		return "under a second"
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d/time.Minute))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d/time.Hour), int(d%time.Hour/time.Minute))
	}
	days, hours := int(d/(24*time.Hour)), int(d%(24*time.Hour)/time.Hour)
	if hours == 0 {
		return fmt.Sprintf("%dd", days)
	}
	return fmt.Sprintf("%dd%dh", days, hours)
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func printStatus(w io.Writer, st *api.OutboxStatus, r *crypto.Receipt) {
	fmt.Fprintf(w, "bundle        %s\n", printable(st.BundleID))
	fmt.Fprintf(w, "state         %s\n", printable(string(st.State)))
	fmt.Fprintf(w, "peer          %s\n", printable(st.Peer))
	if st.Submitted != nil {
		fmt.Fprintf(w, "submitted     %s by %s\n", formatTime(*st.Submitted), printable(st.SubmittedBy))
	}
	if r != nil {
		fmt.Fprintf(w, "receipt       %s received it from %s at %s; payload SHA-256 %s\n",
			printable(r.Receiver), printable(r.Sender), printable(r.ReceivedAt), printable(r.PayloadSHA256))
		fmt.Fprintf(w, "              signed by %s's gateway; your gateway checked the signature before storing it\n", printable(r.Receiver))
		if r.Log != nil {
			fmt.Fprintf(w, "              %s's transfer log: entry %d, leaf hash %s (its checkpoint then had %d entries)\n",
				printable(r.Receiver), r.Log.LeafIndex, printable(r.Log.LeafHash), r.Log.TreeSize)
		}
	}
	if st.Delivered != nil {
		fmt.Fprintf(w, "delivered     %s (receipt stored)\n", formatTime(*st.Delivered))
	}
	if f := st.Refusal; f != nil {
		fmt.Fprintf(w, "refused       %s by %s: %s: %s\n", formatTime(f.At), printable(st.Peer), printable(f.Code), printable(f.Reason))
	}
	if st.State == api.StateQueued {
		fmt.Fprintf(w, "              your gateway delivers it, retrying until the peer receipts or refuses it\n")
	}
}

func formatTime(t time.Time) string { return t.UTC().Format(time.RFC3339) }
