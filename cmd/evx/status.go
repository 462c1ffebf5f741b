package main

import (
	"encoding/json"
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
		Short: "Show the delivery state of a bundle you pushed",
		Long: `status asks your gateway how the delivery of a bundle stands: queued,
delivered or refused; the peer gateway it goes to; who submitted it and
when; once delivered, the peer's receipt (who received it, when, and the
SHA-256 of the payload it received) and when it was stored; once refused,
the peer's reason. A submitter sees the bundles it submitted, an operator
every bundle.`,
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
			st, err := c.OutboxStatus(cmd.Context(), id)
			if err != nil {
				return err
			}
			var receipt *crypto.Receipt
			if st.Receipt != nil {
				if receipt, err = decodeReceipt(st.Receipt.Body); err != nil {
					return fmt.Errorf("the gateway's receipt for bundle %s: %w", id, err)
				}
				if receipt.BundleID != id {
					return fmt.Errorf("%w: the gateway's receipt for bundle %s is for bundle %s", client.ErrBadAnswer, id, printable(receipt.BundleID))
				}
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), map[string]any{
					"bundle_id": st.BundleID, "state": st.State, "peer": st.Peer,
					"submitted_by": st.SubmittedBy, "submitted": st.Submitted,
					"receipt": st.Receipt, "receipt_body": receipt, "delivered": st.Delivered, "refusal": st.Refusal,
				})
			}
			printStatus(cmd.OutOrStdout(), st, receipt)
			return nil
		},
	}
	cmd.Flags().StringVar(&profile, "profile", "", "profile `FILE`")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
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
