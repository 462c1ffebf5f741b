package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"evx/api"
	"evx/crypto"
)

// Client is a local user's client of the gateway API.
type Client struct {
	base string
	http *http.Client
}

// New returns a client of the API at base (https://host:port),
// authenticating with cert and trusting the gateway certificate issued by
// the CA in roots.
func New(base string, cert tls.Certificate, roots *tls.Config) *Client {
	conf := roots.Clone()
	conf.Certificates = []tls.Certificate{cert}
	conf.MinVersion = tls.VersionTLS13
	return &Client{base: base, http: &http.Client{Transport: &http.Transport{
		TLSClientConfig:     conf,
		TLSHandshakeTimeout: 10 * time.Second,
		// The gateway answers an upload only once the payload is stored.
		ResponseHeaderTimeout: 10 * time.Minute,
	}}}
}

func (c *Client) do(req *http.Request, out any) error {
	resp, err := c.http.Do(req)
	if err != nil {
		return c.unreachable(err)
	}
	defer resp.Body.Close()
	return decodeAnswer(resp, out)
}

func decodeAnswer(resp *http.Response, out any) error {
	if resp.StatusCode != http.StatusOK {
		var e api.ErrorBody
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		if json.Unmarshal(body, &e) == nil && e.Error != nil {
			e.Error.HTTPStatus = resp.StatusCode
			return e.Error
		}
		return fmt.Errorf("gateway answered %s", resp.Status)
	}
	if out == nil {
		return nil
	}
	return json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(out)
}

func (c *Client) get(ctx context.Context, path string, out any) error {
	req, err := http.NewRequestWithContext(ctx, "GET", c.base+path, nil)
	if err != nil {
		return err
	}
	return c.do(req, out)
}

// WhoAmI asks the gateway who the client is.
func (c *Client) WhoAmI(ctx context.Context) (*api.WhoAmI, error) {
	var w api.WhoAmI
	return &w, c.get(ctx, "/v1/whoami", &w)
}

// Lookup resolves a unit id, such as FR/prosecutor, to its directory entry.
func (c *Client) Lookup(ctx context.Context, unit string) (*crypto.DirectoryEntry, error) {
	var e crypto.DirectoryEntry
	return &e, c.get(ctx, "/v1/directory/"+unit, &e)
}

// Upload submits a sealed bundle: its envelope, signature and payload.
func (c *Client) Upload(ctx context.Context, envJSON, sig []byte, payload io.Reader, size int64, mode api.DeliveryMode) (*api.OutboxStatus, error) {
	req, err := http.NewRequestWithContext(ctx, "POST", c.base+"/v1/bundles?deliver="+url.QueryEscape(string(mode)), payload)
	if err != nil {
		return nil, err
	}
	req.ContentLength = size
	req.Header.Set("Content-Type", "application/octet-stream")
	req.Header.Set(api.HeaderEnvelope, base64.StdEncoding.EncodeToString(envJSON))
	req.Header.Set(api.HeaderSignature, base64.StdEncoding.EncodeToString(sig))
	var s api.OutboxStatus
	return &s, c.do(req, &s)
}

// OutboxStatus returns the delivery state of a submitted bundle.
func (c *Client) OutboxStatus(ctx context.Context, id string) (*api.OutboxStatus, error) {
	var s api.OutboxStatus
	return &s, c.get(ctx, "/v1/outbox/"+url.PathEscape(id), &s)
}

// OutboxStatusWait is OutboxStatus, except that the gateway answers for a
// queued bundle only once its delivery ends or after wait (at most a
// minute).
func (c *Client) OutboxStatusWait(ctx context.Context, id string, wait time.Duration) (*api.OutboxStatus, error) {
	var s api.OutboxStatus
	return &s, c.get(ctx, "/v1/outbox/"+url.PathEscape(id)+"?wait="+url.QueryEscape(wait.String()), &s)
}

// Inbox lists the bundles addressed to the client.
func (c *Client) Inbox(ctx context.Context) ([]api.InboxEntry, error) {
	var list []api.InboxEntry
	return list, c.get(ctx, "/v1/inbox", &list)
}

// InboxEntry returns one received bundle's entry, with its envelope.
func (c *Client) InboxEntry(ctx context.Context, id string) (*api.InboxEntry, error) {
	var e api.InboxEntry
	return &e, c.get(ctx, "/v1/inbox/"+url.PathEscape(id), &e)
}

// Download writes a received bundle's payload to w and returns its size.
func (c *Client) Download(ctx context.Context, id string, w io.Writer) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", c.base+"/v1/inbox/"+url.PathEscape(id)+"/payload", nil)
	if err != nil {
		return 0, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, c.unreachable(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, decodeAnswer(resp, nil)
	}
	n, err := io.Copy(w, resp.Body)
	if err != nil {
		return n, err
	}
	if want, _ := strconv.ParseInt(resp.Header.Get("Content-Length"), 10, 64); resp.ContentLength >= 0 && n != want {
		return n, fmt.Errorf("payload download ended after %d of %d bytes", n, want)
	}
	return n, nil
}

// Ack acknowledges retrieval of a received bundle.
func (c *Client) Ack(ctx context.Context, id string) error {
	req, err := http.NewRequestWithContext(ctx, "POST", c.base+"/v1/inbox/"+url.PathEscape(id)+"/ack", bytes.NewReader(nil))
	if err != nil {
		return err
	}
	return c.do(req, nil)
}

// unreachable says which gateway could not be reached, without repeating
// the request URL that net/http puts in its errors.
func (c *Client) unreachable(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return fmt.Errorf("cannot reach the gateway at %s: %w", c.base, err)
}
