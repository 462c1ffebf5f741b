package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"evx/api"
	"evx/crypto"
)

// PullResult reports a pull.
type PullResult struct {
	// Entry is the gateway's inbox entry: what the gateway says of the
	// bundle (who delivered it, when, how it checked the sender). The
	// envelope itself is Open.Envelope, checked here.
	Entry *api.InboxEntry
	Open  *crypto.OpenResult
	// BundlePath is where the rebuilt bundle was kept, if asked for, and
	// BundleCopied reports that it was copied there because a hard link
	// was impossible (another file system).
	BundlePath   string
	BundleCopied bool
	// SenderPinned reports that the signing key was checked, on this
	// machine, against the sender's entry in its country's directory.
	SenderPinned bool
	// SenderChecked says, for people, which directory that was: the
	// signed copy the gateway kept when the bundle arrived, verified here,
	// or the directory as the gateway looks it up now.
	SenderChecked string
}

// Pull downloads a received bundle, rebuilds it, opens and verifies it on
// this machine into dir, and only then acknowledges retrieval. keep, if not
// empty, is a path where the bundle itself is kept for the record.
// progress, if set, is called with the payload bytes downloaded so far and
// their total.
//
// The gateway is trusted with nothing it could get wrong unnoticed. Before
// downloading, Pull checks what it can without the payload: that dir does
// not exist or is empty and its parent is writable; that keep does not
// exist and its directory is writable; that the gateway answers with a
// validly signed envelope of bundle id, sealed to key, whose sender's
// signing key the sender's country's directory lists. It then downloads
// exactly the envelope's payload size, no more, and opens the bundle with
// that sender's key pinned.
func Pull(ctx context.Context, c *Client, key *crypto.UnitKey, id, dir, keep string, progress func(done, total int64)) (*PullResult, error) {
	if !ValidBundleID(id) {
		return nil, fmt.Errorf("malformed bundle id %q (want 32 lowercase hex digits)", Printable(id))
	}
	// Local checks first: nothing is downloaded that could not be put
	// in place.
	if err := crypto.CheckOutputDir(dir); err != nil {
		return nil, err
	}
	parent := filepath.Dir(filepath.Clean(dir))
	payload, err := os.CreateTemp(parent, ".evx-pull-*.age")
	if err != nil {
		return nil, fmt.Errorf("cannot write beside the output directory, in %s: %w", parent, err)
	}
	defer os.Remove(payload.Name())
	defer payload.Close()
	if keep != "" {
		if err := checkKeepPath(keep); err != nil {
			return nil, err
		}
	}

	e, env, err := checkedEntry(ctx, c, id)
	if err != nil {
		return nil, err
	}
	mine := key.Recipient().String()
	if !slices.ContainsFunc(env.Recipients, func(p crypto.Party) bool { return p.Key == mine }) {
		return nil, fmt.Errorf("%w: bundle %s is sealed to %s, not to the unit key of this profile%s",
			crypto.ErrNotRecipient, id, recipientNames(env), unitSuffix(key.Unit))
	}
	// The gateway says it checked the sender; the recipient checks again
	// rather than trust what the gateway stored, and pins the key for open.
	senderKey, checked, err := checkSender(ctx, c, e, env)
	if err != nil {
		return nil, err
	}

	var w io.Writer = payload
	if progress != nil {
		w = &progressWriter{w: payload, f: func(n int64) { progress(n, env.PayloadSize) }}
	}
	if err := c.Payload(ctx, id, env.PayloadSize, w); err != nil {
		return nil, fmt.Errorf("downloading bundle %s: %w", id, err)
	}
	bundle, err := os.CreateTemp(parent, ".evx-pull-*.evx")
	if err != nil {
		return nil, err
	}
	defer os.Remove(bundle.Name())
	defer bundle.Close()
	if err := crypto.WriteContainer(bundle, e.Envelope, e.Signature, io.NewSectionReader(payload, 0, env.PayloadSize), env.PayloadSize); err != nil {
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
	res, err := b.Open(ctx, key, dir, crypto.OpenOptions{ExpectSender: senderKey})
	if err != nil {
		return nil, fmt.Errorf("opening bundle %s: %w", id, err)
	}
	out := &PullResult{Entry: e, Open: res, SenderPinned: true, SenderChecked: checked}
	if keep != "" {
		if out.BundleCopied, err = keepBundle(bundle, info.Size(), keep, os.Link); err != nil {
			return nil, fmt.Errorf("keeping the bundle: %w", err)
		}
		out.BundlePath = keep
	}
	if err := c.Ack(ctx, id); err != nil {
		return out, fmt.Errorf("bundle %s opened, but acknowledging retrieval failed: %w", id, err)
	}
	return out, nil
}

// checkedEntry asks the gateway for bundle id's inbox entry and checks that
// it is the entry of that bundle, with a valid envelope signed as it says.
func checkedEntry(ctx context.Context, c *Client, id string) (*api.InboxEntry, *crypto.Envelope, error) {
	e, err := c.InboxEntry(ctx, id)
	if err != nil {
		return nil, nil, err
	}
	env, err := crypto.ParseEnvelope(e.Envelope)
	if err != nil {
		return nil, nil, fmt.Errorf("the gateway's envelope of bundle %s: %w", id, err)
	}
	if env.BundleID != id || e.BundleID != id {
		return nil, nil, fmt.Errorf("%w: asked for bundle %s, the gateway answered with the envelope of bundle %s", ErrBadAnswer, id, env.BundleID)
	}
	if err := crypto.VerifySignature(env, e.Envelope, e.Signature); err != nil {
		return nil, nil, fmt.Errorf("bundle %s: %w", id, err)
	}
	return e, env, nil
}

// ValidBundleID reports whether id has the form of a bundle id: 32
// lowercase hex digits.
func ValidBundleID(id string) bool { return crypto.ValidBundleID(id) }

func recipientNames(env *crypto.Envelope) string {
	var names []string
	for _, r := range env.Recipients {
		if r.Unit != "" {
			names = append(names, r.Unit)
		} else {
			names = append(names, "an unnamed key")
		}
	}
	return strings.Join(names, ", ")
}

func unitSuffix(unit string) string {
	if unit == "" {
		return ""
	}
	return " (" + unit + ")"
}

// checkKeepPath checks that the file a bundle is to be kept in does not
// exist and that its directory takes new files, by making one there.
func checkKeepPath(keep string) error {
	if _, err := os.Lstat(keep); err == nil {
		return fmt.Errorf("bundle file %q exists; it is never replaced", keep)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("bundle file: %w", err)
	}
	probe, err := os.CreateTemp(filepath.Dir(keep), ".evx-keep-*")
	if err != nil {
		return fmt.Errorf("cannot write the bundle file in %s: %w", filepath.Dir(keep), err)
	}
	probe.Close()
	return os.Remove(probe.Name())
}

// keepBundle puts the size-byte bundle src at dst, which must not exist:
// as a hard link when it can, or else as a copy. It reports whether it
// copied. link is os.Link, or a stand-in in tests.
func keepBundle(src *os.File, size int64, dst string, link func(oldname, newname string) error) (bool, error) {
	err := link(src.Name(), dst)
	if err == nil || !linkImpossible(err) {
		return false, err
	}
	f, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return false, err
	}
	_, err = io.Copy(f, io.NewSectionReader(src, 0, size))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(dst)
		return false, err
	}
	return true, nil
}

// linkImpossible reports whether a hard link failed because the file
// system cannot make one here, rather than because of the target.
func linkImpossible(err error) bool {
	return errors.Is(err, syscall.EXDEV) || errors.Is(err, syscall.EPERM) ||
		errors.Is(err, syscall.ENOTSUP) || errors.Is(err, syscall.EMLINK)
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

// checkSender checks the envelope's signing key against the directory of
// the sender's country, and returns the key to pin and how it was checked.
//
// When the gateway kept the signed directory it checked the sender against
// on arrival (e.SenderDirectory), that copy is verified here against the
// sending gateway's signing key from the gateway's configuration (GET
// /v1/peers), so that the check holds while the sending gateway is down and
// a record altered in the gateway's storage cannot pass. Without a copy,
// the sender is looked up in the directory as the gateway fetches it now.
func checkSender(ctx context.Context, c *Client, e *api.InboxEntry, env *crypto.Envelope) (string, string, error) {
	id, unit := env.BundleID, env.Sender.Unit
	if unit == "" {
		return "", "", fmt.Errorf("bundle %s names no sending unit, so its signing key cannot be checked in a directory; open it with evx open --expect-sender", id)
	}
	country, _, _ := strings.Cut(unit, "/")
	if country != e.From {
		return "", "", fmt.Errorf("%w: bundle %s was delivered by gateway %s, but its sender %s belongs to %s", ErrBadAnswer, id, Printable(e.From), unit, country)
	}
	var (
		entry   crypto.DirectoryEntry
		ok      bool
		checked string
	)
	if e.SenderDirectory != nil {
		peers, err := c.Peers(ctx)
		if err != nil {
			return "", "", fmt.Errorf("asking the gateway for %s's signing key: %w", country, err)
		}
		i := slices.IndexFunc(peers, func(p api.Peer) bool { return p.ID == country })
		if i < 0 {
			return "", "", fmt.Errorf("gateway %s delivered bundle %s but is not a peer of your gateway", country, id)
		}
		d, err := crypto.VerifyDirectory(e.SenderDirectory, peers[i].SigningKey, country)
		if err != nil {
			return "", "", fmt.Errorf("%w: the directory of %s kept with bundle %s: %w", crypto.ErrUnexpectedSender, country, id, err)
		}
		entry, ok = d.Lookup(unit)
		checked = fmt.Sprintf("the signing key is the one %s's signed directory issued %s lists for %s, verified here against %s", country, d.Issued, unit, peers[i].SigningKey)
	} else {
		le, err := c.Lookup(ctx, unit)
		if err != nil {
			return "", "", fmt.Errorf("looking up sender %s in its country's directory: %w", unit, err)
		}
		entry, ok = *le, true
		checked = fmt.Sprintf("the signing key is the one %s's directory lists for %s", country, unit)
	}
	if !ok || api.Role(entry.Role) != api.RoleSubmitter || entry.SigningKey != env.Sender.Key {
		return "", "", fmt.Errorf("%w: bundle %s is signed with %s, which the directory of %s does not list for submitter %s",
			crypto.ErrUnexpectedSender, id, env.Sender.Key, country, unit)
	}
	return entry.SigningKey, checked, nil
}
