package client_test

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"evx/api"
	"evx/client"
	"evx/crypto"
	"evx/internal/evxtest"
)

// pullRecorder pulls through a client and records the largest progress it
// reported: the payload bytes written to disk.
type pullRecorder struct {
	written  int64
	reported bool
}

func (p *pullRecorder) pull(t *testing.T, c *client.Client, key *crypto.UnitKey, id, dir, keep string) (*client.PullResult, error) {
	t.Helper()
	return client.Pull(context.Background(), c, key, id, dir, keep, func(done, total int64) {
		p.reported = true
		p.written = max(p.written, done)
	})
}

// wantNoTraces checks that a failed pull left nothing in parent but what
// the test put there.
func wantNoTraces(t *testing.T, parent string, keep ...string) {
	t.Helper()
	entries, err := os.ReadDir(parent)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if !slices.Contains(keep, e.Name()) {
			t.Errorf("the failed pull left %s in %s", e.Name(), parent)
		}
	}
}

// A gateway is trusted with nothing it could get wrong: pull refuses
// another bundle's envelope, a payload longer or shorter than the envelope
// declares (writing no byte beyond it), and a sender the directory does
// not list, and it acknowledges none of them.
func TestPullRefusesAHostileGateway(t *testing.T) {
	f := newFakeGateway(t)
	a, b := f.seal(70_000), f.seal(1000)
	c, key := f.client()
	size := a.Env.PayloadSize

	t.Run("honest", func(t *testing.T) {
		var p pullRecorder
		dir := filepath.Join(t.TempDir(), "out")
		res, err := p.pull(t, c, key, a.Env.BundleID, dir, "")
		if err != nil {
			t.Fatal(err)
		}
		if res.Open.Envelope.BundleID != a.Env.BundleID || !res.SenderPinned || p.written != size {
			t.Errorf("pulled %+v, %d bytes written; want bundle %s, pinned, %d bytes", res, p.written, a.Env.BundleID, size)
		}
		if !f.askedFor("/" + a.Env.BundleID + "/ack") {
			t.Error("no acknowledgement")
		}
	})

	for _, tc := range []struct {
		name    string
		fault   func()
		want    error
		payload bool // whether the payload may be asked for
		written int64
	}{
		{
			name:  "another bundle's envelope",
			fault: func() { f.entryFor[a.Env.BundleID] = b.Env.BundleID },
			want:  client.ErrBadAnswer,
		},
		{
			name:  "a sender the directory does not list",
			fault: func() { f.signingKey = f.dev.Country("DE").User("prosecutor").Key.Public().SigningKey },
			want:  crypto.ErrUnexpectedSender,
		},
		{
			name: "more bytes than payload.size, without Content-Length",
			fault: func() {
				f.payload = func(w http.ResponseWriter, s *evxtest.Bundle) {
					w.Write(s.Payload)
					w.(http.Flusher).Flush() // chunked: no length announced
					w.Write(bytes.Repeat([]byte{'x'}, 100_000))
				}
			},
			want: client.ErrBadAnswer, payload: true, written: size,
		},
		{
			name: "a Content-Length larger than payload.size",
			fault: func() {
				f.payload = func(w http.ResponseWriter, s *evxtest.Bundle) {
					w.Header().Set("Content-Length", strconv.Itoa(len(s.Payload)+1))
					w.Write(append(s.Payload, 'x'))
				}
			},
			want: client.ErrBadAnswer, payload: true, written: 0,
		},
		{
			name: "fewer bytes than payload.size",
			fault: func() {
				f.payload = func(w http.ResponseWriter, s *evxtest.Bundle) {
					w.Write(s.Payload[:len(s.Payload)-1])
				}
			},
			payload: true, written: size - 1,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f.entryFor, f.signingKey, f.payload = map[string]string{}, "", nil
			tc.fault()
			f.mu.Lock()
			f.requests = nil
			f.mu.Unlock()
			parent := t.TempDir()
			var p pullRecorder
			_, err := p.pull(t, c, key, a.Env.BundleID, filepath.Join(parent, "out"), "")
			if err == nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("pull: %v; want %v", err, tc.want)
			}
			t.Logf("refused: %v", err)
			if got := f.askedFor("/payload"); got != tc.payload {
				t.Errorf("payload asked for: %v, want %v (requests %v)", got, tc.payload, f.asked())
			}
			if f.askedFor("/ack") {
				t.Error("a refused bundle was acknowledged")
			}
			if p.written > size || p.written != tc.written || tc.written == 0 && p.reported {
				t.Errorf("%d payload bytes written, want %d (the envelope declares %d)", p.written, tc.written, size)
			}
			wantNoTraces(t, parent)
		})
	}
}

// Pull checks where it will write before it asks the gateway anything.
func TestPullChecksBeforeDownloading(t *testing.T) {
	f := newFakeGateway(t)
	a := f.seal(1000)
	c, key := f.client()
	other, err := crypto.GenerateUnitKey("FR/judge")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name      string
		key       *crypto.UnitKey
		id        string
		dir, keep func(t *testing.T, parent string) string
		want      string
		asked     []string // the requests that may be made
	}{
		{
			name: "output directory not empty",
			dir: func(t *testing.T, parent string) string {
				dir := filepath.Join(parent, "out")
				writeFile(t, filepath.Join(dir, "earlier.txt"))
				return dir
			},
			want: "is not empty",
		},
		{
			name: "parent of the output directory missing",
			dir:  func(t *testing.T, parent string) string { return filepath.Join(parent, "missing", "out") },
			want: "cannot write beside the output directory",
		},
		{
			name: "bundle file exists",
			keep: func(t *testing.T, parent string) string {
				p := filepath.Join(parent, "kept.evx")
				writeFile(t, p)
				return p
			},
			want: "exists; it is never replaced",
		},
		{
			name: "directory of the bundle file missing",
			keep: func(t *testing.T, parent string) string { return filepath.Join(parent, "missing", "kept.evx") },
			want: "cannot write the bundle file in",
		},
		{
			name: "malformed bundle id",
			id:   "../../whoami",
			want: "malformed bundle id",
		},
		{
			name:  "not sealed to this unit key",
			key:   other,
			want:  "not to the unit key of this profile (FR/judge)",
			asked: []string{"GET /v1/inbox/" + a.Env.BundleID},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f.mu.Lock()
			f.requests = nil
			f.mu.Unlock()
			parent := t.TempDir()
			dir, keep, id, k := filepath.Join(parent, "out"), "", a.Env.BundleID, key
			if tc.dir != nil {
				dir = tc.dir(t, parent)
			}
			if tc.keep != nil {
				keep = tc.keep(t, parent)
			}
			if tc.id != "" {
				id = tc.id
			}
			if tc.key != nil {
				k = tc.key
			}
			before, _ := os.ReadDir(parent)
			_, err := client.Pull(context.Background(), c, k, id, dir, keep, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("pull: %v; want an error with %q", err, tc.want)
			}
			if got := f.asked(); !slices.Equal(got, tc.asked) {
				t.Errorf("requests %v, want %v", got, tc.asked)
			}
			var names []string
			for _, e := range before {
				names = append(names, e.Name())
			}
			wantNoTraces(t, parent, names...)
		})
	}
}

func writeFile(t *testing.T, path string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("earlier\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

// The gateway's messages reach the terminal only as printable text.
func TestRefusalMessagesArePrintable(t *testing.T) {
	f := newFakeGateway(t)
	c, _ := f.client()
	f.refuse = &api.Error{Code: "forbidden\x1b[2J", Message: "no\x1b]0;pwned\x07 way\u202e\u009b31m\nevx: forged line"}
	_, err := c.Inbox(context.Background())
	var ae *api.Error
	if !errors.As(err, &ae) || ae.HTTPStatus != 500 {
		t.Fatalf("inbox: %v, want the refusal", err)
	}
	want := `no\x1b]0;pwned\x07 way\u202e\u009b31m\x0aevx: forged line`
	if ae.Message != want || string(ae.Code) != `forbidden\x1b[2J` {
		t.Errorf("refusal %q: %q, want %q", ae.Code, ae.Message, want)
	}

	// A message too long for a terminal is cut.
	f.refuse = &api.Error{Code: api.CodeForbidden, Message: strings.Repeat("é", 10_000)}
	if _, err := c.Inbox(context.Background()); !errors.As(err, &ae) || len(ae.Message) > 1010 || !strings.HasSuffix(ae.Message, "é…") {
		t.Errorf("long refusal: %d bytes (%v); want it cut at 1000 bytes", len(ae.Message), err)
	}

	// So is the status line of an answer that is not JSON.
	f.refuse, f.refuseRawBody = nil, "not json"
	if _, err := c.Inbox(context.Background()); err == nil || strings.ContainsAny(err.Error(), "\x1b\x07") || !strings.Contains(err.Error(), "403") {
		t.Errorf("answer without JSON: %v", err)
	}
}

// A pull from real gateways: the bundle is checked and opened, and kept,
// copied when the bundle file is on another file system than the output
// directory.
func TestPullFromGateway(t *testing.T) {
	w := startWorld(t)
	ctx := context.Background()
	de, deKey := w.Client("DE", "forensics")
	res, err := client.Push(ctx, de, client.PushRequest{Key: deKey, To: []string{"FR/prosecutor"}, Files: evxtest.Evidence(t, 100_000),
		Seal: evxtest.SealOptions(), TempDir: t.TempDir(), Wait: 20 * time.Second})
	if err != nil || res.Status.State != api.StateDelivered {
		t.Fatalf("push: %+v, %v", res, err)
	}
	id := res.Envelope.BundleID
	fr, frKey := w.Client("FR", "prosecutor")

	// Another unit key than the one sealed to is refused before anything
	// is downloaded or acknowledged.
	other, err := crypto.GenerateUnitKey("FR/judge")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.Pull(ctx, fr, other, id, filepath.Join(t.TempDir(), "out"), "", nil); !errors.Is(err, crypto.ErrNotRecipient) {
		t.Errorf("pull with another unit key: %v, want %v", err, crypto.ErrNotRecipient)
	}
	if e, err := fr.InboxEntry(ctx, id); err != nil || e.Acknowledged {
		t.Fatalf("inbox entry after a refused pull: %+v, %v; want it unacknowledged", e, err)
	}

	out := filepath.Join(t.TempDir(), "out")
	keepDir, crossDevice := "/dev/shm", true
	if device(t, keepDir) < 0 || device(t, keepDir) == device(t, filepath.Dir(out)) {
		keepDir, crossDevice = t.TempDir(), false
		t.Logf("/dev/shm is not another file system here: the bundle is kept by a hard link")
	}
	keepParent, err := os.MkdirTemp(keepDir, "evx-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(keepParent) })
	keep := filepath.Join(keepParent, "kept.evx")
	pr, err := client.Pull(ctx, fr, frKey, id, out, keep, nil)
	if err != nil {
		t.Fatal(err)
	}
	if pr.BundlePath != keep || pr.BundleCopied != crossDevice {
		t.Errorf("kept at %q, copied %v; want %q, copied %v", pr.BundlePath, pr.BundleCopied, keep, crossDevice)
	}
	b, file, err := crypto.OpenBundleFile(keep)
	if err != nil {
		t.Fatal(err)
	}
	file.Close()
	if b.Envelope.BundleID != id {
		t.Errorf("the kept bundle is %s, want %s", b.Envelope.BundleID, id)
	}
	if info, err := os.Stat(keep); err != nil || info.Mode().Perm() != 0o600 {
		t.Errorf("kept bundle: %v, %v; want mode 0600", info, err)
	}
	if e, err := fr.InboxEntry(ctx, id); err != nil || !e.Acknowledged {
		t.Errorf("inbox entry after the pull: %+v, %v; want it acknowledged", e, err)
	}
}

// device returns the device number of the file system holding path, or -1.
func device(t *testing.T, path string) int64 {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return -1
	}
	return int64(st.Dev)
}

// With the signed directory its gateway kept from the bundle's arrival,
// pull checks the sender against that copy, verified here with the sending
// gateway's key from its gateway's configuration, without a directory
// lookup; a copy not signed by that key, or listing another key, is refused
// before anything is downloaded.
func TestPullChecksTheKeptDirectory(t *testing.T) {
	f := newFakeGateway(t)
	c, key := f.client()
	de := f.dev.Country("DE")
	sender := de.User("forensics").Key.Public().SigningKey
	other, err := crypto.GenerateUnitKey("")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		dir  *crypto.Signed
		want error
	}{
		{"kept and valid", f.signedDirectory(de.Signing.Signer(), sender), nil},
		{"signed by another key", f.signedDirectory(other.Signer(), sender), crypto.ErrUnexpectedSender},
		{"listing another key", f.signedDirectory(de.Signing.Signer(), other.Public().SigningKey), crypto.ErrUnexpectedSender},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f.keptDirectory = tc.dir
			b := f.seal(1000)
			before := len(f.asked())
			res, err := client.Pull(context.Background(), c, key, b.Env.BundleID, filepath.Join(t.TempDir(), "out"), "", nil)
			asked := f.asked()[before:]
			if slices.ContainsFunc(asked, func(r string) bool { return strings.Contains(r, "/v1/directory/") }) {
				t.Errorf("pull looked the sender up although the gateway kept its directory: %q", asked)
			}
			if tc.want != nil {
				if !errors.Is(err, tc.want) {
					t.Fatalf("pull: %v, want %v", err, tc.want)
				}
				if slices.ContainsFunc(asked, func(r string) bool { return strings.HasSuffix(r, "/payload") || strings.HasSuffix(r, "/ack") }) {
					t.Errorf("pull downloaded or acknowledged after a failed sender check: %q", asked)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(res.SenderChecked, "signed directory issued 2026-12-01T10:00:00Z") {
				t.Errorf("sender checked %q, want the kept signed directory", res.SenderChecked)
			}
		})
	}
}

// A bundle is pulled while the sending country's gateway is down: the
// recipient checks the sender against the signed directory its gateway
// kept.
func TestPullWhileSenderIsDown(t *testing.T) {
	w := startWorld(t)
	ctx := context.Background()
	de, deKey := w.Client("DE", "forensics")
	res, err := client.Push(ctx, de, client.PushRequest{Key: deKey, To: []string{"FR/prosecutor"}, Files: evxtest.Evidence(t, 10_000),
		Seal: evxtest.SealOptions(), TempDir: t.TempDir(), Wait: 20 * time.Second})
	if err != nil || res.Status.State != api.StateDelivered {
		t.Fatalf("push: %+v, %v", res, err)
	}
	w.Stop(t, "DE")
	fr, frKey := w.Client("FR", "prosecutor")
	pr, err := client.Pull(ctx, fr, frKey, res.Envelope.BundleID, filepath.Join(t.TempDir(), "out"), "", nil)
	if err != nil {
		t.Fatalf("pull while DE is down: %v", err)
	}
	if !pr.SenderPinned || !strings.Contains(pr.SenderChecked, "DE's signed directory") {
		t.Errorf("sender pinned %v, checked %q; want the kept signed directory", pr.SenderPinned, pr.SenderChecked)
	}
}
