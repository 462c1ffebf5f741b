package audit

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/note"
)

func TestProof(t *testing.T) {
	fx := newFixture(t, false)
	l := fx.src.(*Log)
	_, c, _ := l.Checkpoint(t.Context())
	all := readAll(t, l)
	for _, i := range []int64{0, 255, 256, 599} {
		e := all[i]
		p, err := Prove(t.Context(), l, i)
		if err != nil {
			t.Fatal(err)
		}
		hashes, err := l.InclusionProof(t.Context(), i, c.N)
		if err != nil || !reflect.DeepEqual(hashes, p.Hashes) {
			t.Fatalf("Prove and InclusionProof disagree: %v", err)
		}
		p.Extra = []byte("bundle 0af3")
		text := FormatProof(p)
		if !strings.HasPrefix(string(text), "c2sp.org/tlog-proof@v1\nextra YnVuZGxlIDBhZjM=\nindex ") {
			t.Fatalf("proof:\n%s", text)
		}
		q, err := ParseProof(text)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(p, q) {
			t.Fatalf("ParseProof(FormatProof(p)) = %+v, want %+v", q, p)
		}
		tree, err := VerifyProof(q, e, fx.opts)
		if err != nil || tree != c.Tree {
			t.Fatalf("VerifyProof: %v, %v", tree, err)
		}
		if _, err := VerifyProof(q, all[i^1], fx.opts); !errors.Is(err, ErrEntryChanged) {
			t.Errorf("VerifyProof of another entry: %v", err)
		}
		other := newKey(t, testOrigin)
		if _, err := VerifyProof(q, e, VerifyOptions{Log: other.verifier}); !errors.Is(err, ErrLogSignature) {
			t.Errorf("VerifyProof with another log key: %v", err)
		}
		opts := fx.opts
		opts.Witnesses = append(opts.Witnesses, newWitness(t, "evx.witness/PL").Verifier())
		if _, err := VerifyProof(q, e, opts); !errors.Is(err, ErrMissingCosignature) {
			t.Errorf("VerifyProof with a witness more: %v", err)
		}
	}
	if _, err := Prove(t.Context(), l, 600); err == nil {
		t.Error("proof of an entry beyond the tree")
	}
	// A proof from an export is the same.
	dir := filepath.Join(t.TempDir(), "export")
	if _, err := Export(t.Context(), l, dir, ExportOptions{LogKey: fx.k.vkey}); err != nil {
		t.Fatal(err)
	}
	p1, err1 := Prove(t.Context(), l, 42)
	p2, err2 := Prove(t.Context(), Dir(dir), 42)
	if err1 != nil || err2 != nil || !reflect.DeepEqual(p1, p2) {
		t.Errorf("proofs from the log and the export differ: %v, %v", err1, err2)
	}
}

func TestParseProofRefuses(t *testing.T) {
	h := "gSKyXoYZUgZ6jduWYrkDOARinOMGJveXjgMkBTcdPlQ=\n"
	cp := "\nexample.com/log\n1\ngSKyXoYZUgZ6jduWYrkDOARinOMGJveXjgMkBTcdPlQ=\n\n— example.com/log AAAA\n"
	for _, s := range []string{
		"",
		"c2sp.org/tlog-proof@v2\nindex 1\n" + h + cp,
		"c2sp.org/tlog-proof@v1\n" + h + cp,
		"c2sp.org/tlog-proof@v1\nindex 01\n" + h + cp,
		"c2sp.org/tlog-proof@v1\nindex -1\n" + h + cp,
		"c2sp.org/tlog-proof@v1\nindex 1\nextra AAAA\n" + h + cp,
		"c2sp.org/tlog-proof@v1\nextra !!\nindex 1\n" + h + cp,
		"c2sp.org/tlog-proof@v1\nindex 1\nAAAA\n" + cp,
		"c2sp.org/tlog-proof@v1\nindex 1\n" + h,
		"c2sp.org/tlog-proof@v1\nindex 1\n" + strings.Repeat(h, 64) + cp,
	} {
		if _, err := ParseProof([]byte(s)); err == nil {
			t.Errorf("ParseProof(%q) succeeded", s)
		}
	}
	p, err := ParseProof([]byte("c2sp.org/tlog-proof@v1\nindex 0\n" + cp))
	if err != nil || p.Index != 0 || len(p.Hashes) != 0 {
		t.Errorf("proof without hashes: %+v, %v", p, err)
	}
}

func TestExport(t *testing.T) {
	fx := newFixture(t, true)
	dir := string(fx.src.(Dir))
	data, err := os.ReadFile(filepath.Join(dir, keysFile))
	if err != nil {
		t.Fatal(err)
	}
	keys, err := ParseKeys(data)
	if err != nil {
		t.Fatal(err)
	}
	opts, err := keys.VerifyOptions()
	if err != nil {
		t.Fatal(err)
	}
	if keys.Log != fx.k.vkey || len(opts.Witnesses) != 2 || opts.Witnesses[1].Name() != fx.w2.Name() {
		t.Fatalf("keys %+v", keys)
	}
	// The keys file is all an auditor needs besides the export.
	verifyLog(t, fx.src, opts)

	// Only files of the layout are read, and only inside the directory.
	for _, path := range []string{"../keys", "tile/../keys", "tile/0/000.p/0", "entries", "/etc/passwd", "checkpoints/01"} {
		if _, err := Dir(dir).ReadFile(t.Context(), path); err == nil {
			t.Errorf("ReadFile(%q) succeeded", path)
		}
	}
	if err := os.Symlink("/etc/passwd", filepath.Join(dir, "checkpoints", "7")); err != nil {
		t.Fatal(err)
	}
	if _, err := Dir(dir).ReadFile(t.Context(), "checkpoints/7"); err == nil {
		t.Error("ReadFile followed a symbolic link out of the directory")
	}

	// Export writes into an empty or new directory only.
	if _, err := Export(t.Context(), fx.src, dir, ExportOptions{LogKey: fx.k.vkey}); err == nil {
		t.Error("Export into a directory that is not empty succeeded")
	}
	if _, err := Export(t.Context(), fx.src, t.TempDir(), ExportOptions{LogKey: "nonsense"}); err == nil {
		t.Error("Export with an invalid key succeeded")
	}
	for _, bad := range []string{"", "log " + fx.k.vkey + "\nlog " + fx.k.vkey + "\n", "witness " + fx.k.vkey + "\n", "log x\n"} {
		if _, err := ParseKeys([]byte(bad)); err == nil {
			t.Errorf("ParseKeys(%q) succeeded", bad)
		}
	}
	var _ note.Verifier = opts.Log
}
