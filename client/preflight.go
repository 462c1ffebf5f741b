package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"evx/api"
)

// ErrNoPreflight is returned by [Client.Preflight] when the gateway does
// not know the pre-flight call: one older than it, which decides at the
// upload only.
var ErrNoPreflight = errors.New("the gateway does not offer a pre-flight check")

// Preflight asks the gateway whether it would accept an upload of a bundle
// such as req describes, before it is sealed. It answers as the upload
// would: a refusal is an *api.Error with the agreement's code (or the
// upload's, for recipients and sizes), and the answer uses up nothing,
// not even a rate limit.
func (c *Client) Preflight(ctx context.Context, req api.PreflightRequest) (*api.Preflight, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	hr, err := http.NewRequestWithContext(ctx, "POST", c.base+"/v1/preflight", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	hr.Header.Set("Content-Type", "application/json")
	resp, err := c.send(hr)
	if err != nil {
		return nil, c.unreachable(err)
	}
	defer resp.Body.Close()
	var p api.Preflight
	err = decodeAnswer(resp, &p)
	var ae *api.Error
	if (resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusMethodNotAllowed) && !errors.As(err, &ae) {
		// Not an API refusal: the path is unknown there.
		return nil, ErrNoPreflight
	}
	if err != nil {
		return nil, err
	}
	if !p.Allowed {
		return nil, fmt.Errorf("%w: the pre-flight answer neither allows nor refuses", ErrBadAnswer)
	}
	return &p, nil
}

// preflightPush asks the gateway before sealing whether it would accept
// the bundle req describes, with the files' total size as the payload's
// (the payload is larger only by the archive's and the encryption's small
// overhead). A gateway without the call is not asked.
func preflightPush(ctx context.Context, c *Client, req PushRequest) error {
	if req.Seal.Retain <= 0 {
		return nil // crypto.Seal refuses it, saying why
	}
	var size int64
	for _, f := range req.Files {
		size += f.Size
	}
	_, err := c.Preflight(ctx, api.PreflightRequest{
		Recipients: req.To, Purpose: req.Seal.Purpose, Handling: req.Seal.Handling, TLP: req.Seal.TLP,
		Retention: retentionText(req.Seal.Retain), Size: max(size, 1), LegalBasis: req.Seal.LegalBasis,
	})
	if errors.Is(err, ErrNoPreflight) {
		return nil
	}
	return err
}

// retentionText writes a retention as a pre-flight takes it: in days or
// hours when it is whole, else in seconds, rounded up as the gateway
// counts a bundle's.
func retentionText(d time.Duration) string {
	switch {
	case d%(24*time.Hour) == 0:
		return fmt.Sprintf("%dd", d/(24*time.Hour))
	case d%time.Hour == 0:
		return fmt.Sprintf("%dh", d/time.Hour)
	}
	return fmt.Sprintf("%ds", (d+time.Second-1)/time.Second)
}
