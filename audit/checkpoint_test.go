package audit

import (
	"errors"
	"strings"
	"testing"

	"evx/storage"
)

func TestAddCosignature(t *testing.T) {
	k := newKey(t, testOrigin)
	l := openLog(t, newDisk(t), config(k))
	appendAll(t, l, entries(0, 10), 2)
	if err := l.integrateAll(t.Context()); err != nil {
		t.Fatal(err)
	}
	signed, c, _ := l.Checkpoint(t.Context())
	w := newWitness(t, "evx.witness/FR")
	cosig := cosign(t, signed, w)
	if err := l.AddCosignature(t.Context(), c.N, cosig); err != nil {
		t.Fatal(err)
	}
	// The same again is fine; another one by the same witness is not.
	if err := l.AddCosignature(t.Context(), c.N, cosig); err != nil {
		t.Errorf("the same cosignature again: %v", err)
	}
	again := cosign(t, signed, w)
	if string(again) == string(cosig) {
		again = cosign(t, signed, newWitness(t, "evx.witness/FR"))
	}
	if err := l.AddCosignature(t.Context(), c.N, again); !errors.Is(err, storage.ErrExist) {
		t.Errorf("a second cosignature by one witness: %v", err)
	}
	got, err := l.ReadFile(t.Context(), "checkpoint")
	if err != nil || string(got) != string(signed)+string(cosig) {
		t.Errorf("cosigned checkpoint:\n%s, %v", got, err)
	}
	for name, bad := range map[string]string{
		"empty":      "",
		"no newline": strings.TrimSuffix(string(cosig), "\n"),
		"two lines":  string(cosig) + string(cosig),
		"short":      "— evx.witness/FR AAAA\n",
		"bad name":   strings.Replace(string(cosig), "evx.witness/FR", "evx.witness/../FR", 1),
		"no dash":    strings.TrimPrefix(string(cosig), "— "),
	} {
		if err := l.AddCosignature(t.Context(), c.N, []byte(bad)); err == nil {
			t.Errorf("%s: AddCosignature succeeded", name)
		}
	}
	// Only checkpoints that were published are cosigned.
	if err := l.AddCosignature(t.Context(), c.N-1, cosign(t, signed, newWitness(t, "evx.witness/NL"))); err == nil {
		t.Error("cosignature of a checkpoint never published was stored")
	}
}
