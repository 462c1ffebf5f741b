package devenv

import (
	"maps"
	"path/filepath"
	"reflect"
	"slices"
	"testing"
	"time"

	"evx/api"
	"evx/config"
)

// TestWriteFilesAgreements checks that the gateway configurations dev-env
// writes load, warn of nothing, and hold the agreements and recipients'
// purposes the set-up's parts have, so that gateways run from the files
// decide as gateways built from parts do.
func TestWriteFilesAgreements(t *testing.T) {
	w, err := New("DE", "FR", "NL")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := w.WriteFiles(dir, nil); err != nil {
		t.Fatal(err)
	}
	for _, c := range w.Countries {
		g, err := config.Load(filepath.Join(dir, c.ID, "gateway.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		if ws := g.Warnings(time.Now()); len(ws) != 0 {
			t.Errorf("%s: warnings %q", c.ID, ws)
		}
		parts := w.GatewayParts(c.ID, nil)
		got := g.AgreementList()
		if len(got) != len(parts.Agreements) || len(got) != 2 {
			t.Fatalf("%s: %d agreements, parts have %d", c.ID, len(got), len(parts.Agreements))
		}
		for i, a := range parts.Agreements {
			if !reflect.DeepEqual(got[i], a) {
				t.Errorf("%s: agreement from the file\n%+v\nparts\n%+v", c.ID, got[i], a)
			}
			if !slices.Equal(slices.Sorted(maps.Keys(a.MaxRetention)), slices.Sorted(slices.Values(DevPurposes))) {
				t.Errorf("%s: caps %v", c.ID, a.MaxRetention)
			}
		}
		for _, u := range c.Users {
			cu, ok := g.User(u.Unit)
			if !ok || !slices.Equal(cu.Purposes, u.Purposes) {
				t.Errorf("%s: purposes %v in the file, %v in parts", u.Unit, cu.Purposes, u.Purposes)
			}
			if (u.Role == api.RoleRecipient) != (len(cu.Purposes) > 0) {
				t.Errorf("%s (%s) has purposes %v", u.Unit, u.Role, cu.Purposes)
			}
		}
	}
}
