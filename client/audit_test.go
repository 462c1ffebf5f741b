package client_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"evx/api"
	"evx/audit"
	"evx/client"
	"evx/internal/devenv"
	"evx/internal/evxtest"

	"golang.org/x/mod/sumdb/note"
)

// An auditor verifies a live gateway's log through the API, and exports it
// for offline verification.
func TestLogSourceVerifyExport(t *testing.T) {
	w := startWorld(t)
	ctx := t.Context()
	de, deKey := w.Client("DE", "forensics")
	if _, err := client.Push(ctx, de, client.PushRequest{Key: deKey, To: []string{"FR/prosecutor"}, Files: evxtest.Evidence(t, 1000),
		Seal: evxtest.SealOptions(), TempDir: t.TempDir(), Wait: 20 * time.Second}); err != nil {
		t.Fatal(err)
	}
	aud, _ := w.Client("DE", "auditor")
	logKey, _ := w.Dev.Country("DE").Signing.Signer().LogVerifierKeys("DE")
	v, err := note.NewVerifier(logKey)
	if err != nil {
		t.Fatal(err)
	}
	src := aud.Log()
	r, err := audit.Verify(ctx, src, audit.VerifyOptions{Log: v})
	if err != nil {
		t.Fatal(err)
	}
	if r.Origin != "evx.transfer-log/DE" {
		t.Errorf("verified %+v", r)
	}
	// The history ends before the checkpoint read, however far the log
	// has grown since.
	sizes, err := src.CheckpointSizes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(sizes) != r.History {
		t.Errorf("history %v, verified %d", sizes, r.History)
	}
	for _, n := range sizes {
		if n >= r.N {
			t.Errorf("history %v lists a size from the verified %d on", sizes, r.N)
		}
	}
	// From a saved checkpoint on, only the later ones.
	if later, err := aud.Log().Since(r.N).CheckpointSizes(ctx); err != nil || len(later) > 0 && later[0] < r.N {
		t.Errorf("history since %d: %v, %v", r.N, later, err)
	}

	dir := filepath.Join(t.TempDir(), "export")
	n, err := audit.Export(ctx, aud.Log(), dir, audit.ExportOptions{LogKey: logKey})
	if err != nil {
		t.Fatal(err)
	}
	keys, err := audit.Dir(dir).ReadFile(ctx, "keys")
	if err != nil || string(keys) != "log "+logKey+"\n" {
		t.Errorf("keys file %q: %v", keys, err)
	}
	if er, err := audit.Verify(ctx, audit.Dir(dir), audit.VerifyOptions{Log: v, Saved: r.Checkpoint}); err != nil || er.N != n || er.SavedSize != r.N {
		t.Errorf("export of size %d: %+v, %v", n, er, err)
	}

	// Not an auditor: refused by the gateway, as the API error it is.
	if _, err := de.Log().ReadFile(ctx, "checkpoint"); !isAPIError(err, api.CodeForbidden) {
		t.Errorf("submitter reading the checkpoint: %v", err)
	}
}

func isAPIError(err error, code api.Code) bool {
	var ae *api.Error
	return errors.As(err, &ae) && ae.Code == code
}

// hostileLog is an HTTPS server with FR's gateway certificate that
// answers the log's paths with serve, and records them.
type hostileLog struct {
	srv *httptest.Server
	dev *devenv.World

	mu    sync.Mutex
	asked []string
}

func newHostileLog(t *testing.T, serve http.HandlerFunc) *hostileLog {
	t.Helper()
	dev, err := devenv.New("FR")
	if err != nil {
		t.Fatal(err)
	}
	h := &hostileLog{dev: dev}
	fr := dev.Country("FR")
	h.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.mu.Lock()
		h.asked = append(h.asked, r.URL.RequestURI())
		h.mu.Unlock()
		serve(w, r)
	}))
	h.srv.TLS = &tls.Config{Certificates: []tls.Certificate{fr.Cert}, ClientAuth: tls.RequireAndVerifyClientCert,
		ClientCAs: fr.CAPool(), MinVersion: tls.VersionTLS13}
	h.srv.StartTLS()
	t.Cleanup(h.srv.Close)
	return h
}

func (h *hostileLog) client() *client.Client {
	fr := h.dev.Country("FR")
	return client.New(h.srv.URL, fr.User("auditor").Cert, &tls.Config{RootCAs: fr.CAPool()})
}

func (h *hostileLog) requests() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.asked...)
}

// A gateway cannot make the auditor's client read without end: each file
// is bounded by what a file at its path may hold, the history by its
// order and length; paths that are not the log's are never asked for.
func TestLogSourceBounds(t *testing.T) {
	const checkpoint = "evx.transfer-log/FR\n5\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n\n— evx.transfer-log/FR AAAA\n"
	h := newHostileLog(t, func(w http.ResponseWriter, r *http.Request) {
		path := strings.TrimPrefix(r.URL.Path, "/v1/log/")
		switch {
		case path == "checkpoint":
			w.Write([]byte(checkpoint))
		case path == "checkpoints/1":
			// A checkpoint of 64 KiB and one byte, announced.
			w.Header().Set("Content-Length", strconv.Itoa(64<<10+1))
			w.Write(make([]byte, 64<<10+1))
		case path == "checkpoints/2":
			// The same, unannounced.
			w.(http.Flusher).Flush()
			w.Write(make([]byte, 64<<10+1))
		case path == "tile/0/000.p/2":
			w.Write(make([]byte, 65)) // two hashes are 64 bytes
		case path == "tile/0/000.p/3":
			w.Write(make([]byte, 96))
		case path == "tile/entries/000.p/1":
			w.(http.Flusher).Flush()
			w.Write(make([]byte, 2+audit.MaxEntrySize+1))
		case path == "checkpoints" && r.URL.Query().Get("from") == "0":
			fmt.Fprint(w, `{"sizes": [1, 2, 3, 7, 9], "truncated": true}`)
		case path == "checkpoints" && r.URL.Query().Get("from") == "10":
			fmt.Fprint(w, `{"sizes": [], "truncated": false}`)
		case path == "checkpoints" && r.URL.Query().Get("from") == "100":
			fmt.Fprint(w, `{"sizes": [100, 101, 101], "truncated": false}`)
		case path == "checkpoints" && r.URL.Query().Get("from") == "200":
			fmt.Fprint(w, `{"sizes": [], "truncated": true}`)
		case path == "checkpoints" && r.URL.Query().Get("from") == "300":
			fmt.Fprint(w, `{"sizes": [299], "truncated": false}`)
		default:
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprintf(w, `{"error": {"code": "not-in-log", "message": "no %s"}}`, path)
		}
	})
	ctx := t.Context()
	c := h.client()

	// Refused before anything is sent.
	for _, path := range []string{"../inbox", "tile/0/000.p/0", "tile/0/000.p/257", "tile/8/000", "keys", "checkpoints/01", "checkpoints/", "tile/0/000?x"} {
		if _, err := c.Log().ReadFile(ctx, path); err == nil || !strings.Contains(err.Error(), "is not a file of the transfer log") {
			t.Errorf("ReadFile(%q): %v", path, err)
		}
	}
	if asked := h.requests(); len(asked) != 0 {
		t.Errorf("asked %v", asked)
	}

	for _, path := range []string{"checkpoints/1", "checkpoints/2", "tile/0/000.p/2", "tile/entries/000.p/1"} {
		if _, err := c.Log().ReadFile(ctx, path); !errors.Is(err, client.ErrBadAnswer) {
			t.Errorf("ReadFile(%q): %v, want ErrBadAnswer", path, err)
		}
	}
	if data, err := c.Log().ReadFile(ctx, "tile/0/000.p/3"); err != nil || len(data) != 96 {
		t.Errorf("a full-size tile: %d bytes, %v", len(data), err)
	}
	if _, err := c.Log().ReadFile(ctx, "tile/0/001"); !isAPIError(err, api.CodeNotInLog) {
		t.Errorf("a missing tile: %v", err)
	}

	// Before a checkpoint was read, the whole history; after, what is
	// below it.
	src := c.Log()
	if sizes, err := src.CheckpointSizes(ctx); err != nil || fmt.Sprint(sizes) != "[1 2 3 7 9]" {
		t.Errorf("history: %v, %v", sizes, err)
	}
	if _, err := src.ReadFile(ctx, "checkpoint"); err != nil {
		t.Fatal(err)
	}
	if sizes, err := src.CheckpointSizes(ctx); err != nil || fmt.Sprint(sizes) != "[1 2 3]" {
		t.Errorf("history below 5: %v, %v", sizes, err)
	}
	for _, since := range []int64{100, 200, 300} {
		if sizes, err := c.Log().Since(since).CheckpointSizes(ctx); !errors.Is(err, client.ErrBadAnswer) {
			t.Errorf("history from %d: %v, %v; want ErrBadAnswer", since, sizes, err)
		}
	}
}

// A history that never ends is cut off.
func TestLogSourceEndlessHistory(t *testing.T) {
	if testing.Short() {
		t.Skip("asks for 420 pages")
	}
	h := newHostileLog(t, func(w http.ResponseWriter, r *http.Request) {
		from, _ := strconv.ParseInt(r.URL.Query().Get("from"), 10, 64)
		var b strings.Builder
		b.WriteString(`{"truncated": true, "sizes": [`)
		for i := range int64(api.MaxLogCheckpoints) {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(strconv.FormatInt(from+i, 10))
		}
		b.WriteString("]}")
		w.Write([]byte(b.String()))
	})
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	if _, err := h.client().Log().CheckpointSizes(ctx); err == nil || !strings.Contains(err.Error(), "earlier checkpoints: verify from a saved checkpoint on") {
		t.Errorf("endless history: %v", err)
	}
	if n := len(h.requests()); n > (1<<22)/api.MaxLogCheckpoints+1 {
		t.Errorf("%d requests", n)
	}
}
