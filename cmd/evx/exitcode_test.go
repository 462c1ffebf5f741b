package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"

	"evx/api"
	"evx/client"
	"evx/crypto"
)

// refusal stands for an error that reports a peer's refusal of a bundle.
type refusal struct{ code string }

func (r refusal) Error() string       { return "the peer gateway refused bundle x (" + r.code + ")" }
func (r refusal) RefusalCode() string { return r.code }

func TestClassify(t *testing.T) {
	wrap := func(err error) error { return fmt.Errorf("pushing: %w", err) }
	for _, tc := range []struct {
		name string
		err  error
		exit int
		code string
	}{
		{"other", errors.New("disk full"), 1, "failure"},
		{"usage", usagef("-o is required"), 2, "usage"},
		{"wrapped usage", wrap(usage(errors.New("bad flag"))), 2, "usage"},
		{"API refusal", wrap(api.Errorf(api.CodeForbidden, "no")), 3, "forbidden"},
		{"API temporary", wrap(api.Errorf(api.CodeStorageUnavailable, "later")), 4, "storage-unavailable"},
		{"API peer unavailable", api.Errorf(api.CodeUnavailable, "later"), 4, "unavailable"},
		{"bundle refused by the peer", wrap(refusal{"unknown-recipient"}), 3, "unknown-recipient"},
		{"gateway unreachable", wrap(&client.ConnError{Gateway: "https://gw", Err: errors.New("connection refused")}), 4, "unavailable"},
		{"client certificate refused", &client.ConnError{Gateway: "https://gw", Refused: client.RefusedByGateway, Err: errors.New("alert")}, 3, "refused"},
		{"gateway certificate not verified", &client.ConnError{Gateway: "https://gw", Refused: client.RefusedByClient, Err: errors.New("x509")}, 5, "verification"},
		{"dial", &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}, 4, "unavailable"},
		{"deadline", wrap(context.DeadlineExceeded), 4, "unavailable"},
		{"canceled", context.Canceled, 1, "failure"},
		{"bad signature", fmt.Errorf("open failed: %w", crypto.ErrBadSignature), 5, "verification"},
		{"payload hash", fmt.Errorf("open failed: %w", crypto.ErrPayloadHash), 5, "verification"},
		{"payload size", fmt.Errorf("%w: it ended early", crypto.ErrPayloadSize), 5, "verification"},
		{"not a recipient", fmt.Errorf("%w (its recipients: x)", crypto.ErrNotRecipient), 5, "verification"},
		{"content mismatch", fmt.Errorf("opening bundle x: %w", crypto.ErrContentMismatch), 5, "verification"},
		{"bad gateway answer", fmt.Errorf("downloading bundle x: %w", client.ErrBadAnswer), 5, "verification"},
		{"unexpected sender", fmt.Errorf("%w: signed by y", crypto.ErrUnexpectedSender), 5, "verification"},
		{"not a bundle", fmt.Errorf("x: %w: empty", crypto.ErrNotBundle), 5, "verification"},
		{"missing file", &os.PathError{Op: "open", Path: "x", Err: os.ErrNotExist}, 1, "failure"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			exit, code := classify(tc.err)
			if exit != tc.exit || code != tc.code {
				t.Errorf("classify(%v) = %d, %q; want %d, %q", tc.err, exit, code, tc.exit, tc.code)
			}
		})
	}
	if exit, code := classify(nil); exit != 0 || code != "" {
		t.Errorf("classify(nil) = %d, %q", exit, code)
	}
}

// TestExitCodesDocumented checks that README.md's table of exit codes and
// evx --help say what exitCodes says.
func TestExitCodesDocumented(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	help := newRootCmd(nil, nil).Long
	for _, c := range exitCodes {
		row := fmt.Sprintf("| %d | %s | %s |", c.Exit, c.Category, c.Meaning)
		if c.Category == "" {
			row = fmt.Sprintf("| %d | | %s |", c.Exit, c.Meaning)
		}
		if !strings.Contains(string(readme), row) {
			t.Errorf("README.md lacks the row\n%s", row)
		}
		if line := fmt.Sprintf("  %d  %s\n", c.Exit, c.Meaning); !strings.Contains(help, line) {
			t.Errorf("evx --help lacks %q", line)
		}
	}
}
