package gateway

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"evx/api"
	"evx/audit"
	"evx/client"
	"evx/crypto"
	"evx/internal/evxtest"

	"filippo.io/torchwood"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// pushPulled has DE/forensics push a bundle to FR/prosecutor, who pulls
// it, and waits until both logs hold every entry in a checkpoint.
func pushPulled(t *testing.T, tw *testWorld) string {
	t.Helper()
	ctx := t.Context()
	de, deKey := tw.Client("DE", "forensics")
	res, err := client.Push(ctx, de, client.PushRequest{Key: deKey, To: []string{"FR/prosecutor"}, Files: evxtest.Evidence(t, 1000),
		Seal: evxtest.SealOptions(), TempDir: t.TempDir(), Wait: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	fr, frKey := tw.Client("FR", "prosecutor")
	if _, err := client.Pull(ctx, fr, frKey, res.Envelope.BundleID, filepath.Join(t.TempDir(), "out"), "", nil); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"DE", "FR"} {
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := tw.gw(id).tlog.Sync(sctx)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
	}
	return res.Envelope.BundleID
}

// logVerifyOptions returns the keys an auditor of country id's log pins.
func (tw *testWorld) logVerifyOptions(t *testing.T, id string) audit.VerifyOptions {
	t.Helper()
	logKey, _ := tw.Dev.Country(id).Signing.Signer().LogVerifierKeys(id)
	v, err := note.NewVerifier(logKey)
	if err != nil {
		t.Fatal(err)
	}
	return audit.VerifyOptions{Log: v}
}

// Only auditors read the log's files; operators read its status too;
// auditors get no payload, nor anything else of the inbox.
func TestLogAPIRoles(t *testing.T) {
	tw := startWorld(t, diskStore)
	ctx := t.Context()
	id := pushPulled(t, tw)

	for _, country := range []string{"DE", "FR"} {
		for _, user := range []string{"forensics", "prosecutor", "operator"} {
			c, _ := tw.Client(country, user)
			for _, path := range []string{"checkpoint", "checkpoints/1", "tile/0/000.p/1", "tile/entries/000.p/1"} {
				if _, err := c.Log().ReadFile(ctx, path); !isAPIError(err, 403, "forbidden") {
					t.Errorf("%s/%s reading %s: %v, want 403 forbidden", country, user, path, err)
				}
			}
			if _, err := c.Log().CheckpointSizes(ctx); !isAPIError(err, 403, "forbidden") {
				t.Errorf("%s/%s listing checkpoints: %v, want 403 forbidden", country, user, err)
			}
			// Unknown paths under /v1/log/ are refused for the role first,
			// so that the layout is not probed.
			if got := rawGet(t, tw, country, user, "/v1/log/no-such-file"); got.status != 403 {
				t.Errorf("%s/%s GET /v1/log/no-such-file: %d, want 403", country, user, got.status)
			}
			st, err := c.LogStatus(ctx)
			switch {
			case user == "operator" && err != nil:
				t.Errorf("%s/operator status: %v", country, err)
			case user == "operator" && (st.Origin != crypto.LogOrigin(country) || st.Size < 3):
				t.Errorf("%s/operator status %+v", country, st)
			case user != "operator" && !isAPIError(err, 403, "forbidden"):
				t.Errorf("%s/%s status: %v, want 403 forbidden", country, user, err)
			}
		}
	}

	// The auditor of FR, where the bundle is, gets none of it.
	aud, _ := tw.Client("FR", "auditor")
	if _, err := aud.Inbox(ctx); !isAPIError(err, 403, "forbidden") {
		t.Errorf("auditor inbox: %v", err)
	}
	if _, err := aud.InboxEntry(ctx, id); !isAPIError(err, 403, "forbidden") {
		t.Errorf("auditor inbox entry: %v", err)
	}
	var sink strings.Builder
	if _, err := aud.Download(ctx, id, &sink); !isAPIError(err, 403, "forbidden") || sink.Len() != 0 {
		t.Errorf("auditor payload: %v, %d bytes", err, sink.Len())
	}
	if err := aud.Ack(ctx, id); !isAPIError(err, 403, "forbidden") {
		t.Errorf("auditor ack: %v", err)
	}
	if _, err := aud.Outbox(ctx, "", 0); !isAPIError(err, 403, "forbidden") {
		t.Errorf("auditor outbox: %v", err)
	}
	if _, err := aud.LogStatus(ctx); err != nil {
		t.Errorf("auditor status: %v", err)
	}
}

// An auditor verifies each gateway's log through the API, exports it and
// verifies the export offline; the status says what the log published.
func TestLogAPIVerify(t *testing.T) {
	tw := startWorld(t, diskStore)
	ctx := t.Context()
	id := pushPulled(t, tw)
	for _, country := range []string{"DE", "FR"} {
		aud, _ := tw.Client(country, "auditor")
		opts := tw.logVerifyOptions(t, country)
		r, err := audit.Verify(ctx, aud.Log(), opts)
		if err != nil {
			t.Fatalf("%s: %v", country, err)
		}
		// gateway-started, then three entries about the bundle at least.
		if r.N < 4 || r.Origin != crypto.LogOrigin(country) {
			t.Errorf("%s: verified %+v", country, r)
		}
		st, err := aud.LogStatus(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.Size < r.N || st.AgeSeconds < 0 || st.Published.IsZero() || len(st.Witnesses) != 1 {
			t.Errorf("%s: status %+v after verifying size %d", country, st, r.N)
		}
		peer := map[string]string{"DE": "FR", "FR": "DE"}[country]
		if w := st.Witnesses[0]; w.Peer != peer || w.Name != crypto.WitnessName(peer) {
			t.Errorf("%s: witness %+v", country, w)
		}

		dir := filepath.Join(t.TempDir(), "export")
		logKey, _ := tw.Dev.Country(country).Signing.Signer().LogVerifierKeys(country)
		n, err := audit.Export(ctx, aud.Log(), dir, audit.ExportOptions{LogKey: logKey})
		if err != nil {
			t.Fatalf("%s: export: %v", country, err)
		}
		opts.Saved = r.Checkpoint
		if _, err := audit.Verify(ctx, audit.Dir(dir), opts); err != nil || n < r.N {
			t.Errorf("%s: export of size %d (verified %d before): %v", country, n, r.N, err)
		}

		// The last entry is the bundle's (retrieval-acknowledged at FR,
		// delivered at DE), with a proof through the API that verifies
		// offline.
		last := lastEntry(t, dir, n)
		if e, err := audit.ParseEntry(last); err != nil || e.BundleID != id {
			t.Errorf("%s: last entry %s: %v", country, last, err)
		}
		p, err := audit.Prove(ctx, aud.Log(), n-1)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := audit.VerifyProof(p, last, tw.logVerifyOptions(t, country)); err != nil {
			t.Errorf("%s: proof of entry %d: %v", country, p.Index, err)
		}
	}
}

// lastEntry returns the last entry of the export in dir, of size n.
func lastEntry(t *testing.T, dir string, n int64) []byte {
	t.Helper()
	b := tlog.Tile{H: torchwood.TileHeight, L: -1, N: (n - 1) / torchwood.TileWidth, W: int((n-1)%torchwood.TileWidth + 1)}
	data, err := audit.Dir(dir).ReadFile(t.Context(), torchwood.TilePath(b))
	if err != nil {
		t.Fatal(err)
	}
	var e []byte
	for rest := data; len(rest) > 0; {
		if e, rest, err = torchwood.ReadTileEntry(rest); err != nil {
			t.Fatal(err)
		}
	}
	return e
}

type rawAnswer struct {
	status int
	header http.Header
	body   []byte
}

// rawGet sends GET path to country's API as user, with no client-side
// checks of the path.
func rawGet(t *testing.T, tw *testWorld, country, user, path string) rawAnswer {
	t.Helper()
	u := tw.Dev.Country(country).User(user)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs: tw.Dev.Country(country).CAPool(), Certificates: []tls.Certificate{u.Cert}}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	defer hc.CloseIdleConnections()
	req, err := http.NewRequestWithContext(t.Context(), "GET", tw.URL(country)+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		t.Fatal(err)
	}
	return rawAnswer{resp.StatusCode, resp.Header, body}
}

func (a rawAnswer) code() api.Code {
	var e api.ErrorBody
	if json.Unmarshal(a.body, &e) != nil || e.Error == nil {
		return ""
	}
	return e.Error.Code
}

// Paths are checked strictly; tiles are served as immutable, checkpoints
// not cached.
func TestLogAPIPaths(t *testing.T) {
	tw := startWorld(t, diskStore)
	pushPulled(t, tw)
	get := func(path string) rawAnswer { return rawGet(t, tw, "DE", "auditor", path) }

	cp := get("/v1/log/checkpoint")
	if cp.status != 200 || !strings.HasPrefix(string(cp.body), "evx.transfer-log/DE\n") ||
		cp.header.Get("Cache-Control") != "no-store" || !strings.HasPrefix(cp.header.Get("Content-Type"), "text/plain") {
		t.Fatalf("checkpoint: %d %v\n%s", cp.status, cp.header, cp.body)
	}
	size := strings.Split(string(cp.body), "\n")[1]
	bundle := get("/v1/log/tile/entries/000.p/" + size)
	if bundle.status != 200 || bundle.header.Get("Cache-Control") != "private, max-age=31536000, immutable" ||
		bundle.header.Get("Content-Type") != "application/octet-stream" || !strings.Contains(string(bundle.body), `"event":"gateway-started"`) {
		t.Errorf("entry bundle: %d %v\n%q", bundle.status, bundle.header, bundle.body)
	}
	n, err := strconv.ParseInt(size, 10, 64)
	if err != nil || n >= 256 {
		t.Fatalf("checkpoint size %q: want a small log", size)
	}
	if tile := get("/v1/log/tile/0/000.p/" + size); tile.status != 200 || len(tile.body) != 32*int(n) {
		t.Errorf("hash tile: %d, %d bytes", tile.status, len(tile.body))
	}

	for _, path := range []string{
		"tile/0/000.p/0", "tile/0/000.p/256", "tile/0/000.p/007", "tile/0/0", "tile/0/x000/000", "tile/0/1000",
		"tile/entries/000.P/1", "tile/8/000", "tile/64/000", "tile/0", "tile/", "tile/0/000/", "tile/entries/000.p/",
		"checkpoints/", "checkpoints/01", "checkpoints/-1", "checkpoints/1x", "checkpoints/99999999999999999999",
		"Checkpoint", "checkpoint/", "keys", "batch/00000000000000000000", "tile/0/" + strings.Repeat("x001/", 12) + "001",
		"tile/0/000%2e", "tile/0/%00",
	} {
		if got := get("/v1/log/" + path); got.status != 400 || got.code() != api.CodeBadLogPath {
			t.Errorf("GET /v1/log/%s: %d %s, want 400 bad-log-path", path, got.status, got.body)
		}
	}
	// Paths with dot segments are cleaned by the server, which redirects
	// to the clean path without serving anything.
	for _, path := range []string{"tile/../../inbox", "tile/entries/../0/000", "./checkpoint"} {
		if got := get("/v1/log/" + path); got.status != http.StatusTemporaryRedirect && got.status != http.StatusMovedPermanently {
			t.Errorf("GET /v1/log/%s: %d %s, want a redirect", path, got.status, got.body)
		}
	}
	for _, path := range []string{"tile/0/001", "tile/entries/x001/000", "checkpoints/999999", "tile/3/000.p/1", "tile/7/000"} {
		if got := get("/v1/log/" + path); got.status != 404 || got.code() != api.CodeNotInLog {
			t.Errorf("GET /v1/log/%s: %d %s, want 404 not-in-log", path, got.status, got.body)
		}
	}

	var list api.LogCheckpoints
	got := get("/v1/log/checkpoints?from=0")
	if got.status != 200 || json.Unmarshal(got.body, &list) != nil || list.Truncated {
		t.Fatalf("checkpoints: %d %s", got.status, got.body)
	}
	for i, m := range list.Sizes {
		if m >= n || i > 0 && m <= list.Sizes[i-1] {
			t.Errorf("checkpoint sizes %v, latest %d", list.Sizes, n)
		}
		ms := strconv.FormatInt(m, 10)
		if c := get("/v1/log/checkpoints/" + ms); c.status != 200 || !strings.HasPrefix(string(c.body), "evx.transfer-log/DE\n"+ms+"\n") {
			t.Errorf("checkpoints/%d: %d %s", m, c.status, c.body)
		}
	}
	if got := get("/v1/log/checkpoints?from=" + size); got.status != 200 || !strings.Contains(string(got.body), `"sizes": []`) {
		t.Errorf("checkpoints from %s: %d %s", size, got.status, got.body)
	}
	for _, from := range []string{"-1", "01", "x", "1e3", "99999999999999999999"} {
		if got := get("/v1/log/checkpoints?from=" + from); got.status != 400 || got.code() != api.CodeBadFrom {
			t.Errorf("checkpoints?from=%s: %d %s", from, got.status, got.body)
		}
	}
}
