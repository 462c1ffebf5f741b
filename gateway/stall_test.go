package gateway

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
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"evx/api"
	"evx/crypto"
	"evx/internal/evxtest"
	"evx/storage"
	"evx/storage/storagetest"
	"evx/transfer"
)

// apiHTTPClient returns an HTTP client of country's API presenting user's
// certificate, over HTTP/2 if h2 is set, HTTP/1.1 otherwise.
func (tw *testWorld) apiHTTPClient(t *testing.T, country, user string, h2 bool) *http.Client {
	t.Helper()
	c := tw.Dev.Country(country)
	tr := &http.Transport{TLSClientConfig: &tls.Config{
		MinVersion: tls.VersionTLS13, RootCAs: c.CAPool(), Certificates: []tls.Certificate{c.User(user).Cert},
	}, ForceAttemptHTTP2: h2}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// uploadAnswer is an answer to an upload: the status, and the outbox
// status or the error.
type uploadAnswer struct {
	resp   *http.Response
	status api.OutboxStatus
	err    *api.Error
}

// postBundle uploads b with body as its body, declaring the payload's
// length, and returns the answer. ctx bounds the wait for it.
func (tw *testWorld) postBundle(t *testing.T, ctx context.Context, hc *http.Client, country string, b *evxtest.Bundle, mode api.DeliveryMode, body io.Reader) *uploadAnswer {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, "POST", tw.URL(country)+"/v1/bundles?deliver="+string(mode), body)
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = int64(len(b.Payload))
	req.Header.Set("Content-Type", "application/octet-stream")
	req.Header.Set(api.HeaderEnvelope, base64.StdEncoding.EncodeToString(b.EnvJSON))
	req.Header.Set(api.HeaderSignature, base64.StdEncoding.EncodeToString(b.Sig))
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("no answer to the upload: %v", err)
	}
	a := &uploadAnswer{resp: resp}
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading the answer: %v", err)
	}
	// An HTTP/2 response body's Close waits for the request body to end.
	if h, ok := body.(*heldBody); ok {
		h.abandon()
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var e api.ErrorBody
		if json.Unmarshal(data, &e) != nil || e.Error == nil {
			t.Fatalf("answer %s: %q", resp.Status, data)
		}
		a.err = e.Error
		return a
	}
	if err := json.Unmarshal(data, &a.status); err != nil {
		t.Fatalf("answer %q: %v", data, err)
	}
	return a
}

// heldBody is an upload body that yields its data up to hold, then waits
// until it is abandoned, and fails.
type heldBody struct {
	ctx    context.Context
	data   []byte
	hold   int
	off    int
	sent   atomic.Int64
	finish chan struct{}
	once   sync.Once
}

func newHeldBody(t *testing.T, ctx context.Context, data []byte, hold int) *heldBody {
	h := &heldBody{ctx: ctx, data: data, hold: hold, finish: make(chan struct{})}
	t.Cleanup(h.abandon)
	return h
}

// abandon makes the body fail instead of yielding the rest.
func (h *heldBody) abandon() { h.once.Do(func() { close(h.finish) }) }

func (h *heldBody) Read(p []byte) (int, error) {
	if h.off == h.hold {
		// Net/http's client waits for the body even when the request's
		// context is done.
		select {
		case <-h.finish:
		case <-h.ctx.Done():
		}
		return 0, errors.New("upload abandoned by the test")
	}
	n := copy(p, h.data[h.off:h.hold])
	h.off += n
	h.sent.Add(int64(n))
	return n, nil
}

// debrisBackend makes a storage backend for a country and returns with it
// a check that no storage object is left half-written: no temporary file
// on disk, no incomplete multipart upload on S3.
type debrisBackend func(tb testing.TB) (storage.Backend, func(t *testing.T))

func diskWithDebris(tb testing.TB) (storage.Backend, func(t *testing.T)) {
	d, err := storage.NewDisk(tb.TempDir())
	if err != nil {
		tb.Fatal(err)
	}
	return d, func(t *testing.T) {
		t.Helper()
		// Disk writes each object under root/.tmp first, named after
		// the top of its key. Uploads are Creates under outbox/ and
		// inbox/; the transfer log, the witness and the inclusion checks
		// write at any time, and their files come and go meanwhile.
		all, err := os.ReadDir(filepath.Join(d.Root(), ".tmp"))
		if err != nil {
			t.Fatal(err)
		}
		var tmp []string
		for _, e := range all {
			if strings.HasPrefix(e.Name(), "create-outbox-") || strings.HasPrefix(e.Name(), "create-inbox-") {
				tmp = append(tmp, e.Name())
			}
		}
		if len(tmp) > 0 {
			t.Errorf("temporary files left: %v", tmp)
		}
	}
}

// s3WithDebris uses the smallest part size, so that a payload of a few
// MiB is a multipart upload.
func s3WithDebris(tb testing.TB) (storage.Backend, func(t *testing.T)) {
	cfg := storagetest.S3Env(tb)
	cfg.Bucket = storagetest.NewLockBucket(tb, cfg, "evx-test-")
	cfg.ObjectLock, cfg.LockMode = true, "GOVERNANCE"
	cfg.PartSize = storage.MinPartSize
	s, err := storage.NewS3(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	return s, func(t *testing.T) {
		t.Helper()
		c := storagetest.AdminClient(t, cfg)
		for u := range c.ListIncompleteUploads(context.Background(), cfg.Bucket, "", true) {
			if u.Err != nil {
				t.Fatal(u.Err)
			}
			t.Errorf("incomplete multipart upload left: %s", u.Key)
		}
	}
}

var debrisBackends = []struct {
	name string
	new  debrisBackend
}{
	{"Disk", diskWithDebris},
	{"S3", s3WithDebris},
}

// An upload whose body stops is ended with upload-stalled once
// UploadStallTimeout passes without a byte, queued or direct, over HTTP/1.1
// or HTTP/2; it leaves nothing behind, and the bundle can be uploaded again
// at once.
func TestUploadStalled(t *testing.T) {
	for _, be := range debrisBackends {
		t.Run(be.name, func(t *testing.T) { testUploadStalled(t, be.new) })
	}
}

func testUploadStalled(t *testing.T, newBackend debrisBackend) {
	debris := map[string]func(*testing.T){}
	tw := newTestWorld(t, func(t testing.TB, id string) storage.Backend {
		b, check := newBackend(t)
		debris[id] = check
		return b
	}, func(id string, o *Options) {
		o.UploadStallTimeout = 300 * time.Millisecond
	})
	tw.Start(t, "DE")
	tw.Start(t, "FR")
	_, deKey := tw.Client("DE", "forensics")
	de, _ := tw.Client("DE", "forensics")
	prosecutor := []crypto.PublicKey{tw.recipientKey("FR", "prosecutor")}

	for _, mode := range []api.DeliveryMode{api.Queue, api.Direct} {
		for _, h2 := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s h2=%v", mode, h2), func(t *testing.T) {
				// More than one part on S3; the body stops in the second.
				b := evxtest.Seal(t, deKey, prosecutor, 6<<20)
				id := b.Env.BundleID
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				hc := tw.apiHTTPClient(t, "DE", "forensics", h2)
				a := tw.postBundle(t, ctx, hc, "DE", b, mode, newHeldBody(t, ctx, b.Payload, len(b.Payload)-512<<10))
				if a.err == nil || a.err.Code != api.CodeUploadStalled || a.resp.StatusCode != http.StatusRequestTimeout {
					t.Fatalf("answer %s %+v %+v, want 408 upload-stalled", a.resp.Status, a.err, a.status)
				}
				if want := map[bool]int{false: 1, true: 2}[h2]; a.resp.ProtoMajor != want {
					t.Fatalf("answered over HTTP/%d, want HTTP/%d", a.resp.ProtoMajor, want)
				}
				if !h2 && !a.resp.Close {
					t.Error("the answer does not close the connection")
				}
				wantKeys(t, tw.Stores["DE"], outboxPrefix+id+"/")
				// Once the events so far are integrated, the transfer
				// log writes nothing while the check looks for
				// temporary files.
				noDebris := func(id string) {
					t.Helper()
					if err := tw.gw(id).tlog.Sync(context.Background()); err != nil {
						t.Fatal(err)
					}
					debris[id](t)
				}
				noDebris("DE")

				// The lock is free: the same bundle goes through.
				st, err := uploadMode(ctx, de, b, mode)
				if err != nil || st.State == api.StateRefused {
					t.Fatalf("uploading the bundle again: %+v, %v", st, err)
				}
				noDebris("DE")
				if mode == api.Direct {
					// FR stores an offer under the bundle's lock, so
					// the stalled attempt had ended there too.
					noDebris("FR")
				}
			})
		}
	}
}

// pacedBody yields its data a chunk per tick: an upload that is slow but
// never stops. The ticks are the scenario, not synchronisation.
type pacedBody struct {
	data  []byte
	chunk int
	tick  *time.Ticker
}

func (p *pacedBody) Read(b []byte) (int, error) {
	if len(p.data) == 0 {
		return 0, io.EOF
	}
	<-p.tick.C
	n := copy(b[:min(len(b), p.chunk)], p.data)
	p.data = p.data[n:]
	return n, nil
}

// An upload that brings a byte now and then is never cut, however long it
// takes as a whole; nor is its connection by the handshake deadline.
func TestUploadSlowNotStalled(t *testing.T) {
	const stall = 300 * time.Millisecond
	tw := newTestWorld(t, diskStore, func(id string, o *Options) {
		o.UploadStallTimeout = stall
		o.APIHandshakeTimeout = stall
	})
	tw.Start(t, "DE")
	tw.Start(t, "FR")
	_, deKey := tw.Client("DE", "forensics")
	prosecutor := []crypto.PublicKey{tw.recipientKey("FR", "prosecutor")}
	for _, mode := range []api.DeliveryMode{api.Queue, api.Direct} {
		t.Run(string(mode), func(t *testing.T) {
			b := evxtest.Seal(t, deKey, prosecutor, 160_000)
			// 16 chunks of 10 KB, one per 100 ms: five stall timeouts in
			// all, a third of one between chunks.
			tick := time.NewTicker(stall / 3)
			defer tick.Stop()
			body := &pacedBody{data: b.Payload, chunk: (len(b.Payload) + 15) / 16, tick: tick}
			a := tw.postBundle(t, context.Background(), tw.apiHTTPClient(t, "DE", "forensics", false), "DE", b, mode, body)
			if a.err != nil || a.status.State == api.StateRefused {
				t.Fatalf("slow upload: %+v %+v", a.err, a.status)
			}
		})
	}
}

// A direct upload the peer refuses is answered at once, without waiting
// for the rest of the body: net/http would otherwise read up to 256 KiB of
// it first, from a client that may send it slowly or not at all.
func TestDirectRefusalAnsweredAtOnce(t *testing.T) {
	tw := newTestWorld(t, diskStore, func(id string, o *Options) {
		if id == "FR" {
			o.MaxBundleSize = 200_000
		}
	})
	tw.Start(t, "DE")
	tw.Start(t, "FR")
	_, deKey := tw.Client("DE", "forensics")
	b := evxtest.Seal(t, deKey, []crypto.PublicKey{tw.recipientKey("FR", "prosecutor")}, 240_000)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	body := newHeldBody(t, ctx, b.Payload, 64<<10)
	a := tw.postBundle(t, ctx, tw.apiHTTPClient(t, "DE", "forensics", false), "DE", b, api.Direct, body)
	if a.err != nil || a.status.State != api.StateRefused || a.status.Refusal.Code != transfer.CodeTooLarge {
		t.Fatalf("answer %+v %+v, want refused as too-large", a.err, a.status)
	}
	if n := body.sent.Load(); n >= int64(len(b.Payload)) {
		t.Errorf("the client had sent all %d bytes before the answer", n)
	}
	if !a.resp.Close {
		t.Error("the answer does not close the connection")
	}
}

// refusingStore refuses every inbox payload after reading some of it, as a
// peer that refuses a bundle part-way may.
type refusingStore struct {
	lockingStore
	after int64
}

func (s *refusingStore) CreateLocked(ctx context.Context, key string, r io.Reader, size int64, until time.Time) error {
	if isOuterLayerKey(key) {
		io.CopyN(io.Discard, r, s.after)
		return transfer.Reject(transfer.CodeNotAccepted, "refused by the test after %d bytes", s.after)
	}
	return s.lockingStore.CreateLocked(ctx, key, r, size, until)
}

// countingReader counts what has been read from it.
type countingReader struct {
	r io.Reader
	n atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// A direct upload that the peer refuses part-way is answered while the
// submitter is still sending, and the rest is not read.
func TestDirectRefusedMidway(t *testing.T) {
	tw := newTestWorld(t, func(t testing.TB, id string) storage.Backend {
		if id == "FR" {
			return &refusingStore{lockingStore: locking(t, diskStore(t, id)), after: 1 << 20}
		}
		return diskStore(t, id)
	}, nil)
	tw.Start(t, "DE")
	tw.Start(t, "FR")
	_, deKey := tw.Client("DE", "forensics")
	b := evxtest.Seal(t, deKey, []crypto.PublicKey{tw.recipientKey("FR", "prosecutor")}, 32<<20)
	body := &countingReader{r: bytes.NewReader(b.Payload)}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	a := tw.postBundle(t, ctx, tw.apiHTTPClient(t, "DE", "forensics", false), "DE", b, api.Direct, body)
	if a.err != nil || a.status.State != api.StateRefused || a.status.Refusal.Code != transfer.CodeNotAccepted {
		t.Fatalf("answer %+v %+v, want refused as not-accepted", a.err, a.status)
	}
	if n := body.n.Load(); n >= int64(len(b.Payload)) {
		t.Errorf("the client had sent all %d bytes before the answer", n)
	}
}
