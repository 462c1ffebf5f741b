package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"evx/api"
)

// call sends one of the API's JSON calls, with body as JSON if not nil,
// and decodes its answer into out, reading at most limit bytes of it. A
// 404 or 405 that is not an API refusal (such as not-found) means that the
// gateway does not know the path: an older gateway; call returns older
// then.
func (c *Client) call(ctx context.Context, method, path string, body []byte, limit int64, out any, older error) error {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.send(req)
	if err != nil {
		return c.unreachable(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		err := decodeAnswer(resp, nil)
		var ae *api.Error
		if !errors.As(err, &ae) && (resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusMethodNotAllowed) {
			return older
		}
		return err
	}
	if resp.ContentLength > limit {
		return fmt.Errorf("%w: the gateway announces an answer of %d bytes to %s %s, more than the %d it may have", ErrBadAnswer, resp.ContentLength, method, path, limit)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return fmt.Errorf("reading the answer to %s %s: %w", method, path, err)
	}
	if int64(len(data)) > limit {
		return fmt.Errorf("%w: the gateway sends more than %d bytes in answer to %s %s", ErrBadAnswer, limit, method, path)
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("%w: the answer to %s %s is not the expected JSON: %v", ErrBadAnswer, method, path, err)
	}
	return nil
}
