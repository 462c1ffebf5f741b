package audit

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"evx/storage"

	"filippo.io/torchwood"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// verifyLog verifies the log read from src and returns the report.
func verifyLog(t testing.TB, src Source, opts VerifyOptions) *Report {
	t.Helper()
	r, err := Verify(t.Context(), src, opts)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	return r
}

func newWitness(t testing.TB, name string) *torchwood.CosignatureSigner {
	t.Helper()
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	w, err := torchwood.NewCosignatureSigner(name, key)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// cosign returns w's cosignature line of the checkpoint signed.
func cosign(t testing.TB, signed []byte, w note.Signer) []byte {
	t.Helper()
	text, _, _ := strings.Cut(string(signed), "\n\n")
	out, err := note.Sign(&note.Note{Text: text + "\n"}, w)
	if err != nil {
		t.Fatal(err)
	}
	return out[len(text)+2:]
}

// buildLog builds, in st, a log of entries 0 to 599 made by mk, with
// checkpoints at 300 and 600.
func buildLog(t testing.TB, st storage.Backend, k testKey, mk func(int) []byte) *Log {
	t.Helper()
	l := openLog(t, st, config(k))
	for _, r := range [][2]int{{0, 300}, {300, 600}} {
		var es [][]byte
		for i := r[0]; i < r[1]; i++ {
			es = append(es, mk(i))
		}
		appendAll(t, l, es, 16)
		if err := l.integrateAll(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	return l
}

// fixture is a log of 600 entries cosigned by two witnesses, whose
// checkpoint was verified and saved, in a form that tests can tamper with.
type fixture struct {
	k      testKey
	w1, w2 *torchwood.CosignatureSigner
	opts   VerifyOptions // with the saved checkpoint
	src    Source
	get    func(path string) []byte
	put    func(path string, data []byte)
	// setCosignature stores (or, if nil, removes) the cosignature of the
	// latest checkpoint by the witness named name.
	setCosignature func(name string, cosig []byte)
}

// fixtures runs f on a fixture of a log in Disk storage and on one of an
// export of it.
func fixtures(t *testing.T, f func(t *testing.T, fx *fixture)) {
	t.Run("Disk", func(t *testing.T) { f(t, newFixture(t, false)) })
	t.Run("Export", func(t *testing.T) { f(t, newFixture(t, true)) })
}

func newFixture(t *testing.T, export bool) *fixture {
	fx := &fixture{k: newKey(t, testOrigin), w1: newWitness(t, "evx.witness/FR"), w2: newWitness(t, "evx.witness/NL")}
	st := newDisk(t)
	l := buildLog(t, st, fx.k, entry)
	signed, c, _ := l.Checkpoint(t.Context())
	for _, w := range []note.Signer{fx.w1, fx.w2} {
		if err := l.AddCosignature(t.Context(), c.N, cosign(t, signed, w)); err != nil {
			t.Fatal(err)
		}
	}
	fx.opts = VerifyOptions{Log: fx.k.verifier, Witnesses: []note.Verifier{fx.w1.Verifier(), fx.w2.Verifier()}}
	if !export {
		fx.src = l
		fx.get = func(path string) []byte {
			data, err := l.ReadFile(t.Context(), path)
			if err != nil {
				t.Fatal(err)
			}
			return data
		}
		fx.put = func(path string, data []byte) {
			ctx := t.Context()
			if path == "checkpoint" {
				_, v, err := st.ReadVersion(ctx, latestKey, maxCheckpointSize)
				if err == nil {
					_, err = st.Replace(ctx, latestKey, data, v)
				}
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			key := tilePrefix + path
			if n, ok := strings.CutPrefix(path, "checkpoints/"); ok {
				size, _ := parseSize(n)
				key = historyKey(size)
			}
			if err := st.Delete(ctx, key); err != nil {
				t.Fatal(err)
			}
			if err := st.Create(ctx, key, bytes.NewReader(data), int64(len(data))); err != nil {
				t.Fatal(err)
			}
		}
		fx.setCosignature = func(name string, cosig []byte) {
			key := cosignatureDir(c.N) + name
			if err := st.Delete(t.Context(), key); err != nil {
				t.Fatal(err)
			}
			if cosig != nil {
				if err := st.Create(t.Context(), key, bytes.NewReader(cosig), int64(len(cosig))); err != nil {
					t.Fatal(err)
				}
			}
		}
	} else {
		dir := filepath.Join(t.TempDir(), "export")
		keys := ExportOptions{LogKey: fx.k.vkey, WitnessKeys: []string{fx.w1.Verifier().String(), fx.w2.Verifier().String()}}
		if n, err := Export(t.Context(), l, dir, keys); err != nil || n != c.N {
			t.Fatalf("Export: %d, %v", n, err)
		}
		fx.src = Dir(dir)
		fx.get = func(path string) []byte {
			data, err := os.ReadFile(filepath.Join(dir, path))
			if err != nil {
				t.Fatal(err)
			}
			return data
		}
		fx.put = func(path string, data []byte) {
			if err := os.WriteFile(filepath.Join(dir, path), data, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		fx.setCosignature = func(name string, cosig []byte) {
			var out []byte
			for _, line := range bytes.SplitAfter(fx.get("checkpoint"), []byte("\n")) {
				if !bytes.HasPrefix(line, []byte("— "+name+" ")) {
					out = append(out, line...)
				}
			}
			fx.put("checkpoint", append(out, cosig...))
		}
	}
	r := verifyLog(t, fx.src, fx.opts)
	fx.opts.Saved = r.Checkpoint
	return fx
}

// expect checks that verification fails with want, and a message that
// contains each of details.
func (fx *fixture) expect(t *testing.T, want error, details ...string) {
	t.Helper()
	_, err := Verify(t.Context(), fx.src, fx.opts)
	if !errors.Is(err, want) {
		t.Fatalf("Verify: %v; want %v", err, want)
	}
	for _, d := range details {
		if !strings.Contains(err.Error(), d) {
			t.Errorf("Verify: %v; want a message with %q", err, d)
		}
	}
	t.Logf("Verify: %v", err)
}

// bundle1 returns the entries of the second entry bundle, 256 to 511.
func (fx *fixture) bundle1(t *testing.T) [][]byte {
	b, err := parseBundle(fx.get("tile/entries/001"), tileWidth)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (fx *fixture) putBundle1(t *testing.T, entries [][]byte) {
	var data []byte
	for _, e := range entries {
		data, _ = torchwood.AppendTileEntry(data, e)
	}
	fx.put("tile/entries/001", data)
}

func TestVerify(t *testing.T) {
	fixtures(t, func(t *testing.T, fx *fixture) {
		r := verifyLog(t, fx.src, fx.opts)
		if r.N != 600 || r.Origin != testOrigin || len(r.Cosigners) != 2 || r.SavedSize != 600 || r.History != 2 {
			t.Errorf("report %+v", r)
		}
		// The checkpoint saved at size 300 is extended.
		opts := fx.opts
		opts.Saved = fx.get("checkpoints/300")
		if r := verifyLog(t, fx.src, opts); r.SavedSize != 300 {
			t.Errorf("saved size %d", r.SavedSize)
		}
		// One witness of two is enough if the verifier says so.
		fx.setCosignature(fx.w2.Name(), nil)
		opts.MinCosignatures = 1
		verifyLog(t, fx.src, opts)
	})
}

func TestVerifyEntryChanged(t *testing.T) {
	fixtures(t, func(t *testing.T, fx *fixture) {
		b := fx.bundle1(t)
		b[7] = bytes.Clone(b[7])
		b[7][3] ^= 1
		fx.putBundle1(t, b)
		fx.expect(t, ErrEntryChanged, "entry 263")
	})
}

func TestVerifyEntryDropped(t *testing.T) {
	fixtures(t, func(t *testing.T, fx *fixture) {
		b := fx.bundle1(t)
		fx.putBundle1(t, append(b[:9:9], b[10:]...))
		fx.expect(t, ErrEntryMissing, "entry 265 is missing")
	})
}

func TestVerifyEntriesSwapped(t *testing.T) {
	fixtures(t, func(t *testing.T, fx *fixture) {
		b := fx.bundle1(t)
		b[1], b[2] = b[2], b[1]
		fx.putBundle1(t, b)
		fx.expect(t, ErrEntriesReordered, "entries 257 and 258 are swapped")
	})
}

// TestVerifyFork replaces the whole log by another one of the same size,
// signed with the same key: only the saved checkpoint tells.
func TestVerifyFork(t *testing.T) {
	fixtures(t, func(t *testing.T, fx *fixture) {
		other := buildLog(t, newDisk(t), fx.k, func(i int) []byte { return fmt.Appendf(nil, `{"event":"forged","n":%d}`, i) })
		for _, tile := range tlog.NewTiles(tileHeight, 0, 600) {
			copyFile(t, fx, other, torchwood.TilePath(tile))
			if tile.L == 0 {
				tile.L = -1
				copyFile(t, fx, other, torchwood.TilePath(tile))
			}
		}
		copyFile(t, fx, other, "checkpoints/300")
		copyFile(t, fx, other, "checkpoint")
		// Without the saved checkpoint and witnesses, the fork verifies.
		if _, err := Verify(t.Context(), fx.src, VerifyOptions{Log: fx.k.verifier}); err != nil {
			t.Fatalf("the fork alone: %v", err)
		}
		fx.expect(t, ErrFork, "saved checkpoint of size 600")
		// Witnesses refuse it too.
		opts := fx.opts
		opts.Saved = nil
		if _, err := Verify(t.Context(), fx.src, opts); !errors.Is(err, ErrInvalidCosignature) && !errors.Is(err, ErrMissingCosignature) {
			t.Errorf("the fork with witnesses: %v", err)
		}
	})
}

func copyFile(t *testing.T, fx *fixture, from *Log, path string) {
	data, err := from.ReadFile(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	fx.put(path, data)
}

// TestVerifyHistoryFork replaces an earlier checkpoint by one of a forked
// history of that size.
func TestVerifyHistoryFork(t *testing.T) {
	fixtures(t, func(t *testing.T, fx *fixture) {
		other := buildLog(t, newDisk(t), fx.k, func(i int) []byte { return fmt.Appendf(nil, `{"event":"forged","n":%d}`, i) })
		copyFile(t, fx, other, "checkpoints/300")
		fx.expect(t, ErrFork, "checkpoints/300")
	})
}

func TestVerifyOtherKey(t *testing.T) {
	fixtures(t, func(t *testing.T, fx *fixture) {
		other := newKey(t, testOrigin)
		text, _, _ := strings.Cut(string(fx.get("checkpoint")), "\n\n")
		signed, err := note.Sign(&note.Note{Text: text + "\n"}, other.signer)
		if err != nil {
			t.Fatal(err)
		}
		fx.put("checkpoint", signed)
		fx.expect(t, ErrLogSignature, keyName(fx.k.verifier), keyName(other.verifier))
	})
}

func TestVerifyReplayed(t *testing.T) {
	fixtures(t, func(t *testing.T, fx *fixture) {
		fx.put("checkpoint", fx.get("checkpoints/300"))
		fx.expect(t, ErrRollback, "size 300", "size 600")
	})
}

func TestVerifyMissingCosignature(t *testing.T) {
	fixtures(t, func(t *testing.T, fx *fixture) {
		fx.setCosignature(fx.w2.Name(), nil)
		fx.expect(t, ErrMissingCosignature, keyName(fx.w2.Verifier()))
	})
}

func TestVerifyForgedCosignature(t *testing.T) {
	fixtures(t, func(t *testing.T, fx *fixture) {
		// w2's cosignature of another checkpoint, and bytes made up.
		old := cosign(t, fx.get("checkpoints/300"), fx.w2)
		fx.setCosignature(fx.w2.Name(), old)
		fx.expect(t, ErrInvalidCosignature, keyName(fx.w2.Verifier()))

		_, b64, _ := strings.Cut(strings.TrimSuffix(string(old), "\n"), fx.w2.Name()+" ")
		sig, err := base64.StdEncoding.DecodeString(b64)
		if err != nil {
			t.Fatal(err)
		}
		rand.Read(sig[4:]) // the key hash stays w2's
		fx.setCosignature(fx.w2.Name(), fmt.Appendf(nil, "— %s %s\n", fx.w2.Name(), base64.StdEncoding.EncodeToString(sig)))
		fx.expect(t, ErrInvalidCosignature, keyName(fx.w2.Verifier()))
	})
}
