package client

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"evx/api"
	"evx/crypto"
)

// PullResult reports a pull.
type PullResult struct {
	Entry *api.InboxEntry
	Open  *crypto.OpenResult
	// BundlePath is where the rebuilt bundle was kept, if asked for.
	BundlePath string
	// SenderPinned reports that the signing key was checked, on this
	// machine, against the sender's entry in its country's directory.
	SenderPinned bool
}

// Pull downloads a received bundle, rebuilds it, opens and verifies it on
// this machine into dir, and only then acknowledges retrieval. keep, if not
// empty, is a path where the bundle itself is kept for the record.
func Pull(ctx context.Context, c *Client, key *crypto.UnitKey, id, dir, keep string, progress func(int64)) (*PullResult, error) {
	e, err := c.InboxEntry(ctx, id)
	if err != nil {
		return nil, err
	}
	tmpDir := filepath.Dir(filepath.Clean(dir))
	payload, err := os.CreateTemp(tmpDir, ".evx-pull-*.age")
	if err != nil {
		return nil, err
	}
	defer os.Remove(payload.Name())
	defer payload.Close()
	var w io.Writer = payload
	if progress != nil {
		w = &progressWriter{w: payload, f: progress}
	}
	n, err := c.Download(ctx, id, w)
	if err != nil {
		return nil, fmt.Errorf("downloading bundle %s: %w", id, err)
	}
	bundle, err := os.CreateTemp(tmpDir, ".evx-pull-*.evx")
	if err != nil {
		return nil, err
	}
	defer os.Remove(bundle.Name())
	defer bundle.Close()
	if err := crypto.WriteContainer(bundle, e.Envelope, e.Signature, io.NewSectionReader(payload, 0, n), n); err != nil {
		return nil, err
	}
	info, err := bundle.Stat()
	if err != nil {
		return nil, err
	}
	b, err := crypto.ReadBundle(bundle, info.Size())
	if err != nil {
		return nil, err
	}
	// The gateway says it checked the sender; the recipient checks again
	// rather than trust what the gateway stored, and pins the key for open.
	sender, err := c.Lookup(ctx, b.Envelope.Sender.Unit)
	if err != nil {
		return nil, fmt.Errorf("looking up sender %s in its country's directory: %w", b.Envelope.Sender.Unit, err)
	}
	if api.Role(sender.Role) != api.RoleSubmitter || sender.SigningKey != b.Envelope.Sender.Key {
		return nil, fmt.Errorf("bundle %s is signed with %s, which the directory does not list for submitter %s", id, b.Envelope.Sender.Key, b.Envelope.Sender.Unit)
	}
	res, err := b.Open(ctx, key, dir, crypto.OpenOptions{ExpectSender: sender.SigningKey})
	if err != nil {
		return nil, fmt.Errorf("opening bundle %s: %w", id, err)
	}
	out := &PullResult{Entry: e, Open: res, SenderPinned: true}
	if keep != "" {
		if err := os.Link(bundle.Name(), keep); err != nil {
			return nil, fmt.Errorf("keeping the bundle: %w", err)
		}
		out.BundlePath = keep
	}
	if err := c.Ack(ctx, id); err != nil {
		return out, fmt.Errorf("bundle %s opened, but acknowledging retrieval failed: %w", id, err)
	}
	return out, nil
}

type progressWriter struct {
	w io.Writer
	n int64
	f func(int64)
}

func (p *progressWriter) Write(b []byte) (int, error) {
	n, err := p.w.Write(b)
	p.n += int64(n)
	p.f(p.n)
	return n, err
}
